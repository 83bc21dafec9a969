package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/switchboard/switchboard/transport/clusterport"
)

// ErrLinkCut is what a node's dial returns while fault injection cuts the
// link to its target.
var ErrLinkCut = errors.New("clustertest: link cut by fault injection")

// latencyToxic names the one latency toxic a directed link can carry.
const latencyToxic = "latency"

// link is one direction of a node pair: connections opened by from to to.
type link struct{ from, to string }

func (l link) String() string { return l.from + "->" + l.to }

// faults routes every node-to-node connection through an in-process
// toxiproxy proxy, one per ordered pair of nodes: node i reaches node j's
// cluster port through proxy(i,j). Cutting a link stops its proxies, which
// closes their connections and refuses new ones; latency is a toxic on
// the proxies that carry one direction's bytes.
//
// Only the cluster port is proxied: Raft and peer links. Gossip (UDP) is
// not, so during a partition membership may still see the nodes on the
// other side alive. That is the harder case for the registry: nodes keep
// routing to an owner they cannot reach, and no node-failed command
// settles it for them.
type faults struct {
	server *toxiproxy.ApiServer

	// opMu serialises fault operations; mu guards the maps below and is
	// never held across a proxy start or stop, so dials do not wait on them.
	opMu    sync.Mutex
	mu      sync.Mutex
	ids     []string
	addrs   map[string]string // node id → cluster addr
	byAddr  map[string]string // cluster addr → node id
	proxies map[link]*toxiproxy.Proxy
	listen  map[link]string // proxy listen address
	cut     map[link]bool

	closeOnce sync.Once
}

// newFaults starts one proxy per ordered pair of the nodes in addrs (node
// id → cluster addr); they stop when the test ends.
func newFaults(t testing.TB, ids []string, addrs map[string]string) *faults {
	t.Helper()
	metrics := toxiproxy.NewMetricsContainer(nil)
	f := &faults{
		server:  toxiproxy.NewServer(metrics, zerolog.Nop()),
		ids:     append([]string(nil), ids...),
		addrs:   addrs,
		byAddr:  make(map[string]string, len(addrs)),
		proxies: make(map[link]*toxiproxy.Proxy),
		listen:  make(map[link]string),
		cut:     make(map[link]bool),
	}
	t.Cleanup(f.close)
	for id, addr := range addrs {
		f.byAddr[addr] = id
	}
	for _, from := range ids {
		for _, to := range ids {
			if from == to {
				continue
			}
			l := link{from, to}
			p := toxiproxy.NewProxy(f.server, l.String(), "127.0.0.1:0", addrs[to])
			if err := p.Start(); err != nil {
				t.Fatalf("clustertest: start proxy %s: %v", l, err)
			}
			f.proxies[l] = p
			f.listen[l] = proxyAddr(p)
		}
	}
	return f
}

// proxyAddr reads the address a started proxy listens on.
func proxyAddr(p *toxiproxy.Proxy) string {
	p.Lock()
	defer p.Unlock()
	return p.Listen
}

// dialer returns node from's dial: connections to another node's cluster
// address go through proxy(from, to), and fail at once while it is cut.
func (f *faults) dialer(from string) clusterport.Dialer {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		f.mu.Lock()
		to, ok := f.byAddr[addr]
		l := link{from, to}
		if ok && to != from {
			if f.cut[l] {
				f.mu.Unlock()
				return nil, fmt.Errorf("dial %s (%s): %w", addr, l, ErrLinkCut)
			}
			addr = f.listen[l]
		}
		f.mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// setCut cuts or restores both directions between a and b.
func (f *faults) setCut(a, b string, cut bool) error {
	var errs []error
	for _, l := range []link{{a, b}, {b, a}} {
		if err := f.setLink(l, cut); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *faults) setLink(l link, cut bool) error {
	f.mu.Lock()
	p, was := f.proxies[l], f.cut[l]
	if cut {
		// Refuse new dials before the proxy closes what is open.
		f.cut[l] = true
	}
	f.mu.Unlock()
	if p == nil {
		return fmt.Errorf("clustertest: no link %s", l)
	}
	if cut == was {
		return nil
	}
	if cut {
		p.Stop()
		return nil
	}
	if err := p.Start(); err != nil {
		// The old port was taken meanwhile; any free one will do, since
		// dials look the address up.
		up := &toxiproxy.Proxy{Listen: "127.0.0.1:0", Upstream: p.Upstream, Enabled: true}
		if err := p.Update(up); err != nil {
			return fmt.Errorf("clustertest: restart proxy %s: %w", l, err)
		}
	}
	f.mu.Lock()
	f.listen[l] = proxyAddr(p)
	f.cut[l] = false
	f.mu.Unlock()
	return nil
}

// setLatency puts latency d (none if d <= 0) on the bytes l.from sends
// to l.to: on proxy(from,to) toward the upstream and on proxy(to,from)
// toward the client.
func (f *faults) setLatency(l link, d time.Duration) error {
	f.mu.Lock()
	out, back := f.proxies[l], f.proxies[link{l.to, l.from}]
	f.mu.Unlock()
	if out == nil || back == nil {
		return fmt.Errorf("clustertest: no link %s", l)
	}
	for _, side := range []struct {
		p      *toxiproxy.Proxy
		stream string
	}{{out, "upstream"}, {back, "downstream"}} {
		name := latencyToxic + "_" + side.stream
		err := side.p.Toxics.RemoveToxic(context.Background(), name)
		if err != nil && !errors.Is(err, toxiproxy.ErrToxicNotFound) {
			return fmt.Errorf("clustertest: remove latency on %s: %w", side.p.Name, err)
		}
		if d <= 0 {
			continue
		}
		body := fmt.Sprintf(`{"name":%q,"type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":%d}}`,
			name, side.stream, d.Milliseconds())
		if _, err := side.p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			return fmt.Errorf("clustertest: add latency on %s: %w", side.p.Name, err)
		}
	}
	return nil
}

// heal restores every link and removes every toxic.
func (f *faults) heal() error {
	var errs []error
	for _, a := range f.ids {
		for _, b := range f.ids {
			if a == b {
				continue
			}
			if err := f.setLink(link{a, b}, false); err != nil {
				errs = append(errs, err)
			}
			f.mu.Lock()
			p := f.proxies[link{a, b}]
			f.mu.Unlock()
			p.Toxics.ResetToxics(context.Background())
		}
	}
	return errors.Join(errs...)
}

// close stops every proxy, closing the connections through it.
func (f *faults) close() {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		ps := make([]*toxiproxy.Proxy, 0, len(f.proxies))
		for l, p := range f.proxies {
			f.cut[l] = true
			ps = append(ps, p)
		}
		f.mu.Unlock()
		for _, p := range ps {
			p.Stop()
		}
	})
}

// mustFaults returns the cluster's fault injector or fails the test.
func (c *Cluster) mustFaults() *faults {
	c.t.Helper()
	if c.faults == nil {
		c.t.Fatal("clustertest: fault injection needs Options.Faults")
	}
	return c.faults
}

// Partition splits the cluster into groups: links between nodes of
// different groups are cut (open connections closed, new ones refused),
// links within a group work. A node named in no group is a group of its
// own. Partition replaces any earlier partition; latency stays.
//
// Only Raft and peer links are cut: gossip still flows, so membership may
// keep reporting nodes on the other side alive.
func (c *Cluster) Partition(groups ...[]string) {
	c.t.Helper()
	f := c.mustFaults()
	f.opMu.Lock()
	defer f.opMu.Unlock()
	group := make(map[string]int, len(f.ids))
	for g, ids := range groups {
		for _, id := range ids {
			if _, ok := f.addrs[id]; !ok {
				c.t.Fatalf("clustertest: partition: unknown node %q", id)
			}
			if _, dup := group[id]; dup {
				c.t.Fatalf("clustertest: partition: node %q in two groups", id)
			}
			group[id] = g
		}
	}
	next := len(groups)
	for _, id := range f.ids {
		if _, ok := group[id]; !ok {
			group[id] = next
			next++
		}
	}
	var errs []error
	for i, a := range f.ids {
		for _, b := range f.ids[i+1:] {
			errs = append(errs, f.setCut(a, b, group[a] != group[b]))
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.t.Fatalf("clustertest: partition: %v", err)
	}
}

// Isolate cuts id's links to every other node (Raft and peer links; not
// gossip), leaving the other links as they are.
func (c *Cluster) Isolate(id string) {
	c.t.Helper()
	f := c.mustFaults()
	f.opMu.Lock()
	defer f.opMu.Unlock()
	if _, ok := f.addrs[id]; !ok {
		c.t.Fatalf("clustertest: isolate: unknown node %q", id)
	}
	var errs []error
	for _, other := range f.ids {
		if other != id {
			errs = append(errs, f.setCut(id, other, true))
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.t.Fatalf("clustertest: isolate %s: %v", id, err)
	}
}

// KillAbruptly cuts id's links to every other node, then kills it: to the
// others it falls silent at once, as a process killed by SIGKILL does.
// (Kill alone first closes the node's client connections, which can take
// a second during which the node still talks to its peers.) Gossip is
// not cut: it stops when the kill completes.
func (c *Cluster) KillAbruptly(id string) {
	c.t.Helper()
	c.Isolate(id)
	c.Kill(id)
}

// Cut cuts the links node from opens to node to (Raft and peer links; not
// gossip): their connections are closed and new ones refused. Links that
// to opens to from keep working, so calls from to still get answers while
// everything from sends on its own links is lost. Heal restores it.
func (c *Cluster) Cut(from, to string) {
	c.t.Helper()
	f := c.mustFaults()
	f.opMu.Lock()
	defer f.opMu.Unlock()
	if err := f.setLink(link{from, to}, true); err != nil {
		c.t.Fatalf("clustertest: cut %s->%s: %v", from, to, err)
	}
}

// Heal restores every link and removes all latency.
func (c *Cluster) Heal() {
	c.t.Helper()
	f := c.mustFaults()
	f.opMu.Lock()
	defer f.opMu.Unlock()
	if err := f.heal(); err != nil {
		c.t.Fatalf("clustertest: heal: %v", err)
	}
}

// Latency delays the bytes node from sends to node to by d, on
// connections opened by either side; d <= 0 removes it. The other
// direction is unaffected. Connections already open get it too.
func (c *Cluster) Latency(from, to string, d time.Duration) {
	c.t.Helper()
	f := c.mustFaults()
	f.opMu.Lock()
	defer f.opMu.Unlock()
	if err := f.setLatency(link{from, to}, d); err != nil {
		c.t.Fatalf("clustertest: latency %s->%s: %v", from, to, err)
	}
}
