package peer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/testenv"
)

var peerTestLog = slog.New(slog.DiscardHandler)

func peerTestDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// peerCountingListener counts accepted connections.
type peerCountingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *peerCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type peerServer struct {
	*Links
	addr   string
	ln     *peerCountingListener
	served chan error
}

// filled fills cfg's zero fields from DefaultConfig, so that a test names
// only what it is about.
func filled(cfg Config) Config {
	d := DefaultConfig()
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = d.CallTimeout
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = d.PingInterval
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = d.MaxInFlight
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = d.MaxFrame
	}
	if cfg.Logger == nil {
		cfg.Logger = peerTestLog
	}
	return cfg
}

// mustNew is New for a config that must be valid.
func mustNew(tb testing.TB, cfg Config) *Links {
	tb.Helper()
	p, err := New(filled(cfg))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// peerStartServer serves a Links on addr ("127.0.0.1:0" for any port) until the
// test ends. setup registers handlers before Serve.
func peerStartServer(t *testing.T, addr string, cfg Config, setup func(*Links)) *peerServer {
	t.Helper()
	if cfg.NodeID == "" {
		cfg.NodeID = "server"
	}
	if cfg.Logger == nil {
		cfg.Logger = peerTestLog
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := mustNew(t, cfg)
	if setup != nil {
		setup(p)
	}
	s := &peerServer{Links: p, addr: ln.Addr().String(), ln: &peerCountingListener{Listener: ln}, served: make(chan error, 1)}
	go func() { s.served <- p.Serve(s.ln) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop closes the server and checks Serve returned nil; safe to call twice.
func (s *peerServer) stop(t *testing.T) {
	t.Helper()
	s.Close()
	if err, ok := <-s.served; ok {
		if err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
		close(s.served)
	}
}

func peerStartClient(t *testing.T, cfg Config) *Links {
	t.Helper()
	if cfg.NodeID == "" {
		cfg.NodeID = "client"
	}
	if cfg.Dial == nil {
		cfg.Dial = peerTestDial
	}
	p := mustNew(t, cfg)
	t.Cleanup(func() { p.Close() })
	return p
}

// peerTestLink returns the current outgoing link to addr.
func peerTestLink(p *Links, addr string) *link {
	p.mu.Lock()
	pc := p.clients[addr]
	p.mu.Unlock()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.link
}

func peerEcho(_ context.Context, from string, payload []byte) ([]byte, error) {
	return append([]byte(from+":"), payload...), nil
}

func TestPeerCallRoundTrip(t *testing.T) {
	testenv.NoLeaks(t)
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) { p.Handle(1, peerEcho, false) })
	cli := peerStartClient(t, Config{NodeID: "n7"})
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"small", []byte("hello")},
		{"larger than io buffers", bytes.Repeat([]byte("x"), 3*ioBuf+17)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cli.Call(context.Background(), srv.addr, 1, tt.payload)
			if err != nil {
				t.Fatal(err)
			}
			if want := append([]byte("n7:"), tt.payload...); !bytes.Equal(got, want) {
				t.Errorf("got %d bytes %.20q…, want %d bytes %.20q…", len(got), got, len(want), want)
			}
		})
	}
}

func TestPeerManyPipelinedCallsShareOneLink(t *testing.T) {
	testenv.NoLeaks(t)
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(2, func(_ context.Context, _ string, b []byte) ([]byte, error) {
			return binary.BigEndian.AppendUint64(nil, 2*binary.BigEndian.Uint64(b)), nil
		}, false)
	})
	cli := peerStartClient(t, Config{CallTimeout: 20 * time.Second})
	const n = 10000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range uint64(n) {
		wg.Go(func() {
			got, err := cli.Call(context.Background(), srv.addr, 2, binary.BigEndian.AppendUint64(nil, i))
			if err != nil {
				errs <- err
				return
			}
			if len(got) != 8 || binary.BigEndian.Uint64(got) != 2*i {
				errs <- fmt.Errorf("call %d: got %x, want %d", i, got, 2*i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := srv.ln.n.Load(); got != 1 {
		t.Errorf("server accepted %d links, want 1 shared link", got)
	}
}

func TestPeerSendDeliversInOrder(t *testing.T) {
	testenv.NoLeaks(t)
	const n = 5000
	var mu sync.Mutex
	var got []uint32
	done := make(chan struct{})
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(3, func(_ context.Context, _ string, b []byte) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, binary.BigEndian.Uint32(b))
			if len(got) == n {
				close(done)
			}
			return nil, nil
		}, true)
	})
	cli := peerStartClient(t, Config{})
	buf := make([]byte, 4)
	for i := uint32(1); i <= n; i++ {
		// Reusing buf checks that Send does not retain the caller's slice.
		binary.BigEndian.PutUint32(buf, i)
		if err := cli.Send(context.Background(), srv.addr, 3, buf); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		mu.Lock()
		t.Fatalf("received %d of %d one-way frames", len(got), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != uint32(i+1) {
			t.Fatalf("frame %d carried %d, want %d (out of order)", i, v, i+1)
		}
	}
}

// TestPeerDelayHoldsSends: with Config.Delay, what a node sends leaves
// at least the delay late (a call's answer comes back no sooner), and
// one-way frames keep their order; with no delay the same call is fast.
// Only lower bounds and order are asserted: a slow machine only adds.
func TestPeerDelayHoldsSends(t *testing.T) {
	testenv.NoLeaks(t)
	var delay atomic.Int64
	var mu sync.Mutex
	var got []byte
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(1, peerEcho, false)
		p.Handle(3, func(_ context.Context, _ string, b []byte) ([]byte, error) {
			mu.Lock()
			got = append(got, b...)
			mu.Unlock()
			return nil, nil
		}, true)
	})
	cli := peerStartClient(t, Config{Delay: func() time.Duration { return time.Duration(delay.Load()) }})
	if _, err := cli.Call(context.Background(), srv.addr, 1, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	delay.Store(int64(150 * time.Millisecond))
	for i := range 3 {
		start := time.Now()
		if _, err := cli.Call(context.Background(), srv.addr, 1, []byte("slow")); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("call %d took %v with a 150ms delay", i, d)
		}
	}
	for _, b := range []byte("abcdef") {
		if err := cli.Send(context.Background(), srv.addr, 3, []byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Call(context.Background(), srv.addr, 1, nil); err != nil { // after the frames, on the same link
		t.Fatal(err)
	}
	mu.Lock()
	order := string(got)
	mu.Unlock()
	if order != "abcdef" {
		t.Fatalf("one-way frames arrived as %q, want abcdef", order)
	}
}

var (
	errPeerTestNotFound = errors.New("not found")
	errPeerTestStale    = errors.New("stale epoch")
)

func TestPeerErrorsKeepTheirIdentity(t *testing.T) {
	testenv.NoLeaks(t)
	table := []error{errPeerTestNotFound, errPeerTestStale}
	handlerErr := map[uint8]error{
		10: fmt.Errorf("user u1: %w", errPeerTestNotFound),
		11: fmt.Errorf("seal: %w", errPeerTestStale),
		12: errors.New("disk on fire"),
	}
	srv := peerStartServer(t, "127.0.0.1:0", Config{Errors: table}, func(p *Links) {
		for m, e := range handlerErr {
			p.Handle(m, func(context.Context, string, []byte) ([]byte, error) { return nil, e }, m%2 == 0)
		}
		p.Handle(13, func(context.Context, string, []byte) ([]byte, error) { panic("boom") }, false)
		p.Handle(14, func(context.Context, string, []byte) ([]byte, error) { panic("inline boom") }, true)
	})
	mapped := peerStartClient(t, Config{Errors: table})
	raw := peerStartClient(t, Config{})

	tests := []struct {
		name     string
		method   uint8
		want     error // nil: matches no sentinel
		wantCode uint16
	}{
		{"not found", 10, errPeerTestNotFound, 1},
		{"stale", 11, errPeerTestStale, 2},
		{"unmapped error", 12, nil, 0},
		{"panic", 13, ErrHandlerPanic, codeHandlerPanic},
		{"inline panic", 14, ErrHandlerPanic, codeHandlerPanic},
		{"unknown method", 99, ErrUnknownMethod, codeUnknownMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mapped.Call(context.Background(), srv.addr, tt.method, nil)
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != tt.wantCode {
				t.Fatalf("err = %#v, want *RemoteError with code %d", err, tt.wantCode)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.want)
			}
			if tt.want == nil && errors.Unwrap(err) != nil {
				t.Errorf("err = %v matches %v, want no sentinel", err, errors.Unwrap(err))
			}
			// Without the table only the link's own errors are known.
			_, err = raw.Call(context.Background(), srv.addr, tt.method, nil)
			link := tt.want == ErrHandlerPanic || tt.want == ErrUnknownMethod
			if got := tt.want != nil && errors.Is(err, tt.want); got != link {
				t.Errorf("without the table: err = %v, errors.Is %v = %v", err, tt.want, got)
			}
		})
	}
	// Errors and panics leave the link usable.
	if got := srv.ln.n.Load(); got != 2 {
		t.Errorf("server accepted %d links, want 2 (one per client)", got)
	}
}

func TestPeerCallFailsPromptlyWhenPeerDies(t *testing.T) {
	testenv.NoLeaks(t)
	started := make(chan struct{})
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(1, func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		}, false)
	})
	// A long timeout: if the failure were only noticed at the deadline, the
	// error would be DeadlineExceeded, not ErrUnavailable.
	cli := peerStartClient(t, Config{CallTimeout: time.Minute})
	res := make(chan error, 1)
	go func() {
		_, err := cli.Call(context.Background(), srv.addr, 1, nil)
		res <- err
	}()
	<-started
	srv.stop(t)
	if err := <-res; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Call = %v, want ErrUnavailable", err)
	}
}

// OnDown hears of a link the other end broke, naming that node, on both
// ends' links; a Links that closes its own links tells nobody.
func TestPeerOnDownNamesTheNodeOfABrokenLink(t *testing.T) {
	testenv.NoLeaks(t)
	srvDown := make(chan string, 4)
	srv := peerStartServer(t, "127.0.0.1:0", Config{OnDown: func(node string) { srvDown <- node }}, func(p *Links) {
		p.Handle(1, peerEcho, false)
	})
	cliDown := make(chan string, 4)
	cli := peerStartClient(t, Config{OnDown: func(node string) { cliDown <- node }})
	if _, err := cli.Call(context.Background(), srv.addr, 1, nil); err != nil {
		t.Fatal(err)
	}
	srv.stop(t) // the server closes its own links: it hears nothing
	select {
	case node := <-cliDown:
		if node != "server" {
			t.Fatalf("OnDown(%q), want the server's node id", node)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnDown not called after the server went away")
	}
	select {
	case node := <-srvDown:
		t.Fatalf("the closing server's OnDown(%q) was called", node)
	default:
	}
}

// peerFakeServer accepts one link, completes the handshake, then reads and
// discards everything without ever writing: a hung peer.
func peerFakeServer(t *testing.T, afterHello func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	conns := make(chan net.Conn, 1)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		conns <- c
		br := bufio.NewReader(c)
		if _, err := readHello(br); err != nil {
			return
		}
		if err := writeHello(c, "fake"); err != nil {
			return
		}
		afterHello(c)
		io.Copy(io.Discard, br)
	})
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-conns:
			c.Close()
		default:
		}
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestPeerHungPeerDetectedByMissingPings(t *testing.T) {
	testenv.NoLeaks(t)
	addr := peerFakeServer(t, func(net.Conn) {})
	cli := peerStartClient(t, Config{PingInterval: 20 * time.Millisecond, CallTimeout: time.Minute})
	_, err := cli.Call(context.Background(), addr, 1, []byte("x"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Call to hung peer = %v, want ErrUnavailable", err)
	}
}

func TestPeerReconnectsAfterServerRestart(t *testing.T) {
	testenv.NoLeaks(t)
	version := func(v string) func(*Links) {
		return func(p *Links) {
			p.Handle(1, func(context.Context, string, []byte) ([]byte, error) { return []byte(v), nil }, false)
		}
	}
	srv1 := peerStartServer(t, "127.0.0.1:0", Config{}, version("v1"))
	cli := peerStartClient(t, Config{CallTimeout: 2 * time.Second})
	if got, err := cli.Call(context.Background(), srv1.addr, 1, nil); err != nil || string(got) != "v1" {
		t.Fatalf("first call = %q, %v", got, err)
	}
	srv1.stop(t)
	if _, err := cli.Call(context.Background(), srv1.addr, 1, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call while server down = %v, want ErrUnavailable", err)
	}

	srv2 := peerStartServer(t, srv1.addr, Config{}, version("v2"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := cli.Call(context.Background(), srv2.addr, 1, nil)
		if err == nil {
			if string(got) != "v2" {
				t.Fatalf("got %q from restarted server, want v2", got)
			}
			break
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("call after restart = %v", err)
		}
		time.Sleep(20 * time.Millisecond) // dial backoff after the failed attempt
	}
}

func TestPeerConcurrentCallersShareOneDial(t *testing.T) {
	testenv.NoLeaks(t)
	var dials atomic.Int64
	cli := peerStartClient(t, Config{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil, errors.New("connection refused")
	}})
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if _, err := cli.Call(context.Background(), "10.0.0.1:1", 1, nil); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Call = %v, want ErrUnavailable", err)
			}
		})
	}
	wg.Wait()
	// One shared dial; a straggler scheduled after the backoff could add one more.
	if got := dials.Load(); got > 2 {
		t.Errorf("%d dials for 100 concurrent callers, want them to share one", got)
	}
}

func TestPeerCanceledCallFreesPendingSlot(t *testing.T) {
	testenv.NoLeaks(t)
	release := make(chan struct{})
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(1, func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return []byte("late"), nil
		}, false)
		p.Handle(2, peerEcho, false)
	})
	cli := peerStartClient(t, Config{})
	if _, err := cli.Call(context.Background(), srv.addr, 2, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.addr, 1, nil)
		res <- err
	}()
	link := peerTestLink(cli, srv.addr)
	for link.pendingLen() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Call = %v, want context.Canceled", err)
	}
	if n := link.pendingLen(); n != 0 {
		t.Errorf("%d pending calls after cancel, want 0", n)
	}
	// The late response is dropped and the link keeps working.
	close(release)
	if _, err := cli.Call(context.Background(), srv.addr, 2, nil); err != nil {
		t.Fatal(err)
	}
}

func TestPeerCloseFailsInFlightCallsAndWaits(t *testing.T) {
	testenv.NoLeaks(t)
	started := make(chan struct{}, 1)
	srv := peerStartServer(t, "127.0.0.1:0", Config{}, func(p *Links) {
		p.Handle(1, func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}, false)
	})
	cli := peerStartClient(t, Config{CallTimeout: time.Minute})
	res := make(chan error, 1)
	go func() {
		_, err := cli.Call(context.Background(), srv.addr, 1, nil)
		res <- err
	}()
	<-started
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Errorf("in-flight Call = %v, want ErrClosed", err)
	}
	if err := cli.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := cli.Call(context.Background(), srv.addr, 1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Call after Close = %v, want ErrClosed", err)
	}
	if err := cli.Send(context.Background(), srv.addr, 1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
	// Closing the server cancels the blocked handler's ctx and waits for it;
	// peerNoLeaks then proves nothing is left running.
	srv.stop(t)
}

func TestPeerMaxInFlightBoundsHandlers(t *testing.T) {
	testenv.NoLeaks(t)
	const limit, calls = 4, 40
	var running, peak atomic.Int64
	gate := make(chan struct{})
	srv := peerStartServer(t, "127.0.0.1:0", Config{MaxInFlight: limit}, func(p *Links) {
		p.Handle(1, func(context.Context, string, []byte) ([]byte, error) {
			n := running.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			<-gate
			running.Add(-1)
			return nil, nil
		}, false)
	})
	cli := peerStartClient(t, Config{CallTimeout: time.Minute})
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			if _, err := cli.Call(context.Background(), srv.addr, 1, nil); err != nil {
				t.Error(err)
			}
		})
	}
	for running.Load() < limit {
		time.Sleep(time.Millisecond)
	}
	// Give the other 36 requests time to reach the server; without the bound
	// they would all start running.
	time.Sleep(100 * time.Millisecond)
	close(gate)
	wg.Wait()
	if got := peak.Load(); got != limit {
		t.Errorf("peak concurrent handlers = %d, want %d", got, limit)
	}
}

func TestPeerFrameSizeLimits(t *testing.T) {
	testenv.NoLeaks(t)
	const maxFrame = 1024
	srv := peerStartServer(t, "127.0.0.1:0", Config{MaxFrame: maxFrame}, func(p *Links) {
		p.Handle(1, peerEcho, false)
		p.Handle(2, func(context.Context, string, []byte) ([]byte, error) { return make([]byte, maxFrame+1), nil }, false)
	})
	cli := peerStartClient(t, Config{MaxFrame: maxFrame})

	if _, err := cli.Call(context.Background(), srv.addr, 1, make([]byte, maxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized Call = %v, want ErrFrameTooLarge", err)
	}
	if err := cli.Send(context.Background(), srv.addr, 1, make([]byte, maxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized Send = %v, want ErrFrameTooLarge", err)
	}
	var re *RemoteError
	if _, err := cli.Call(context.Background(), srv.addr, 2, nil); !errors.As(err, &re) {
		t.Errorf("oversized response = %v, want a remote error", err)
	}
	if _, err := cli.Call(context.Background(), srv.addr, 1, make([]byte, maxFrame-10)); err != nil {
		t.Errorf("call within the limit: %v", err)
	}
	if got := srv.ln.n.Load(); got != 1 {
		t.Errorf("%d links, want 1: size errors must not kill the link", got)
	}
}

// peerRawLink opens a raw connection to a Links and does the dialer's handshake.
func peerRawLink(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if err := writeHello(c, "raw"); err != nil {
		t.Fatal(err)
	}
	if id, err := readHello(br); err != nil || id != "server" {
		t.Fatalf("hello = %q, %v", id, err)
	}
	return c, br
}

func TestPeerProtocolViolationsCloseTheLink(t *testing.T) {
	testenv.NoLeaks(t)
	srv := peerStartServer(t, "127.0.0.1:0", Config{MaxFrame: 1024}, func(p *Links) { p.Handle(1, peerEcho, false) })
	frame := func(n uint32, kind byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		b = append(b, kind, 1)
		return binary.BigEndian.AppendUint64(b, 7)
	}
	tests := []struct {
		name      string
		handshake bool
		send      []byte
	}{
		{"bad magic", false, []byte("HTTP/1.1 GET /\r\n")},
		{"bad version", false, append(append([]byte{}, magic[:]...), 9, 0, 1, 'x')},
		{"empty node id", false, append(append([]byte{}, magic[:]...), version, 0, 0)},
		{"length above MaxFrame", true, frame(1<<20, kindOneway)},
		{"length below header", true, frame(3, kindOneway)},
		{"unknown kind", true, frame(fixedLen, 42)},
		{"short request", true, append(frame(fixedLen+2, kindRequest), 0, 0)},
		{"trace context longer than the body", true, append(frame(fixedLen+3, kindRequestTraced), 30, 0, 0)},
		{"traced request without timeout", true, append(append(frame(fixedLen+26, kindRequestTraced), 25), make([]byte, 25)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c net.Conn
			var r io.Reader
			if tt.handshake {
				c, r = peerRawLink(t, srv.addr)
			} else {
				var err error
				if c, err = net.Dial("tcp", srv.addr); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r = c
			}
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			// The server may send pings before it notices; it must then close
			// (a reset also proves that). A timeout means it kept the link.
			if _, err := io.Copy(io.Discard, r); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("want the server to close the link, got %v", err)
			}
		})
	}
	// A well-behaved raw client still gets answers: the frame format is as documented.
	c, br := peerRawLink(t, srv.addr)
	bp := encodeRequest(1, 42, 1000, trace.SpanContext{}, []byte("hi"))
	if _, err := c.Write(*bp); err != nil {
		t.Fatal(err)
	}
	var hb [headerLen]byte
	for {
		h, err := readHeader(br, &hb, 1<<10)
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, h.bodyLen)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatal(err)
		}
		if h.kind != kindResponse {
			continue
		}
		payload, isErr, _, _, err := decodeResponse(body)
		if h.id != 42 || isErr || err != nil || string(payload) != "raw:hi" {
			t.Fatalf("response id=%d payload=%q isErr=%v err=%v", h.id, payload, isErr, err)
		}
		break
	}
}

func TestPeerConfigValidation(t *testing.T) {
	testenv.NoLeaks(t)
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		c.NodeID, c.Dial = "a", peerTestDial
		f(&c)
		return c
	}
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no node id", with(func(c *Config) { c.NodeID = "" }), "NodeID"},
		{"negative timeout", with(func(c *Config) { c.CallTimeout = -1 }), "CallTimeout"},
		{"zero ping", with(func(c *Config) { c.PingInterval = 0 }), "PingInterval"},
		{"negative in-flight", with(func(c *Config) { c.MaxInFlight = -1 }), "MaxInFlight"},
		{"huge frame", with(func(c *Config) { c.MaxFrame = 2 << 30 }), "MaxFrame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg)
			if p != nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("New = %v, want ErrConfig naming %s", err, tt.field)
			}
		})
	}
	// A serve-only Links may leave Dial unset; calling then says so.
	p := mustNew(t, Config{NodeID: "a"})
	defer p.Close()
	if _, err := p.Call(context.Background(), "127.0.0.1:1", 1, nil); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "Dial") {
		t.Errorf("Call without Dial = %v, want ErrConfig naming Dial", err)
	}
}

func BenchmarkPeerCall(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := mustNew(b, Config{NodeID: "server"})
	srv.Handle(1, func(_ context.Context, _ string, p []byte) ([]byte, error) { return p, nil }, false)
	go srv.Serve(ln)
	defer srv.Close()
	cli := mustNew(b, Config{NodeID: "client", Dial: peerTestDial})
	defer cli.Close()
	addr := ln.Addr().String()
	payload := make([]byte, 128)
	if _, err := cli.Call(context.Background(), addr, 1, payload); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cli.Call(context.Background(), addr, 1, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
