package node_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

// Gossip encryption across a cluster (DESIGN.md §5, §7): the keyring API,
// a rotation under load, and nodes without the key.

// gossipKey returns a distinct AES-256 key.
func gossipKey(seed byte) []byte { return bytes.Repeat([]byte{seed}, 32) }

func b64(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// withGossipKeys gives every node of a test cluster these keys, as
// --gossip-key-file does.
func withGossipKeys(keys ...[]byte) func(*node.Config) {
	return func(c *node.Config) { c.Gossip.Keys = keys }
}

// gossipKeys reads GET /v1/gossip/keys through node id, once every
// running node answered it (a peer link may still be connecting).
func gossipKeys(t *testing.T, c *clustertest.Cluster, id string) (protocol.GossipKeys, []byte) {
	t.Helper()
	var gk protocol.GossipKeys
	var body []byte
	c.Eventually(15*time.Second, "every node to tell "+id+" its keyring", func() bool {
		var st int
		st, body = c.Get(id, "/v1/gossip/keys", clustertest.AdminKey)
		gk = protocol.GossipKeys{}
		if st != http.StatusOK || json.Unmarshal(body, &gk) != nil {
			t.Fatalf("GET /v1/gossip/keys on %s: %d %s", id, st, body)
		}
		return len(gk.Unreachable) == 0 && gk.Nodes == len(c.Running())
	})
	return gk, body
}

// changeGossipKeys posts a keyring op through node id.
func changeGossipKeys(t *testing.T, c *clustertest.Cluster, id, op, key string) (int, protocol.GossipKeyOpResult, []byte) {
	t.Helper()
	b, _ := json.Marshal(protocol.GossipKeyOp{Op: op, Key: key})
	st, body := c.Do(id, http.MethodPost, "/v1/gossip/keys", clustertest.AdminKey, b)
	var res protocol.GossipKeyOpResult
	_ = json.Unmarshal(body, &res)
	return st, res, body
}

// wantKeyring checks that every live node holds exactly keys, the first
// the primary everywhere.
func wantKeyring(t *testing.T, gk protocol.GossipKeys, nodes int, keys ...[]byte) {
	t.Helper()
	var want []protocol.GossipKeyInfo
	for i, k := range keys {
		info := protocol.GossipKeyInfo{Fingerprint: membership.Fingerprint(k), Nodes: nodes}
		if i == 0 {
			info.Primary, info.PrimaryOn = true, nodes
		}
		want = append(want, info)
	}
	if !gk.Encrypted || gk.Nodes != nodes || len(gk.Unreachable) != 0 || fmt.Sprint(gk.Keys) != fmt.Sprint(want) {
		t.Fatalf("gossip keys = %+v, want %d nodes holding %+v", gk, nodes, want)
	}
}

// startOutsider starts a node that tries to join c through n1 with the
// given gossip keys (none: plaintext gossip), on ports and a data dir of
// its own. It is stopped when the test ends.
func startOutsider(t *testing.T, c *clustertest.Cluster, id string, keys ...[]byte) (*node.Node, node.Config) {
	t.Helper()
	cfg := c.Config("n1")
	ports := clustertest.FreePorts(t, 3)
	cfg.NodeID, cfg.DataDir, cfg.Bootstrap = id, t.TempDir(), false
	cfg.PublicAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg.ClusterAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
	cfg.Join = []string{c.Config("n1").GossipAddr}
	cfg.Gossip.Keys = keys
	cfg.Logger = testLogger(t).With("node", id)
	nd, err := node.New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(nd.Kill)
	return nd, cfg
}

// memberIDs lists the nodes of a GET /v1/cluster answer at base.
func memberIDs(t *testing.T, base string) []string {
	t.Helper()
	st, _, body := httpDo(t, http.MethodGet, base+"/v1/cluster", clustertest.AdminKey, nil)
	var ci protocol.Cluster
	if st != http.StatusOK || json.Unmarshal(body, &ci) != nil {
		t.Fatalf("GET %s/v1/cluster: %d %s", base, st, body)
	}
	var ids []string
	for _, n := range ci.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// TestNodeWithoutTheGossipKeyNeverJoins: a node started without the
// cluster's gossip key, or with another one, keeps trying to join but
// never appears in any member list, never becomes ready, and the cluster
// serves on as if it did not exist.
func TestNodeWithoutTheGossipKeyNeverJoins(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Configure: withGossipKeys(gossipKey(1))})
	cl := subscribe(t, c, "bystander", c.ConnectURLs())
	plain, _ := startOutsider(t, c, "n4")
	other, _ := startOutsider(t, c, "n5", gossipKey(2), gossipKey(3))
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, id := range c.IDs() {
			if ids := memberIDs(t, c.URL(id)); strings.Join(ids, ",") != "n1,n2,n3" {
				t.Fatalf("%s lists members %v", id, ids)
			}
		}
	}
	for _, nd := range []*node.Node{plain, other} {
		if ids := memberIDs(t, nd.PublicURL()); len(ids) != 1 || ids[0] != nd.ID() {
			t.Errorf("%s lists members %v, want only itself", nd.ID(), ids)
		}
		if st, _, body := httpDo(t, http.MethodGet, nd.PublicURL()+"/readyz", "", nil); st != http.StatusServiceUnavailable {
			t.Errorf("%s /readyz: %d %s", nd.ID(), st, body)
		}
	}
	for i := range 3 {
		mustPublish(t, c, c.IDs()[i], "bystander", i, "")
	}
	if got := receive(t, cl, 3, 10*time.Second); got[2].Seq != 3 {
		t.Fatalf("bystander got %+v", got)
	}
	gk, _ := gossipKeys(t, c, "n2")
	wantKeyring(t, gk, 3, gossipKey(1))
}

// TestGossipKeysAPI checks GET and POST /v1/gossip/keys on an encrypted
// cluster: the body's shape (fingerprints only, never keys), the refusals
// that change nothing (400 for a bad op or key, 409 for an op that would
// cut a node off, 503 when a node cannot be asked), and per-node results.
func TestGossipKeysAPI(t *testing.T) {
	k1, k2, k3 := gossipKey(1), gossipKey(2), gossipKey(3)
	c := clustertest.Start(t, 3, clustertest.Options{Configure: withGossipKeys(k1), Faults: true})

	t.Run("list", func(t *testing.T) {
		gk, body := gossipKeys(t, c, "n3")
		wantKeyring(t, gk, 3, k1)
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		wantKeys(t, "gossip keys", m, "encrypted", "keys", "nodes")
		keys, _ := m["keys"].([]any)
		key, _ := keys[0].(map[string]any)
		wantKeys(t, "gossip key", key, "fingerprint", "primary", "nodes", "primary_on")
		if fp, _ := key["fingerprint"].(string); len(fp) != 16 || fp != membership.Fingerprint(k1) {
			t.Errorf("fingerprint %q", fp)
		}
		if bytes.Contains(body, []byte(b64(k1))) {
			t.Errorf("the answer shows the key: %s", body)
		}
	})

	t.Run("bad requests change nothing", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			status     int
			message    string
		}{
			{"not JSON", `{"op":`, 400, "body"},
			{"unknown op", `{"op":"rotate","key":"` + b64(k2) + `"}`, 400, `unknown keyring op \"rotate\"`},
			{"not base64", `{"op":"install","key":"***"}`, 400, "key: invalid gossip key: not base64"},
			{"short key", `{"op":"install","key":"` + b64(k2[:10]) + `"}`, 400, "key: invalid gossip key: 10 bytes"},
			{"use a key not installed", `{"op":"use","key":"` + b64(k2) + `"}`, 409, "is not installed on n1, n2, n3: install it first; nothing changed"},
			{"remove the primary", `{"op":"remove","key":"` + b64(k1) + `"}`, 409, "is the primary on n1, n2, n3"},
			{"remove a key nobody holds", `{"op":"remove","key":"` + b64(k2) + `"}`, 409, "no live node holds key"},
		} {
			st, body := c.Do("n2", http.MethodPost, "/v1/gossip/keys", clustertest.AdminKey, []byte(tc.body))
			wantErrorJSON(t, tc.name, st, body, tc.status)
			if !bytes.Contains(body, []byte(tc.message)) {
				t.Errorf("%s: %s, want %q", tc.name, body, tc.message)
			}
		}
		st, hdr, body := httpDo(t, http.MethodPut, c.URL("n1")+"/v1/gossip/keys", clustertest.AdminKey, nil)
		if wantErrorJSON(t, "PUT", st, body, 405); hdr.Get("Allow") != "GET, POST" {
			t.Errorf("Allow %q", hdr.Get("Allow"))
		}
		gk, _ := gossipKeys(t, c, "n1")
		wantKeyring(t, gk, 3, k1)
	})

	t.Run("install, then again", func(t *testing.T) {
		for _, changed := range []bool{true, false} {
			st, res, body := changeGossipKeys(t, c, "n1", "install", b64(k2))
			if st != http.StatusOK || res.Op != "install" || res.Fingerprint != membership.Fingerprint(k2) || res.Error != "" || len(res.Nodes) != 3 {
				t.Fatalf("install: %d %s", st, body)
			}
			for i, r := range res.Nodes {
				if r != (protocol.GossipKeyNode{Node: c.IDs()[i], OK: true, Changed: changed}) {
					t.Fatalf("install (changed %t): node %+v", changed, r)
				}
			}
		}
		gk, _ := gossipKeys(t, c, "n2")
		wantKeyring(t, gk, 3, k1, k2)
	})

	t.Run("a node that cannot be asked stops the op", func(t *testing.T) {
		// Its peer links are cut; gossip still says it is alive.
		c.Isolate("n3")
		st, res, body := changeGossipKeys(t, c, "n1", "install", b64(k3))
		c.Heal()
		wantErrorJSON(t, "install while n3 is cut off", st, body, 503)
		if len(res.Nodes) != 1 || res.Nodes[0].Node != "n3" || !strings.HasPrefix(res.Nodes[0].Error, "unreachable: ") ||
			!strings.Contains(res.Error, "n3 could not be asked for its keyring: nothing changed") {
			t.Fatalf("answer %s", body)
		}
		gk, _ := gossipKeys(t, c, "n1")
		wantKeyring(t, gk, 3, k1, k2)
	})
}

// watchMembers polls every node's member list until stopped, noting any
// moment a node saw a member other than alive. A node memberlist declared
// dead stays so for seconds (until it rejoins), so polling every 250 ms
// sees it.
func watchMembers(c *clustertest.Cluster) (stop func() []string) {
	return testenv.Watch(250*time.Millisecond, func() (seen []string) {
		for _, id := range c.IDs() {
			ci, err := c.Cluster(id)
			if err != nil {
				seen = append(seen, fmt.Sprintf("%s: %v", id, err))
			}
			for _, m := range ci.Nodes {
				if m.State != "alive" {
					seen = append(seen, fmt.Sprintf("%s saw %s %s", id, m.ID, m.State))
				}
			}
		}
		return seen
	})
}

// TestGossipKeyRotationUnderLoad rotates the gossip key of a loaded
// cluster the safe way, each step through another node (install the new
// key, use it, remove the old one), while subscribers are connected and
// publishes flow: every subscriber stays connected, every acknowledged
// message is delivered once and in order (the fault workload's check),
// and no node ever sees another one other than alive. Afterwards a node
// restarted with its original --gossip-key-file (the old key) rejoins with
// the keyring it saved, while a new node with the old key cannot join.
func TestGossipKeyRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	oldKey, newKey := gossipKey(1), gossipKey(2)
	c := clustertest.Start(t, 3, clustertest.Options{Configure: withGossipKeys(oldKey), Logger: clustertest.Verbose()})
	leader := c.WaitLeader()
	w := faultload.Start(t, contract(c), faultload.Options{Users: 15, Placement: c.IDs()})
	w.WaitAcked(10, 15*time.Second)
	w.Snapshot(leader)
	stop := watchMembers(c)
	w.MarkFault()
	for i, step := range []struct {
		op  string
		key []byte
	}{{"install", newKey}, {"use", newKey}, {"remove", oldKey}} {
		via := c.IDs()[i]
		st, res, body := changeGossipKeys(t, c, via, step.op, b64(step.key))
		if st != http.StatusOK || len(res.Nodes) != 3 {
			t.Fatalf("%s via %s: %d %s", step.op, via, st, body)
		}
		for _, r := range res.Nodes {
			if !r.OK || !r.Changed {
				t.Fatalf("%s via %s: %s", step.op, via, body)
			}
		}
		time.Sleep(1500 * time.Millisecond) // gossip rounds between the steps
	}
	w.RunThrough(2*time.Second, 10, 15*time.Second)
	if seen := stop(); len(seen) > 0 {
		t.Errorf("members were not alive during the rotation: %v", seen[:min(len(seen), 5)])
	}
	w.CheckClientsStayed()
	w.Check(c.Running())
	gk, _ := gossipKeys(t, c, "n1")
	wantKeyring(t, gk, 3, newKey)

	// Every node saved the new keyring, privately.
	for _, id := range c.IDs() {
		path := filepath.Join(c.Config(id).DataDir, "gossip-keyring")
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v", path, st, err)
		}
		if keys, err := membership.ReadKeyFile(path); err != nil || len(keys) != 1 || !bytes.Equal(keys[0], newKey) {
			t.Fatalf("%s holds %d keys (%v), want the new key only", path, len(keys), err)
		}
	}

	// n3 restarts with its original config: --gossip-key-file's old key.
	c.Kill("n3")
	c.Restart("n3")
	c.WaitReady("n3")
	c.Eventually(15*time.Second, "n1 and n3 to see each other alive", func() bool {
		for _, pair := range [][2]string{{"n1", "n3"}, {"n3", "n1"}} {
			ci, err := c.Cluster(pair[0])
			if err != nil {
				return false
			}
			alive := false
			for _, m := range ci.Nodes {
				alive = alive || m.ID == pair[1] && m.State == "alive"
			}
			if !alive {
				return false
			}
		}
		return true
	})
	gk, _ = gossipKeys(t, c, "n3")
	wantKeyring(t, gk, 3, newKey)

	// A node that only knows the old key cannot join any more.
	stale, _ := startOutsider(t, c, "n4", oldKey)
	time.Sleep(3 * time.Second)
	if ids := memberIDs(t, c.URL("n1")); strings.Join(ids, ",") != "n1,n2,n3" {
		t.Fatalf("n1 lists members %v", ids)
	}
	if ids := memberIDs(t, stale.PublicURL()); len(ids) != 1 {
		t.Fatalf("n4 lists members %v", ids)
	}
}
