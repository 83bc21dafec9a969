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

// gwCountingHub welcomes every hello and counts them.
type gwCountingHub struct{ hellos, gone atomic.Int64 }

func (h *gwCountingHub) Hello(_ context.Context, sink Sink, user string, _ *Resume) error {
	sink.Send(0, EncodeWelcome(Welcome{Session: "s-" + user, Node: "n1", HeartbeatMS: 60_000}))
	h.hellos.Add(1)
	return nil
}
func (h *gwCountingHub) Ack(Sink, uint64) {}
func (h *gwCountingHub) Gone(Sink)        { h.gone.Add(1) }

// gwRawDial opens a WebSocket with a bare net.Conn and sends a hello, so the
// client side of the benchmark holds no buffers or goroutines of its own.
func gwRawDial(addr, user string) (net.Conn, error) {
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
	payload := []byte(`{"type":"hello","token":"good-` + user + `"}`)
	frame := []byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0} // FIN text, masked with a zero key
	if _, err := nc.Write(append(frame, payload...)); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

// BenchmarkIdleConnMemory measures what an idle, welcomed client connection
// costs the gateway: heap and stack bytes and goroutines per connection,
// between heartbeats. The client side is bare sockets (no goroutines,
// no buffers), so nearly all of the difference is the server's.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 2000
	for b.Loop() {
		hub := &gwCountingHub{}
		cfg := GatewayConfig{
			Heartbeat:    time.Minute, // measure the steady state between ticks
			PingInterval: time.Minute,
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		g := NewGateway(cfg, gwFakeAuth, hub)
		srv := httptest.NewServer(g)
		addr := strings.TrimPrefix(srv.URL, "http://")

		var before, after runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()

		conns := make([]net.Conn, 0, n)
		for i := range n {
			nc, err := gwRawDial(addr, fmt.Sprint("u", i))
			if err != nil {
				b.Fatalf("dial %d: %v", i, err)
			}
			conns = append(conns, nc)
		}
		deadline := time.Now().Add(30 * time.Second)
		for hub.hellos.Load() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d welcomed", hub.hellos.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // welcomes written, writers idle
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		g1 := runtime.NumGoroutine()

		heap := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / n
		stack := float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
		b.ReportMetric(heap, "heap-B/conn")
		b.ReportMetric(stack, "stack-B/conn")
		b.ReportMetric(heap+stack, "B/conn")
		b.ReportMetric(float64(g1-g0)/n, "goroutines/conn")

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := g.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
		cancel()
		for _, nc := range conns {
			nc.Close()
		}
		srv.Close()
	}
}
