package client

import (
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// A close that blames the client or the load it makes is followed by a
// backoff, even after a long-lived connection: reconnecting at once would
// only repeat it.
func TestClosesThatBlameTheClientBackOff(t *testing.T) {
	for _, code := range []protocol.CloseCode{
		protocol.CloseProtocolViolation, protocol.CloseUnsupportedData, protocol.CloseInvalidUTF8,
		protocol.CloseTooLarge, protocol.CloseProtocol, protocol.CloseHelloTimeout,
		protocol.CloseRateLimited, protocol.CloseTryAgainLater,
	} {
		c := &Client{log: slog.New(slog.DiscardHandler), events: make(chan Event, 8)}
		out := outcome{welcomed: true, uptime: time.Hour, closeCode: int(code), err: &CloseError{Code: int(code)}}
		if fails := c.afterConnection("ws://n1/v1/connect", out, 0); fails < 1 {
			t.Errorf("close %d (%s): reconnects at once, want a backoff", code, code.Slug())
		}
	}
}
