// Package js holds the tests of the browser SDK, switchboard.js, in this
// directory: a real headless Chromium loads the example page and receives
// a channel message from a node. The SDK itself is a plain ES module with
// no build step; its Node tests are in test/ and run from cmd/switchboard.
package js
