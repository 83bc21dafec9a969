package gateway

import (
	"encoding/json"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/protocol"
)

// A socket the writer pool finds full goes to a writer goroutine, which
// waits on it under the write timeout; once the client has read it all,
// the pool writes the connection again. The goroutine's write deadline,
// expired by then, must not be left behind: the pool's write would fail on
// it and send every later message through a goroutine again.
func TestWriterPoolHandsAFullSocketToAGoroutineAndTakesItBack(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the writer pool writes only sockets the Linux epoll poller watches")
	}
	testenv.NoLeaks(t)
	const (
		writeTimeout = 300 * time.Millisecond
		frames       = 16 // 16 × 16 KiB: more than the small socket buffers hold
	)
	h := startGW(t, Config{WriteTimeout: writeTimeout, Heartbeat: time.Hour, PingInterval: time.Hour}, nil)
	ws, c := h.dialSmallBuffers(16 << 10)
	gwHello(t, ws, "alice")
	c.mu.Lock()
	pooled := c.pooledLocked()
	c.mu.Unlock()
	if !pooled {
		t.Fatal("a plain socket the poller watches is not written by the writer pool")
	}
	sink := h.hub.sink(t)
	data := json.RawMessage(`"` + strings.Repeat("z", 16<<10) + `"`)
	for seq := uint64(1); seq <= frames; seq++ {
		if !sink.Send(seq, protocol.AppendMessage(nil, seq, "m", 0, data)) {
			t.Fatalf("Send %d failed", seq)
		}
	}
	for seq := uint64(1); seq <= frames; seq++ {
		if f := gwMustRead(t, ws, protocol.TypeMessage); f.Seq != seq {
			t.Fatalf("got message %d, want %d", f.Seq, seq)
		}
	}
	// The goroutine lingers after its messages, then returns; its
	// deadline expires meanwhile.
	waitFor(t, 5*time.Second, "the writer goroutine to return", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.writing
	})
	time.Sleep(writeTimeout)

	sink.Send(frames+1, protocol.AppendMessage(nil, frames+1, "m", 0, json.RawMessage(`1`)))
	if f := gwMustRead(t, ws, protocol.TypeMessage); f.Seq != frames+1 {
		t.Fatalf("got message %d, want %d", f.Seq, frames+1)
	}
	// A writer goroutine that wrote messages lingers, with a wake channel;
	// the pool's turn has none and ends at once.
	for end := time.Now().Add(writerLinger / 2); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		c.mu.Lock()
		goroutine := c.wake != nil
		c.mu.Unlock()
		if goroutine {
			t.Fatal("the message after the backlog went through a writer goroutine, not the pool")
		}
	}
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("gave up after %v waiting for %s", d, what)
		}
	}
}

// The queue array a connection keeps between writes is a small one. A
// backlog drained over several rounds leaves the queue a tail of the
// backlog's array; when that tail has keptQueue slots or fewer, keeping it
// would keep the whole array (SendQueue items at most), and on a connection
// that is never a heartbeat quiet the sweeper never drops it.
func TestDrainedBacklogKeepsNoLargeQueueArray(t *testing.T) {
	g, err := New(DefaultConfig(), gwFakeAuth, newGwFakeHub())
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(g, nil, "")
	frame := make([]byte, writeBatch/4) // four frames a round
	c.mu.Lock()
	defer c.mu.Unlock()
	c.q = make([]item, 0, 64) // a backlog that filled its array
	for seq := uint64(1); seq <= 64; seq++ {
		c.q = append(c.q, item{seq: seq, frame: frame})
	}
	backlog := c.q[:cap(c.q)]
	var r round
	defer r.release()
	for rounds := 0; len(c.q) > 0; rounds++ {
		if rounds > 64 {
			t.Fatal("the queue never drained")
		}
		c.takeLocked(&r)
	}
	if kept := c.q[:cap(c.q)]; cap(kept) > 0 && &kept[cap(kept)-1] == &backlog[cap(backlog)-1] {
		t.Fatalf("the drained queue keeps %d slots of the backlog's array of %d", cap(kept), cap(backlog))
	}
}

// Many connections with small socket buffers, frames of random sizes sent
// in bursts and read with random pauses, heartbeats every 20 ms: the pool
// and the writer goroutines hand connections back and forth, and still
// every connection gets its frames once each and in order, every traced
// frame is told exactly once that it was written, and every queue count
// returns to zero.
func TestWritersKeepOrderAndAccountsUnderRandomLoad(t *testing.T) {
	testenv.NoLeaks(t)
	h := startGW(t, Config{WriteTimeout: 3 * time.Second, Heartbeat: 20 * time.Millisecond, PingInterval: 5 * time.Second, SendQueue: 100000}, nil)
	const conns = 12
	const msgs = 200
	type cl struct {
		ws   *websocket.Conn
		c    *conn
		sink Sink
	}
	var cls []cl
	for i := 0; i < conns; i++ {
		ws, c := h.dialSmallBuffers(8 << 10)
		gwHello(t, ws, "u")
		cls = append(cls, cl{ws, c, h.hub.sink(t)})
	}
	var notified, sent atomic.Int64
	var dup atomic.Int64
	var wg sync.WaitGroup
	for i, x := range cls {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(i)))
			n := x.sink.(Notifier)
			for seq := uint64(1); seq <= msgs; seq++ {
				size := r.Intn(3000)
				if r.Intn(20) == 0 {
					size = 30000
				}
				data := json.RawMessage(`"` + strings.Repeat("z", size) + `"`)
				var once atomic.Bool
				sent.Add(1)
				if !n.SendThen(seq, protocol.AppendMessage(nil, seq, "m", 0, data), func(err error) {
					if once.Swap(true) {
						dup.Add(1)
					}
					if err != nil {
						t.Errorf("conn %d seq %d: %v", i, seq, err)
					}
					notified.Add(1)
				}) {
					t.Errorf("conn %d: Send %d refused", i, seq)
				}
				if r.Intn(10) == 0 {
					time.Sleep(time.Duration(r.Intn(3)) * time.Millisecond)
				}
			}
		}()
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(i) + 100))
			want := uint64(1)
			x.ws.SetPingHandler(nil)
			for want <= msgs {
				x.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := x.ws.ReadMessage()
				if err != nil {
					t.Errorf("conn %d read: %v (want %d)", i, err, want)
					return
				}
				var f gwServerFrame
				if err := json.Unmarshal(b, &f); err != nil {
					t.Errorf("bad json %q", b[:min(len(b), 80)])
					return
				}
				if f.Type == protocol.TypeMessage {
					if f.Seq != want {
						t.Errorf("conn %d got %d want %d", i, f.Seq, want)
						return
					}
					want++
				}
				if r.Intn(50) == 0 {
					time.Sleep(time.Duration(r.Intn(20)) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 5*time.Second, "notifications", func() bool { return notified.Load() == sent.Load() })
	if dup.Load() != 0 {
		t.Errorf("%d duplicate notifications", dup.Load())
	}
	for _, x := range cls {
		waitFor(t, 5*time.Second, "pending 0", func() bool {
			x.c.mu.Lock()
			defer x.c.mu.Unlock()
			return x.c.pending == 0
		})
	}
}
