package main

// The real binary with the TLS flags of DESIGN.md §6: certificates made
// as `sbctl certs init` makes them (one CA for the public and the cluster
// side, as the compose lab has it).

import (
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/protocol"
)

// tlsFlags are node id's public and cluster TLS flags for the files in dir.
func tlsFlags(dir, id string) []string {
	cert, key := filepath.Join(dir, certs.CertFile(id)), filepath.Join(dir, certs.KeyFile(id))
	return []string{"--tls-cert-file", cert, "--tls-key-file", key,
		"--cluster-ca-file", filepath.Join(dir, certs.CAFile), "--cluster-cert-file", cert, "--cluster-key-file", key}
}

func initCerts(t *testing.T, dir string, ids ...string) {
	t.Helper()
	if _, err := certs.Init(dir, certs.InitOptions{Nodes: ids}); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLSProcesses: three processes with public TLS and mutual TLS
// on the cluster port form a cluster and say so; a fourth whose cluster
// certificate is of another CA joins gossip but never Raft and never
// becomes ready, and the cluster port gives nothing to what cannot prove
// itself; then every certificate is renewed on disk while clients are
// connected and publishers publish: nobody is disconnected, nothing is
// lost, and both ports serve the new certificates.
func TestMutualTLSProcesses(t *testing.T) {
	f := newFleet(t)
	dir := filepath.Join(f.dir, "certs")
	initCerts(t, dir, "n1", "n2", "n3")
	trusted.add(t, filepath.Join(dir, certs.CAFile))
	ports := freePorts(t, 12)
	var nodes []*member
	for i, id := range []string{"n1", "n2", "n3"} {
		var seed *member
		if i > 0 {
			seed = nodes[0]
		}
		n := f.startMember(id, string(rune('a'+i)), "127.0.0.1", [3]int(ports[3*i:3*i+3]), seed, nil, tlsFlags(dir, id))
		n.tls = true
		nodes = append(nodes, n)
	}
	procs := []*proc{nodes[0].proc, nodes[1].proc, nodes[2].proc}
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
	}
	for _, n := range nodes {
		eventually(t, 30*time.Second, n.id+" sees 3 voters over TLS", procs, func() bool {
			cv, ok := clusterOf(n.base(), procAdminKey)
			if !ok || !cv.ClusterTLS || countVoters(cv) != 3 {
				return false
			}
			for _, m := range cv.Nodes {
				if !strings.HasPrefix(m.PublicURL, "https://") {
					t.Fatalf("%s gossips public URL %s", m.ID, m.PublicURL)
				}
			}
			return true
		})
		if log, _ := os.ReadFile(n.err); strings.Contains(string(log), "cluster ports must be on a private network") {
			t.Errorf("%s warns about cluster TLS with it on", n.id)
		}
	}

	// A node of another CA.
	stranger := filepath.Join(f.dir, "stranger")
	initCerts(t, stranger, "n4")
	n4 := f.startMember("n4", "a", "127.0.0.1", [3]int(ports[9:12]), nodes[0], nil, []string{
		"--cluster-ca-file", filepath.Join(stranger, certs.CAFile),
		"--cluster-cert-file", filepath.Join(stranger, certs.CertFile("n4")),
		"--cluster-key-file", filepath.Join(stranger, certs.KeyFile("n4")),
	})
	for _, n := range nodes {
		eventually(t, 30*time.Second, n.id+" lists n4 from gossip", append(procs, n4.proc), func() bool {
			cv, ok := clusterOf(n.base(), procAdminKey)
			return ok && roleOf(cv, "n4") == "none"
		})
	}
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, n := range nodes {
			if cv, ok := clusterOf(n.base(), procAdminKey); ok && roleOf(cv, "n4") != "none" {
				t.Fatalf("%s lists n4 as Raft %q", n.id, roleOf(cv, "n4"))
			}
		}
		if st, _, body := request("GET", n4.base()+"/readyz", "", nil); st != 503 {
			t.Fatalf("n4 /readyz: %d %s, want 503", st, body)
		}
	}
	n4.kill(t)
	clustertest.CheckClusterPortRefuses(t, nodes[0].cluster, stranger, "n4")

	// Rotation under load.
	w := faultload.Start(t, contract(nil, nodes...), faultload.Options{Users: procUsers, Placement: []string{"n1", "n2", "n3"}, GiveUp: 20 * time.Second})
	w.WaitAcked(10, 20*time.Second)
	w.Snapshot("n1")
	public := trusted.config()
	old := map[string]*big.Int{}
	for _, n := range nodes {
		s, err := clustertest.ServedSerial(n.public, public)
		if err != nil {
			t.Fatal(err)
		}
		old[n.id] = s
	}
	w.MarkFault()
	initCerts(t, dir, "n1", "n2", "n3")
	cluster := clustertest.MutualClient(t, dir, "n1")
	for _, n := range nodes {
		clustertest.WaitRenewed(t, n.public, n.cluster, public, cluster, old[n.id])
	}
	w.RunThrough(2*time.Second, 10, 20*time.Second)
	w.CheckStayedConnected()
	w.Check([]string{"n1", "n2", "n3"})
	for _, n := range nodes {
		if log, _ := os.ReadFile(n.err); !strings.Contains(string(log), "TLS certificate reloaded") {
			t.Errorf("%s logged no reload", n.id)
		}
	}
}

func countVoters(cv protocol.Cluster) int {
	v := 0
	for _, m := range cv.Nodes {
		if m.Raft == "leader" || m.Raft == "voter" {
			v++
		}
	}
	return v
}

func roleOf(cv protocol.Cluster, id string) string {
	for _, m := range cv.Nodes {
		if m.ID == id {
			return m.Raft
		}
	}
	return fmt.Sprintf("(%s not listed)", id)
}
