package transport

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// gwCountingHub welcomes every hello and counts hellos and acks.
type gwCountingHub struct{ hellos, acks atomic.Int64 }

func (h *gwCountingHub) Hello(_ context.Context, sink Sink, user string, _ *Resume) error {
	sink.Send(0, EncodeWelcome(Welcome{Session: "s-" + user, Node: "n1", HeartbeatMS: 60_000}))
	h.hellos.Add(1)
	return nil
}
func (h *gwCountingHub) Ack(Sink, uint64) { h.acks.Add(1) }
func (h *gwCountingHub) Gone(Sink)        {}

// gwRawFrame encodes a client text frame (masked with a zero key, so the
// payload goes as is).
func gwRawFrame(payload string) []byte {
	if len(payload) > 125 {
		panic("gwRawFrame: payload too long")
	}
	return append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// gwRawDial opens a WebSocket with a bare net.Conn and writes frames, so the
// client side of the benchmark holds no buffers or goroutines of its own.
func gwRawDial(addr string, frames ...[]byte) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	req := "GET /v1/connect HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	// The server sends nothing after the 101 until the hello, so this
	// reader cannot swallow WebSocket bytes.
	resp, err := http.ReadResponse(bufio.NewReaderSize(nc, 512), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("upgrade: %v %v", resp, err)
	}
	for _, f := range frames {
		if _, err := nc.Write(f); err != nil {
			nc.Close()
			return nil, err
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

// BenchmarkIdleConnMemory measures what an idle, welcomed client connection
// costs the gateway between heartbeats: heap and stack bytes and goroutines
// per connection, after a GC. The clients are bare sockets (no goroutines,
// no buffers) that never read, so nearly all of the difference is the
// server's. "active" clients also sent an ack and a ping after the hello.
func BenchmarkIdleConnMemory(b *testing.B) {
	for _, active := range []bool{false, true} {
		name := "hello"
		if active {
			name = "hello+ack+ping"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				gwMeasureIdle(b, 2000, active)
			}
		})
	}
}

func gwMeasureIdle(b *testing.B, n int, active bool) {
	hub := &gwCountingHub{}
	cfg := GatewayConfig{
		Heartbeat:    time.Minute, // the steady state between ticks
		PingInterval: time.Minute,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	g := NewGateway(cfg, gwFakeAuth, hub)
	srv := httptest.NewServer(g)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := range n {
		frames := [][]byte{gwRawFrame(fmt.Sprintf(`{"type":"hello","token":"good-u%d"}`, i))}
		if active {
			frames = append(frames, gwRawFrame(`{"type":"ack","seq":1}`), gwRawFrame(`{"type":"ping","id":7}`))
		}
		nc, err := gwRawDial(addr, frames...)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, nc)
	}
	wantAcks := int64(0)
	if active {
		wantAcks = int64(n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for hub.hellos.Load() < int64(n) || hub.acks.Load() < wantAcks {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d welcomed, %d acks", hub.hellos.Load(), n, hub.acks.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // welcomes and pongs written, writers gone
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()

	heap := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(n)
	stack := float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n)
	b.ReportMetric(heap, "heap-B/conn")
	b.ReportMetric(stack, "stack-B/conn")
	b.ReportMetric(heap+stack, "B/conn")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/conn")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		b.Errorf("Shutdown: %v", err)
	}
}
