// Package protocol holds the wire types of Switchboard's public contract
// (DESIGN.md §3–§5), each declared once: the frames clients and nodes
// exchange over WebSocket, the close codes with the error slug each one
// carries, the contract's errors and the HTTP status and close code each
// maps to, and the bodies of the publish and admin HTTP APIs.
//
// The node, the Go SDK, sbctl, sbload and the test harnesses all speak
// through these definitions. The package imports nothing of the module, so
// a client links no server code.
package protocol
