package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// Config.TLS makes wss:// trust a private CA; without it the same server
// is refused, as its CA is not among the system's.
func TestTLSConfigTrustsAPrivateCA(t *testing.T) {
	fs := newFakeTLS(t, func(fc *fakeConn) {
		fc.welcome(protocol.Welcome{Session: "s1", Node: "a", Resumed: true})
		fc.send(1, 2)
		fc.hold()
	})
	if !strings.HasPrefix(fs.url, "wss://") {
		t.Fatalf("fake URL %s", fs.url)
	}

	cfg := testConfig(fs.url)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if c, err := Dial(ctx, cfg); err == nil {
		c.Close()
		t.Fatal("dialed a server of an unknown CA")
	}

	roots := x509.NewCertPool()
	roots.AddCert(fs.srv.Certificate())
	cfg.TLS = &tls.Config{RootCAs: roots}
	c := dial(t, cfg)
	if got := recv(t, c, 2); !reflect.DeepEqual(got, seqs(1, 2)) {
		t.Fatalf("got %v", got)
	}
}
