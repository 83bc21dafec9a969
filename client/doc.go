// Package client is the Go SDK for Switchboard: a WebSocket subscriber that
// reconnects, resumes and de-duplicates (DESIGN.md §3), and a Publisher for
// the HTTP publish API (§4).
//
// A Client delivers each user's messages once and in seq order across node
// failures: it remembers the session id and the last delivered seq, resumes
// with them on any endpoint it knows, drops replayed seqs, and reports a loss
// of continuity as an Event instead of hiding it.
//
// A connection outlives its token: Config.RefreshBefore (default 30 s) the
// token's exp, the client asks Config.Token for a new one and sends it in a
// refresh frame, so the node does not close the connection with 4001; a
// refresh that fails is an EventRefreshFailed, and the connection then ends
// at exp and reconnects with a token from Config.Token. Only a JWT with an
// exp claim is refreshed.
package client
