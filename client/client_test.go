package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard/switchboard/protocol"
)

func testConfig(eps ...string) Config {
	cfg := DefaultConfig()
	cfg.Endpoints = eps
	cfg.Token = StaticToken("tok")
	cfg.BackoffBase = 5 * time.Millisecond
	cfg.BackoffMax = 20 * time.Millisecond
	cfg.DialTimeout = 2 * time.Second
	return cfg
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// recv returns the seqs of the next n messages.
func recv(t *testing.T, c *Client, n int) []uint64 {
	t.Helper()
	var got []uint64
	for len(got) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("Messages closed after %v", got)
			}
			var d struct{ N uint64 }
			if err := json.Unmarshal(m.Data, &d); err != nil || d.N != m.Seq || m.ID != fmt.Sprintf("id-%d", m.Seq) {
				t.Fatalf("message %+v does not match its seq (%v)", m, err)
			}
			got = append(got, m.Seq)
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for messages; got %v of %d", got, n)
		}
	}
	return got
}

// waitEvent returns the next event of the given kind, skipping others.
func waitEvent(t *testing.T, c *Client, kind EventKind) Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-c.Events():
			if e.Kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %v event", kind)
		}
	}
}

func seqs(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func wantResume(t *testing.T, h protocol.ClientFrame, want *protocol.Resume) {
	t.Helper()
	if !reflect.DeepEqual(h.Resume, want) {
		t.Fatalf("hello resume = %+v, want %+v", h.Resume, want)
	}
}

func TestHelloFrame(t *testing.T) {
	tests := []struct {
		name           string
		session        string
		lastSeq        uint64
		offline, fresh bool
		want           *protocol.Resume
	}{
		{"first connect asks for offline messages", "", 0, true, false, &protocol.Resume{Seq: 0}},
		{"first connect without offline resume", "", 0, false, false, nil},
		{"preset seq without session", "", 7, false, false, &protocol.Resume{Seq: 7}},
		{"resume session", "s1", 42, true, false, &protocol.Resume{Session: "s1", Seq: 42}},
		{"after 4011 starts over", "", 0, false, true, &protocol.Resume{Seq: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := helloFrame("T", tt.session, tt.lastSeq, tt.offline, tt.fresh)
			if f.Type != protocol.TypeHello || f.Token != "T" {
				t.Fatalf("frame = %+v", f)
			}
			wantResume(t, f, tt.want)
		})
	}
}

func TestReconnectsToOtherEndpointAndResumesWhenNodeDies(t *testing.T) {
	a := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Node: "a", Resumed: true})
		fc.send(1, 2)
		// Returning drops the TCP connection without a close frame: a crash.
	})
	b := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Node: "b", Resumed: true, Seq: 3})
		fc.send(3)
		fc.hold()
	})
	c := dial(t, testConfig(a.url, b.url))

	wantResume(t, a.nextHello(t), &protocol.Resume{Seq: 0})
	if got := recv(t, c, 3); !reflect.DeepEqual(got, seqs(1, 3)) {
		t.Fatalf("got %v", got)
	}
	wantResume(t, b.nextHello(t), &protocol.Resume{Session: "s1", Seq: 2})
	if n := a.conns.Load(); n != 1 {
		t.Fatalf("first endpoint got %d connections; the retry should go to the other one", n)
	}
	if c.Node() != "b" || c.Session() != "s1" || c.LastSeq() != 3 {
		t.Fatalf("node %q session %q last seq %d", c.Node(), c.Session(), c.LastSeq())
	}
}

func TestReplayedSeqsAreDeliveredOnce(t *testing.T) {
	fs := newFake(t,
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
			fc.send(1, 2, 2, 1, 3)
		},
		func(fc *fakeConn) {
			// A resume from 3 that replays too much.
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, Seq: 5})
			fc.send(2, 3, 4, 5, 6)
			fc.hold()
		})
	c := dial(t, testConfig(fs.url))
	fs.nextHello(t)
	if got := recv(t, c, 6); !reflect.DeepEqual(got, seqs(1, 6)) {
		t.Fatalf("got %v, want 1..6 once each", got)
	}
	wantResume(t, fs.nextHello(t), &protocol.Resume{Session: "s1", Seq: 3})
}

func TestHeartbeatWatchdogReconnectsOnSilence(t *testing.T) {
	fs := newFake(t,
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, HeartbeatMS: 50})
			fc.send(1)
			fc.hold() // silent but open: a hung node
		},
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, Seq: 1, HeartbeatMS: 50})
			fc.heartbeat(10*time.Millisecond, 5*time.Second, 1)
		})
	c := dial(t, testConfig(fs.url))
	fs.nextHello(t)
	recv(t, c, 1)
	ev := waitEvent(t, c, EventDisconnected)
	if !errors.Is(ev.Err, ErrHeartbeatTimeout) {
		t.Fatalf("disconnect error = %v, want ErrHeartbeatTimeout", ev.Err)
	}
	wantResume(t, fs.nextHello(t), &protocol.Resume{Session: "s1", Seq: 1})
}

func TestHeartbeatsKeepConnectionOpen(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, HeartbeatMS: 100})
		// Four watchdog periods (250 ms) of heartbeats, each well inside one.
		fc.heartbeat(20*time.Millisecond, time.Second, 0)
		fc.send(1)
		fc.hold()
	})
	c := dial(t, testConfig(fs.url))
	recv(t, c, 1)
	if n := fs.conns.Load(); n != 1 {
		t.Fatalf("%d connections; heartbeats should have kept the first alive", n)
	}
}

func TestServerPingExtendsReadDeadline(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, HeartbeatMS: 100})
		for end := time.Now().Add(750 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			_ = fc.ws.WriteControl(websocket.PingMessage, []byte("x"), time.Now().Add(time.Second))
		}
		fc.send(1)
		fc.hold()
	})
	c := dial(t, testConfig(fs.url))
	recv(t, c, 1)
	if n := fs.conns.Load(); n != 1 {
		t.Fatalf("%d connections; WebSocket pings should count as liveness", n)
	}
}

func TestLeavingNodeSendsClientElsewhereAtOnce(t *testing.T) {
	tests := []struct {
		name  string
		code  protocol.CloseCode
		offer bool // the error frame names the third server
	}{
		{"draining with endpoints", protocol.CloseMoved, true},
		{"draining without endpoints", protocol.CloseMoved, false},
		{"going away", protocol.CloseGoingAway, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resumeThere := func(fc *fakeConn) {
				fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, Seq: 1})
				fc.hold()
			}
			b, offered := newFake(t, resumeThere), newFake(t, resumeThere)
			a := newFake(t, func(fc *fakeConn) {
				fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
				fc.send(1)
				var eps []string
				if tt.offer {
					eps = []string{offered.url}
				}
				fc.closeWith(tt.code, eps...)
			})
			c := dial(t, testConfig(a.url, b.url))
			recv(t, c, 1)
			ev := waitEvent(t, c, EventDisconnected)
			if ev.Code != int(tt.code) {
				t.Fatalf("disconnect code %d, want %d", ev.Code, tt.code)
			}
			want, other := b, offered
			if tt.offer {
				want, other = offered, b
			}
			wantResume(t, want.nextHello(t), &protocol.Resume{Session: "s1", Seq: 1})
			waitEvent(t, c, EventResumed)
			if a.conns.Load() != 1 || other.conns.Load() != 0 {
				t.Fatalf("connections: leaving %d, other %d", a.conns.Load(), other.conns.Load())
			}
		})
	}
}

func TestWelcomeEndpointsAreUsedForFailover(t *testing.T) {
	b := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.hold()
	})
	a := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, Endpoints: []string{b.url, "not a url"}})
	})
	c := dial(t, testConfig(a.url))
	b.nextHello(t)
	waitEvent(t, c, EventResumed)
}

func TestExpiredSessionReportsContinuityLostAndStartsOver(t *testing.T) {
	fs := newFake(t,
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
			fc.send(1, 2)
			fc.closeWith(protocol.CloseContinuityLost)
		},
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s2", Resumed: true})
			fc.send(1) // a new stream
			fc.hold()
		})
	c := dial(t, testConfig(fs.url))
	fs.nextHello(t)
	recv(t, c, 2)
	ev := waitEvent(t, c, EventContinuityLost)
	if !errors.Is(ev.Err, ErrContinuityLost) || ev.Code != int(protocol.CloseContinuityLost) {
		t.Fatalf("event %+v", ev)
	}
	wantResume(t, fs.nextHello(t), &protocol.Resume{Seq: 0})
	if got := recv(t, c, 1); got[0] != 1 {
		t.Fatalf("got %v after starting over", got)
	}
	if c.Session() != "s2" || c.LastSeq() != 1 {
		t.Fatalf("session %q last seq %d", c.Session(), c.LastSeq())
	}
}

func TestRefusedResumeReportsContinuityLost(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s2", Resumed: false, Seq: 9})
		fc.send(10)
		fc.hold()
	})
	cfg := testConfig(fs.url)
	cfg.Session, cfg.LastSeq = "s1", 5
	c := dial(t, cfg)
	wantResume(t, fs.nextHello(t), &protocol.Resume{Session: "s1", Seq: 5})
	ev := waitEvent(t, c, EventContinuityLost)
	if !errors.Is(ev.Err, ErrContinuityLost) || ev.Seq != 9 {
		t.Fatalf("event %+v", ev)
	}
	if got := recv(t, c, 1); got[0] != 10 {
		t.Fatalf("got %v", got)
	}
}

func TestFirstConnectFromSeqZeroIsNotContinuityLoss(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: false, Seq: 4})
		fc.send(5)
		fc.hold()
	})
	c := dial(t, testConfig(fs.url))
	if got := recv(t, c, 1); got[0] != 5 {
		t.Fatalf("got %v", got)
	}
	for len(c.Events()) > 0 {
		if e := <-c.Events(); e.Kind == EventContinuityLost {
			t.Fatalf("unexpected %+v", e)
		}
	}
}

func TestSequenceGapIsReportedAndDelivered(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.send(1, 3)
		fc.hold()
	})
	c := dial(t, testConfig(fs.url))
	if got := recv(t, c, 2); !reflect.DeepEqual(got, []uint64{1, 3}) {
		t.Fatalf("got %v", got)
	}
	if ev := waitEvent(t, c, EventSequenceAnomaly); !errors.Is(ev.Err, ErrSequenceGap) {
		t.Fatalf("event %+v", ev)
	}
}

func TestUnauthorizedRetriesWithFreshToken(t *testing.T) {
	fs := newFake(t,
		func(fc *fakeConn) { fc.closeWith(protocol.CloseUnauthorized) },
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
			fc.hold()
		})
	var n atomic.Int32
	cfg := testConfig(fs.url)
	cfg.Token = func() (string, error) { return fmt.Sprintf("t%d", n.Add(1)), nil }
	c := dial(t, cfg)
	if h := fs.nextHello(t); h.Token != "t1" {
		t.Fatalf("first token %q", h.Token)
	}
	if h := fs.nextHello(t); h.Token != "t2" {
		t.Fatalf("second token %q, want a fresh one", h.Token)
	}
	if ev := waitEvent(t, c, EventUnauthorized); !errors.Is(ev.Err, ErrUnauthorized) {
		t.Fatalf("event %+v", ev)
	}
}

func TestDialReturnsLastErrorWhenContextEnds(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) { fc.closeWith(protocol.CloseUnauthorized) })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, testConfig(fs.url))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Dial error = %v, want deadline and unauthorized", err)
	}
}

func TestPingMeasuresRoundTrip(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.hold()
	})
	c := dial(t, testConfig(fs.url))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if rtt, err := c.Ping(ctx); err != nil || rtt <= 0 {
			t.Fatalf("Ping = %v, %v", rtt, err)
		}
	}
	_ = c.Close()
	if _, err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v", err)
	}
}

func TestCloseSaysGoodbyeAndClosesChannels(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.send(1)
		fc.hold()
	})
	c := dial(t, testConfig(fs.url))
	recv(t, c, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := <-c.Messages(); ok {
		t.Fatal("Messages still open")
	}
	for range c.Events() {
	}
	select {
	case code := <-fs.closes:
		if code != websocket.CloseNormalClosure {
			t.Fatalf("server saw close %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no close frame")
	}
}

func TestFullBufferAppliesBackpressureWithoutLoss(t *testing.T) {
	fs := newFake(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
		fc.send(seqs(1, 200)...)
		fc.hold()
	})
	cfg := testConfig(fs.url)
	cfg.Buffer = 1
	c := dial(t, cfg)
	if got := recv(t, c, 200); !reflect.DeepEqual(got, seqs(1, 200)) {
		t.Fatalf("got %v", got)
	}
}

func TestMalformedFrameCausesReconnect(t *testing.T) {
	fs := newFake(t,
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true})
			fc.send(1)
			_ = fc.write([]byte(`{"type":"message","seq":`))
			fc.drain()
		},
		func(fc *fakeConn) {
			fc.welcome(protocol.Welcome{Session: "s1", Resumed: true, Seq: 2})
			fc.send(2)
			fc.hold()
		})
	c := dial(t, testConfig(fs.url))
	fs.nextHello(t)
	if got := recv(t, c, 2); !reflect.DeepEqual(got, []uint64{1, 2}) {
		t.Fatalf("got %v", got)
	}
	if ev := waitEvent(t, c, EventDisconnected); !errors.Is(ev.Err, ErrProtocol) {
		t.Fatalf("event %+v", ev)
	}
	wantResume(t, fs.nextHello(t), &protocol.Resume{Session: "s1", Seq: 1})
}
