package clusterport

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/testenv"
)

// tlsNodes issues certificates for ids from one new CA and opens them.
func tlsNodes(t *testing.T, ids ...string) map[string]*certs.Source {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.Init(dir, certs.InitOptions{Nodes: ids}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*certs.Source{}
	for _, id := range ids {
		s, err := certs.OpenMutual(filepath.Join(dir, certs.CAFile), filepath.Join(dir, certs.CertFile(id)), filepath.Join(dir, certs.KeyFile(id)), nil)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = s
	}
	return out
}

// expectRouted accepts the next connection of kind and checks it carries
// msg: the first one routed must be the legitimate one, sent after the
// refused ones.
func expectRouted(t *testing.T, m *Mux, kind byte, msg string) {
	t.Helper()
	sc, err := m.Listener(kind).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(sc, got); err != nil || string(got) != msg {
		t.Fatalf("kind %q: first routed connection carries %q (%v), want %q", kind, got, err, msg)
	}
}

func TestMutualTLSRoutesNodesOfTheCA(t *testing.T) {
	testenv.NoLeaks(t)
	nodes := tlsNodes(t, "n1", "n2")
	m := muxStart(t, options{tls: nodes["n1"].MutualServerConfig()})
	var d net.Dialer
	for _, kind := range []byte{Raft, Peer} {
		c, err := DialWith(context.Background(), d.DialContext, nodes["n2"].MutualClientConfig(), m.Addr().String(), kind, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hello " + string(kind))); err != nil {
			t.Fatal(err)
		}
		expectRouted(t, m, kind, "hello "+string(kind))
	}
}

// TestMutualTLSRefusesWhatCannotProveItself: plain TCP, TLS without a
// client certificate and TLS with a certificate of another CA are each
// closed before their first byte is read: no Raft or peer listener ever
// gets them, and they read nothing but a TLS alert.
func TestMutualTLSRefusesWhatCannotProveItself(t *testing.T) {
	testenv.NoLeaks(t)
	nodes := tlsNodes(t, "n1", "n2")
	stranger := tlsNodes(t, "n2")["n2"]
	m := muxStart(t, options{tls: nodes["n1"].MutualServerConfig()})
	addr := m.Addr().String()

	for _, kind := range []byte{Raft, Peer} {
		for _, tt := range []struct {
			name string
			tls  *tls.Config // nil: plain TCP
		}{
			{"plain TCP", nil},
			{"TLS without a client certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}},
			{"TLS with a certificate of another CA", stranger.MutualClientConfig()},
		} {
			t.Run(tt.name+" "+string(kind), func(t *testing.T) {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
				conn := raw
				if tt.tls != nil {
					tc := tls.Client(raw, tt.tls)
					// TLS 1.3: the client may finish its side before the
					// server has judged its certificate; then the refusal
					// comes at the first read.
					_ = tc.Handshake()
					conn = tc
				}
				// What a node would send: its kind, then a Raft or peer frame.
				_, _ = conn.Write(append([]byte{kind}, "an RPC the cluster must never read"...))
				got, err := io.ReadAll(conn)
				switch {
				case tt.tls == nil && len(got) > 0 && got[0] != 0x15: // 0x15: a TLS alert record
					t.Fatalf("plain TCP read %q from the cluster port", got)
				case tt.tls != nil && (len(got) > 0 || err == nil):
					t.Fatalf("TLS read %q, err %v; want nothing and a handshake error", got, err)
				}
			})
		}
	}
	// Nothing refused was queued: the first connection each kind's listener
	// gets is the node's own, dialed after them.
	var d net.Dialer
	for _, kind := range []byte{Raft, Peer} {
		c, err := DialWith(context.Background(), d.DialContext, nodes["n2"].MutualClientConfig(), addr, kind, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("node")); err != nil {
			t.Fatal(err)
		}
		expectRouted(t, m, kind, "node")
	}
}

// A node's dial refuses a server whose certificate is of another CA, and
// sends it no byte of its kind.
func TestMutualTLSDialRefusesAServerOfAnotherCA(t *testing.T) {
	testenv.NoLeaks(t)
	nodes := tlsNodes(t, "n1")
	stranger := tlsNodes(t, "n9")["n9"]
	m := muxStart(t, options{tls: stranger.MutualServerConfig()})
	var d net.Dialer
	if c, err := DialWith(context.Background(), d.DialContext, nodes["n1"].MutualClientConfig(), m.Addr().String(), Peer, time.Second); err == nil {
		c.Close()
		t.Fatal("dial to a server of another CA succeeded")
	}
}

// The handshake shares the first byte's deadline: a connection that
// never completes it is closed.
func TestMutualTLSHandshakeHasADeadline(t *testing.T) {
	testenv.NoLeaks(t)
	nodes := tlsNodes(t, "n1")
	m := muxStart(t, options{tls: nodes["n1"].MutualServerConfig(), firstByteTimeout: 100 * time.Millisecond})
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	muxExpectClosed(t, silent)
}
