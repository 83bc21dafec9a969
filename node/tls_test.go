package node_test

// TLS on both sides of a node (DESIGN.md §6, §7): HTTPS and WSS on the
// public listener, mutual TLS on the cluster port, and certificates
// rotated on disk while clients stay connected.

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

func tlsCluster(t *testing.T, n int) *clustertest.Cluster {
	t.Helper()
	return clustertest.Start(t, n, clustertest.Options{ClusterTLS: true, PublicTLS: true, Logger: clustertest.Verbose()})
}

// dialTLS dials the subscriber of user on the cluster's node id with the
// cluster's CA, and reports every welcome's endpoints.
func dialTLS(t *testing.T, c *clustertest.Cluster, id, user string, welcomes chan<- protocol.Welcome) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{c.ConnectURL(id)}
	cfg.Token = client.StaticToken(c.Token(user))
	cfg.TLS = c.ClientTLS()
	cfg.OnWelcome = func(w protocol.Welcome) {
		select {
		case welcomes <- w:
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func nextMessage(t *testing.T, cl *client.Client) client.Message {
	t.Helper()
	select {
	case m := <-cl.Messages():
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return client.Message{}
	}
}

// TestPublicTLSServesHTTPSAndWSS: with --tls-cert-file every URL the node
// gives out is https:// or wss:// (its own, gossip's public URL, welcome
// endpoints); a WSS connection left idle for several heartbeats still
// delivers (the gateway reads TLS connections with a goroutine each:
// epoll cannot read through TLS); plain HTTP gets nothing from the port.
func TestPublicTLSServesHTTPSAndWSS(t *testing.T) {
	c := tlsCluster(t, 3)
	for _, id := range c.IDs() {
		nd := c.Node(id)
		if !strings.HasPrefix(nd.PublicURL(), "https://") || !strings.HasPrefix(nd.AdminURL(), "https://") || !strings.HasPrefix(nd.ConnectURL(), "wss://") {
			t.Errorf("%s URLs: %s %s %s", id, nd.PublicURL(), nd.AdminURL(), nd.ConnectURL())
		}
	}
	ci, err := c.Cluster("n1")
	if err != nil {
		t.Fatal(err)
	}
	if !ci.ClusterTLS {
		t.Error("cluster_tls is false with cluster TLS on")
	}
	for _, m := range ci.Nodes {
		if m.PublicURL != c.URL(m.ID) {
			t.Errorf("%s gossips public URL %q, want %q", m.ID, m.PublicURL, c.URL(m.ID))
		}
	}

	welcomes := make(chan protocol.Welcome, 4)
	cl := dialTLS(t, c, "n2", "tls-alice", welcomes)
	w := <-welcomes
	if len(w.Endpoints) != 2 {
		t.Errorf("welcome endpoints %v, want the 2 other nodes", w.Endpoints)
	}
	for _, e := range w.Endpoints {
		if !strings.HasPrefix(e, "wss://") {
			t.Errorf("welcome endpoint %q is not wss://", e)
		}
	}
	// Idle for 3.5 heartbeats (1 s each): pings, heartbeats and reads go on.
	time.Sleep(3500 * time.Millisecond)
	if st, _, body := c.Publish("n1", "tls-alice", "after idling", "m1"); st != http.StatusOK {
		t.Fatalf("publish: %d %s", st, body)
	}
	if m := nextMessage(t, cl); m.Seq != 1 || string(m.Data) != `"after idling"` {
		t.Fatalf("message %+v", m)
	}

	// Plain HTTP on the TLS port is refused.
	resp, err := http.Get("http://" + c.Config("n1").PublicAddr + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
}

// otherCA issues certificates for ids from a CA that is not the
// cluster's, and returns their directory.
func otherCA(t *testing.T, ids ...string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.Init(dir, certs.InitOptions{Nodes: ids}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func raftRole(ci clustertest.ClusterInfo, id string) string {
	for _, m := range ci.Nodes {
		if m.ID == id {
			return m.Raft
		}
	}
	return ""
}

// TestClusterTLSKeepsOutANodeOfAnotherCA: a node whose cluster
// certificate is of another CA joins gossip (not yet encrypted), but it
// never becomes a voter or a nonvoter and never becomes ready; a node of
// the cluster's CA joining next to it does. And the cluster port of a
// node gives nothing to plain TCP, to TLS without a client certificate or
// to a certificate of another CA.
func TestClusterTLSKeepsOutANodeOfAnotherCA(t *testing.T) {
	c := tlsCluster(t, 3)
	stranger := otherCA(t, "n4")
	c.AddNode("n4", func(cfg *node.Config) {
		cfg.ClusterTLS = node.ClusterTLSConfig{
			CAFile:   filepath.Join(stranger, certs.CAFile),
			CertFile: filepath.Join(stranger, certs.CertFile("n4")),
			KeyFile:  filepath.Join(stranger, certs.KeyFile("n4")),
		}
	})
	c.AddNode("n5", nil)
	c.WaitReady("n5")
	c.Eventually(15*time.Second, "n5 in the Raft configuration and n4 alive in gossip", func() bool {
		ci, err := c.Cluster("n1")
		return err == nil && raftRole(ci, "n5") == "nonvoter" && raftRole(ci, "n4") == "none"
	})
	members := []string{"n1", "n2", "n3", "n5"}
	for _, id := range members {
		c.Eventually(15*time.Second, id+" lists n4 from gossip", func() bool {
			ci, err := c.Cluster(id)
			return err == nil && raftRole(ci, "n4") == "none"
		})
	}
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		for _, id := range members {
			if ci, err := c.Cluster(id); err == nil && raftRole(ci, "n4") != "none" {
				t.Fatalf("%s lists n4 as Raft %q", id, raftRole(ci, "n4"))
			}
		}
		if st, _ := c.Get("n4", "/readyz", ""); st != http.StatusServiceUnavailable {
			t.Fatalf("n4 /readyz: %d, want 503", st)
		}
	}
	if st, _, body := c.Publish("n2", "after-stranger", "x", "s1"); st != http.StatusOK {
		t.Fatalf("publish with the stranger around: %d %s", st, body)
	}

	clustertest.CheckClusterPortRefuses(t, c.Config("n1").ClusterAddr, stranger, "n4")
}

// TestCertificateRotationKeepsClientsAndMessages: every node's public and
// cluster certificates are renewed on disk while subscribers are
// connected and publishers publish. New connections get the new
// certificates on both ports; no subscriber loses its connection, and
// the guarantees hold (the fault workload's check).
func TestCertificateRotationKeepsClientsAndMessages(t *testing.T) {
	c := tlsCluster(t, 3)
	fc := contract(c)
	w := faultload.Start(t, fc, faultload.Options{Users: 12, Placement: []string{"n1", "n2", "n3"}})
	w.WaitAcked(10, 15*time.Second)
	w.Snapshot("n1")

	public := c.ClientTLS()
	old := map[string]*big.Int{}
	for _, id := range c.IDs() {
		s, err := clustertest.ServedSerial(c.Config(id).PublicAddr, public)
		if err != nil {
			t.Fatal(err)
		}
		old[id] = s
	}
	w.MarkFault()
	c.RenewCerts()
	cluster := clustertest.MutualClient(t, c.CertDir(), "n1") // the renewed n1 certificate: accepted too
	for _, id := range c.IDs() {
		clustertest.WaitRenewed(t, c.Config(id).PublicAddr, c.Config(id).ClusterAddr, public, cluster, old[id])
	}
	w.RunThrough(2*time.Second, 10, 15*time.Second)
	w.CheckStayedConnected()
	w.Check(c.Running())
}

// TestClusterTLSOffIsWarnedAndShown: without the cluster CA flags the node
// warns at start and /v1/cluster says cluster_tls false.
func TestClusterTLSOffIsWarnedAndShown(t *testing.T) {
	var logs testenv.Buffer
	c := clustertest.Start(t, 1, clustertest.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ci, err := c.Cluster("n1")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	_, body := c.Get("n1", "/v1/cluster", clustertest.AdminKey)
	if err := json.Unmarshal(body, &raw); err != nil || raw["cluster_tls"] != false || ci.ClusterTLS {
		t.Fatalf("/v1/cluster without cluster TLS: %s", body)
	}
	if !strings.Contains(logs.String(), "cluster ports must be on a private network") {
		t.Fatalf("no warning at start:\n%s", logs.String())
	}
}
