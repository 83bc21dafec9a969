// Package clustertest starts in-process Switchboard clusters on loopback
// for behaviour and fault tests:
//
//	c := clustertest.Start(t, 3)
//	c.Kill("n2")
//	c.Restart("n2")
//
// Every node gets fixed ports up front, so a restarted node comes back on
// the same addresses with its data dir, as a real restart would.
package clustertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/protocol"
)

// Secrets used by every test cluster.
const (
	TokenSecret = "test-token-secret"
	APIKey      = "test-api-key"
	AdminKey    = "test-admin-key"
)

// Options shape a cluster.
type Options struct {
	// Zones places node i in Zones[i%len]: "region/zone". Default: three
	// zones of one region, r1/a, r1/b, r1/c.
	Zones []string
	// Configure may adjust each node's config before it starts.
	Configure func(*node.Config)
	// Logger for the nodes; default discards below warnings.
	Logger *slog.Logger
	// Faults routes node-to-node links through proxies so that the test
	// can cut and slow them: Partition, Isolate, Heal, Latency (faults.go).
	Faults bool
	// ClusterTLS starts the nodes with mutual TLS on the cluster port, and
	// PublicTLS with HTTPS and WSS on the public listener, with
	// certificates of one CA made for the cluster (CertDir, tls.go).
	ClusterTLS, PublicTLS bool
	// Token mints the client token of a user for Cluster.Token; nil means
	// an HS256 token of TokenSecret valid for an hour.
	Token func(user string) string
	// BootstrapExpect, when positive, starts every node with
	// --bootstrap-expect of that value and --join listing every node,
	// instead of n1 with --bootstrap.
	BootstrapExpect int
	// Held nodes are configured but not started: start them with Restart.
	// Start then returns without waiting for any node to be ready.
	Held []string
}

// Cluster is a set of in-process nodes.
type Cluster struct {
	t    testing.TB
	opts Options
	dir  string

	mu    sync.Mutex
	cfgs  map[string]node.Config
	nodes map[string]*node.Node
	ids   []string

	crashes sync.WaitGroup // injected crashes stopping a node

	faults *faults      // nil unless Options.Faults
	certs  string       // CertDir; "" without TLS
	hc     *http.Client // trusts the cluster's CA with PublicTLS
	tls    *tls.Config  // ClientTLS
}

// Start starts n nodes (n1 bootstraps, the rest join it) and waits until
// all are ready. The cluster is stopped when the test ends.
func Start(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if len(o.Zones) == 0 {
		o.Zones = []string{"r1/a", "r1/b", "r1/c"}
	}
	if o.Logger == nil {
		// Registered before the cluster's own cleanup, so its cut-off runs
		// after the nodes stopped.
		o.Logger = TestLogger(t)
	}
	c := &Cluster{t: t, opts: o, dir: t.TempDir(), cfgs: map[string]node.Config{}, nodes: map[string]*node.Node{}}
	c.hc = &http.Client{Timeout: 10 * time.Second}
	if o.ClusterTLS || o.PublicTLS {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("n%d", i+1)
		}
		c.initTLS(ids)
	}
	ports := freePorts(t, 3*n)
	if o.Faults {
		// Registered before c.Stop, so proxies close after the nodes.
		ids, addrs := make([]string, n), make(map[string]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("n%d", i+1)
			addrs[ids[i]] = fmt.Sprintf("127.0.0.1:%d", ports[3*i+1])
		}
		c.faults = newFaults(t, ids, addrs)
	}
	t.Cleanup(c.Stop)
	var seed string
	var everyone []string // every node's gossip address, for BootstrapExpect
	for i := 0; i < n; i++ {
		everyone = append(everyone, fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]))
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		cfg := c.newConfig(id, o.Zones[i%len(o.Zones)], ports[3*i:3*i+3])
		if c.faults != nil {
			cfg.Dial = c.faults.dialer(id)
		}
		switch {
		case o.BootstrapExpect > 0:
			cfg.BootstrapExpect, cfg.Join = o.BootstrapExpect, everyone
		case i == 0:
			cfg.Bootstrap = true
			seed = cfg.GossipAddr
		default:
			cfg.Join = []string{seed}
		}
		if o.Configure != nil {
			o.Configure(&cfg)
		}
		c.cfgs[id] = cfg
		c.ids = append(c.ids, id)
		if slices.Contains(o.Held, id) {
			continue
		}
		c.startNode(id)
		if i == 0 && cfg.Bootstrap {
			c.WaitReady(id)
		}
	}
	if len(o.Held) > 0 {
		return c
	}
	for _, id := range c.ids {
		c.WaitReady(id)
	}
	c.WaitVoters(min(n, 3))
	return c
}

// newConfig is the config of node id in zone ("region/zone") on three
// loopback ports: public, cluster, gossip.
func (c *Cluster) newConfig(id, zone string, ports []int) node.Config {
	cfg := node.DefaultConfig()
	cfg.NodeID = id
	cfg.Region, cfg.Zone = splitZone(zone)
	cfg.DataDir = filepath.Join(c.dir, id)
	cfg.PublicAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg.ClusterAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
	cfg.Tokens.Secret, cfg.APIKey, cfg.AdminKey = []byte(TokenSecret), APIKey, AdminKey
	cfg.Profile = "local"
	cfg.Gateway.Heartbeat = time.Second
	cfg.Logger = c.opts.Logger.With("node", id)
	// An injected crash (fault injection) stops this node abruptly, as
	// Kill does, instead of killing the test binary.
	cfg.Crash = func() { c.crash(id) }
	c.configureTLS(id, &cfg)
	return cfg
}

// crash stops node id abruptly, as Kill does, from a goroutine of the
// node's (an injected crash): it reports nothing to the test.
func (c *Cluster) crash(id string) {
	c.mu.Lock()
	nd := c.nodes[id]
	delete(c.nodes, id)
	if nd != nil {
		c.crashes.Add(1) // under mu: Stop, which waits, takes it first or sees this
	}
	c.mu.Unlock()
	if nd != nil {
		nd.Kill()
		c.crashes.Done()
	}
}

// AddNode starts one more node, id, in the first zone, joining the
// cluster through n1; with TLS it gets certificates of the cluster's CA.
// configure may change its config (give it certificates of another CA,
// say). It does not wait for the node to be ready. Not with Faults.
func (c *Cluster) AddNode(id string, configure func(*node.Config)) *node.Node {
	c.t.Helper()
	if c.faults != nil {
		c.t.Fatal("clustertest: AddNode with Faults")
	}
	if c.certs != "" {
		c.issue(id)
	}
	cfg := c.newConfig(id, c.opts.Zones[0], freePorts(c.t, 3))
	cfg.Join = []string{c.cfgs[c.ids[0]].GossipAddr}
	if c.opts.Configure != nil {
		c.opts.Configure(&cfg)
	}
	if configure != nil {
		configure(&cfg)
	}
	c.mu.Lock()
	c.cfgs[id] = cfg
	c.ids = append(c.ids, id)
	c.mu.Unlock()
	c.startNode(id)
	return c.Node(id)
}

func splitZone(s string) (string, string) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:]
		}
	}
	return "r1", s
}

func (c *Cluster) startNode(id string) {
	c.t.Helper()
	cfg := c.cfgs[id]
	var nd *node.Node
	var err error
	// A just-closed port can linger briefly after a kill; retry a little.
	for try := 0; try < 50; try++ {
		if nd, err = node.New(cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = nd
	c.mu.Unlock()
}

// IDs returns the node ids, n1..nN.
func (c *Cluster) IDs() []string { return append([]string(nil), c.ids...) }

// Node returns a running node (nil if killed).
func (c *Cluster) Node(id string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Config returns a node's config.
func (c *Cluster) Config(id string) node.Config { return c.cfgs[id] }

// Running returns the ids of the running nodes.
func (c *Cluster) Running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.nodes {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// URL returns a node's public base URL (also for a killed node).
func (c *Cluster) URL(id string) string {
	if c.opts.PublicTLS {
		return "https://" + c.cfgs[id].PublicAddr
	}
	return "http://" + c.cfgs[id].PublicAddr
}

// ConnectURL returns a node's client WebSocket URL.
func (c *Cluster) ConnectURL(id string) string {
	if c.opts.PublicTLS {
		return "wss://" + c.cfgs[id].PublicAddr + "/v1/connect"
	}
	return "ws://" + c.cfgs[id].PublicAddr + "/v1/connect"
}

// ConnectURLs returns every node's client URL, in id order.
func (c *Cluster) ConnectURLs() []string {
	var out []string
	for _, id := range c.ids {
		out = append(out, c.ConnectURL(id))
	}
	return out
}

// Kill stops a node abruptly, as a crash looks to the others.
func (c *Cluster) Kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	nd := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if nd == nil {
		c.t.Fatalf("kill %s: not running", id)
	}
	nd.Kill()
}

// Drain drains and stops a node gracefully (as SIGTERM does).
func (c *Cluster) Drain(id string) {
	c.t.Helper()
	c.mu.Lock()
	nd := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if nd == nil {
		c.t.Fatalf("drain %s: not running", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nd.Shutdown(ctx); err != nil {
		c.t.Errorf("drain %s: %v", id, err)
	}
}

// Restart starts a stopped node again with its original config and data.
func (c *Cluster) Restart(id string) {
	c.t.Helper()
	if c.Node(id) != nil {
		c.t.Fatalf("restart %s: still running", id)
	}
	c.startNode(id)
}

// Stop stops every running node.
func (c *Cluster) Stop() {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = map[string]*node.Node{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.Kill()
		}()
	}
	wg.Wait()
	c.crashes.Wait()
	c.hc.CloseIdleConnections()
}

// Token mints a client token for user that allows every channel.
func (c *Cluster) Token(user string) string {
	if c.opts.Token != nil {
		return c.opts.Token(user)
	}
	return c.TokenFor(user, "*")
}

// TokenFor mints a client token for user that allows the channels matching
// patterns.
func (c *Cluster) TokenFor(user string, patterns ...string) string {
	tok, err := token.MintChannels([]byte(TokenSecret), user, time.Hour, patterns)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// Eventually polls cond every 50ms until it holds or timeout passes.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitReady waits until a node's /readyz answers 200.
func (c *Cluster) WaitReady(id string) {
	c.t.Helper()
	c.Eventually(30*time.Second, id+" ready", func() bool {
		st, _ := c.Get(id, "/readyz", "")
		return st == http.StatusOK
	})
}

// ClusterInfo is GET /v1/cluster.
type ClusterInfo = protocol.Cluster

// Cluster reads GET /v1/cluster from node id.
func (c *Cluster) Cluster(id string) (ClusterInfo, error) {
	var ci ClusterInfo
	st, body := c.Get(id, "/v1/cluster", AdminKey)
	if st != http.StatusOK {
		return ci, fmt.Errorf("GET /v1/cluster on %s: %d %s", id, st, body)
	}
	return ci, json.Unmarshal(body, &ci)
}

// Leader returns the leader id as node id sees it ("" if none).
func (c *Cluster) Leader(id string) string {
	ci, err := c.Cluster(id)
	if err != nil {
		return ""
	}
	return ci.Leader
}

// WaitLeader waits until every running node agrees on one live leader, and returns it.
func (c *Cluster) WaitLeader() string {
	c.t.Helper()
	var leader string
	c.Eventually(30*time.Second, "an agreed leader", func() bool {
		leader = ""
		for _, id := range c.Running() {
			l := c.Leader(id)
			if l == "" || (leader != "" && l != leader) || c.Node(l) == nil {
				return false
			}
			leader = l
		}
		return leader != ""
	})
	return leader
}

// WaitVoters waits until the leader's configuration has n voters (leader included).
func (c *Cluster) WaitVoters(n int) {
	c.t.Helper()
	c.Eventually(30*time.Second, fmt.Sprintf("%d raft voters", n), func() bool {
		ci, err := c.Cluster(c.Running()[0])
		if err != nil {
			return false
		}
		v := 0
		for _, nd := range ci.Nodes {
			if nd.Raft == "leader" || nd.Raft == "voter" {
				v++
			}
		}
		return v >= n
	})
}

// SessionInfo is GET /v1/sessions/{user}.
type SessionInfo = protocol.Session

// Session reads GET /v1/sessions/{user} from node id.
func (c *Cluster) Session(id, user string) (SessionInfo, int) {
	var si SessionInfo
	st, body := c.Get(id, "/v1/sessions/"+user, AdminKey)
	if st == http.StatusOK {
		_ = json.Unmarshal(body, &si)
	}
	return si, st
}

// PublishResult is the 200 answer of POST /v1/publish.
type PublishResult = protocol.PublishResult

// Publish posts one message through node id and returns the status and answer.
func (c *Cluster) Publish(id, user string, data any, msgID string) (int, PublishResult, []byte) {
	return c.publish(id, data, func(raw json.RawMessage) protocol.Publish { return protocol.NewPublish(user, raw, msgID) })
}

// publish posts the body made of data's JSON through node id.
func (c *Cluster) publish(id string, data any, body func(json.RawMessage) protocol.Publish) (int, PublishResult, []byte) {
	raw, err := json.Marshal(data)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := json.Marshal(body(raw))
	st, out := c.Do(id, http.MethodPost, "/v1/publish", APIKey, b)
	var pr PublishResult
	if st == http.StatusOK {
		_ = json.Unmarshal(out, &pr)
	}
	return st, pr, out
}

// PublishChannel posts one message to channel through node id and returns
// the status and answer.
func (c *Cluster) PublishChannel(id, channel string, data any, msgID string) (int, PublishResult, []byte) {
	return c.publish(id, data, func(raw json.RawMessage) protocol.Publish { return protocol.NewChannelPublish(channel, raw, msgID) })
}

// Get performs a GET on node id with an optional bearer key.
func (c *Cluster) Get(id, path, key string) (int, []byte) {
	return c.Do(id, http.MethodGet, path, key, nil)
}

// Do performs a request on node id; network errors come back as status 0.
func (c *Cluster) Do(id, method, path, key string, body []byte) (int, []byte) {
	req, err := http.NewRequest(method, c.URL(id)+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func freePorts(t testing.TB, n int) []int { return FreePorts(t, n) }

// fetchBadPort is the one port of FreePorts' range on the Fetch
// standard's list of blocked ports: browsers and Node's fetch and
// WebSocket refuse to connect to it, so a node there is out of reach of
// the JS SDK and dashboard tests.
const fetchBadPort = 10080

// FreePorts returns n distinct loopback ports that are free for TCP and
// UDP (gossip uses both) right now. They are taken from below the
// kernel's ephemeral range: a port from inside it can be picked as the
// source port of some outgoing connection between the check and the
// node's bind, which made tests flaky. Port 10080 is never returned
// (fetchBadPort).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := 10000, 32000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var start, end int
		if _, err := fmt.Sscan(string(b), &start, &end); err == nil && start > lo+1000 {
			hi = start - 1
		}
	}
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("no %d free ports in [%d, %d]", n, lo, hi)
		}
		p := lo + rand.IntN(hi-lo)
		if seen[p] || p == fetchBadPort {
			continue
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports
}

// TestLogger logs warnings and errors to t (shown only on failure) until
// the test's cleanups run: a probe memberlist still has in flight after a
// node stopped may log, and t.Log after the test has completed panics.
func TestLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter sends node logs to the test log until stopped.
type testWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// Verbose, when SWITCHBOARD_TEST_LOG=debug, logs nodes at debug level.
func Verbose() *slog.Logger {
	if os.Getenv("SWITCHBOARD_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}
