// Package client is the Go SDK for Switchboard: a WebSocket subscriber that
// reconnects, resumes and de-duplicates (DESIGN.md §3), and a Publisher for
// the HTTP publish API (§4).
//
// A Client delivers each user's messages once and in seq order across node
// failures: it remembers the session id and the last delivered seq, resumes
// with them on any endpoint it knows, drops replayed seqs, and reports a loss
// of continuity as an Event instead of hiding it.
package client
