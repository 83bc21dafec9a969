package gateway

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// A Notifier's written is told once the frame is on the socket (nil),
// and a frame dropped with the queue of a slow consumer is told it never
// will be.
func TestSendThenReportsTheWrite(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{SendQueue: 4}, nil)
	ws := h.dial(nil)
	gwHello(t, ws, "alice")
	sink := h.hub.sink(t)
	n, ok := sink.(Notifier)
	if !ok {
		t.Fatalf("the gateway's sink %T is not a Notifier", sink)
	}
	written := make(chan error, 100_001)
	if !n.SendThen(1, protocol.AppendMessage(nil, 1, "m1", 0, json.RawMessage(`{}`)), func(err error) { written <- err }) {
		t.Fatal("SendThen failed")
	}
	if f := gwMustRead(t, ws, protocol.TypeMessage); f.Seq != 1 {
		t.Fatalf("message seq %d, want 1", f.Seq)
	}
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("written(%v) for a frame the client read", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("written not called after the frame was read")
	}

	// The client stops reading: the queue overflows and what it held is
	// dropped, each traced frame told so.
	data := json.RawMessage(`"` + strings.Repeat("z", 64<<10) + `"`)
	sent := 0
	for seq := uint64(2); seq <= 100_000; seq++ {
		if !n.SendThen(seq, protocol.AppendMessage(nil, seq, "m", 0, data), func(err error) { written <- err }) {
			break
		}
		sent++
	}
	gwExpectClose(t, ws, protocol.CloseSlowConsumer, protocol.CloseSlowConsumer.Slug())
	h.waitIdle()
	notWritten := 0
	for range sent {
		select {
		case err := <-written:
			if err != nil {
				notWritten++
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("written called for %d of %d queued frames", notWritten, sent)
		}
	}
	if notWritten == 0 {
		t.Fatalf("no frame of %d was reported dropped by the overflow", sent)
	}
}
