package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// requestTimeout bounds every admin, metrics and health request.
const requestTimeout = 10 * time.Second

// maxAnswer bounds how much of an HTTP answer is read.
const maxAnswer = 16 << 20

// nodeRef is one endpoint and the node id it answers with.
type nodeRef struct {
	ID    string
	Base  string // http://host:port
	Admin string // admin API base URL (Base unless separate)
	WS    string // ws://host:port/v1/connect
}

// cluster is the HTTP side of the public contract, for one run.
type cluster struct {
	hc       *http.Client
	apiKey   string
	adminKey string
	nodes    []nodeRef
}

func newCluster(cfg *Config) *cluster {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(cfg.Inflight, 8)
	tr.MaxIdleConns = 0
	tr.TLSClientConfig = cfg.TLS
	return &cluster{
		hc:       &http.Client{Transport: tr, Timeout: requestTimeout},
		apiKey:   cfg.APIKey,
		adminKey: cfg.AdminKey,
	}
}

// close releases idle keep-alive connections (and their goroutines).
func (c *cluster) close() { c.hc.CloseIdleConnections() }

// resolve learns each endpoint's node id from GET /healthz.
func (c *cluster) resolve(ctx context.Context, bases, admins []string) error {
	c.nodes = c.nodes[:0]
	for i, b := range bases {
		var h protocol.Health
		st, body, err := c.do(ctx, http.MethodGet, b+"/healthz", "", nil)
		if err != nil {
			return fmt.Errorf("%w: %s/healthz: %w", ErrCluster, b, err)
		}
		if st != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Node == "" {
			return fmt.Errorf("%w: %s/healthz answered %d %s", ErrCluster, b, st, bytes.TrimSpace(body))
		}
		n := nodeRef{ID: h.Node, Base: b, Admin: b, WS: wsURL(b)}
		if i < len(admins) {
			n.Admin = admins[i]
		}
		c.nodes = append(c.nodes, n)
	}
	return nil
}

// index finds a node by id or base URL.
func (c *cluster) index(spec string) (int, error) {
	s := strings.TrimRight(strings.TrimSpace(spec), "/")
	for i, n := range c.nodes {
		if n.ID == s || n.Base == s {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w: target %q is none of the endpoints' nodes", ErrConfig, spec)
}

// byID maps node ids to indexes.
func (c *cluster) byID() map[string]int {
	m := make(map[string]int, len(c.nodes))
	for i, n := range c.nodes {
		m[n.ID] = i
	}
	return m
}

// wsOrder lists every WebSocket URL starting at node first, so a client
// connects there and fails over to the others in turn.
func (c *cluster) wsOrder(first int) []string {
	out := make([]string, 0, len(c.nodes))
	for k := range c.nodes {
		out = append(out, c.nodes[(first+k)%len(c.nodes)].WS)
	}
	return out
}

// do performs one request and returns the status and body.
func (c *cluster) do(ctx context.Context, method, url, key string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, b, nil
}

// connections reads switchboard_gateway_connections from a node's /metrics.
func (c *cluster) connections(ctx context.Context, base string) (int64, error) {
	st, body, err := c.do(ctx, http.MethodGet, base+"/metrics", "", nil)
	if err != nil {
		return 0, fmt.Errorf("%w: %s/metrics: %w", ErrCluster, base, err)
	}
	if st != http.StatusOK {
		return 0, fmt.Errorf("%w: %s/metrics answered %d", ErrCluster, base, st)
	}
	v, ok := metricValue(body, "switchboard_gateway_connections")
	if !ok {
		return 0, fmt.Errorf("%w: %s/metrics has no switchboard_gateway_connections", ErrCluster, base)
	}
	return int64(v), nil
}

// metricValue sums the samples of one metric in Prometheus text format.
func metricValue(text []byte, name string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a comment, another metric, or a longer name
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// owner reads a user's owner from GET /v1/sessions/{user}.
func (c *cluster) owner(ctx context.Context, adminBase, user string) (string, error) {
	st, body, err := c.do(ctx, http.MethodGet, adminBase+"/v1/sessions/"+user, c.adminKey, nil)
	if err != nil {
		return "", fmt.Errorf("%w: session %s: %w", ErrCluster, user, err)
	}
	var s protocol.Session
	if st != http.StatusOK || json.Unmarshal(body, &s) != nil {
		return "", fmt.Errorf("%w: session %s answered %d %s", ErrCluster, user, st, bytes.TrimSpace(body))
	}
	return s.Owner, nil
}

// drainer returns a Trigger that asks the cluster to drain node target.
func (c *cluster) drainer(target int) Trigger {
	return c.adminTrigger(target, "drain", "/drain", []byte("{}"))
}

// injector returns a Trigger that asks the cluster to inject fault f into
// node target (POST /v1/nodes/{id}/faults).
func (c *cluster) injector(target int, f protocol.Fault) Trigger {
	body, _ := json.Marshal(f)
	return c.adminTrigger(target, f.Kind, "/faults", body)
}

// adminTrigger posts body to /v1/nodes/{target}{path} through another
// node first (as an operator elsewhere would), then through the target
// itself; 202 is success.
func (c *cluster) adminTrigger(target int, what, path string, body []byte) Trigger {
	return func(ctx context.Context, _ string) error {
		id := c.nodes[target].ID
		var last error
		for k := 1; k <= len(c.nodes); k++ {
			via := c.nodes[(target+k)%len(c.nodes)]
			st, answer, err := c.do(ctx, http.MethodPost, via.Admin+"/v1/nodes/"+id+path, c.adminKey, body)
			if err == nil && st == http.StatusAccepted {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("answered %d %s", st, bytes.TrimSpace(answer))
				if st == http.StatusForbidden || st == http.StatusBadRequest {
					// The target's answer: asking elsewhere will not change it.
					return fmt.Errorf("%w: %s %s via %s: %w", ErrTrigger, what, id, via.ID, err)
				}
			}
			last = fmt.Errorf("%s %s via %s: %w", what, id, via.ID, err)
		}
		return fmt.Errorf("%w: %w", ErrTrigger, last)
	}
}

// trigger returns the Trigger that takes node target away with cfg's
// fault, or nil for none (Storm's operator mode).
func (c *cluster) trigger(cfg *Config, target int) Trigger {
	switch cfg.Fault {
	case FaultDrain:
		return c.drainer(target)
	case FaultCrash:
		return c.injector(target, protocol.Fault{Kind: protocol.FaultCrash})
	case FaultIsolate:
		return c.injector(target, protocol.Fault{Kind: protocol.FaultIsolate, DurationMS: cfg.IsolateFor.Milliseconds()})
	}
	return cfg.Trigger
}

// ownerLookups bounds concurrent GET /v1/sessions requests.
const ownerLookups = 16

// owners reads the registry owner of each named user through the admin
// API of the nodes in via, trying them in turn; a user whose lookup fails
// everywhere is left out.
func (c *cluster) owners(ctx context.Context, users []string, via []int) map[string]string {
	out := make(map[string]string, len(users))
	var mu sync.Mutex
	sem := make(chan struct{}, ownerLookups)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for _, i := range via {
				if o, err := c.owner(ctx, c.nodes[i].Admin, u); err == nil {
					mu.Lock()
					out[u] = o
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// mostOwned returns the index of the node that owns the most of users
// (the first such node on a tie), or an error when no owner is known.
func (c *cluster) mostOwned(owners map[string]string) (int, int, error) {
	count := map[string]int{}
	for _, o := range owners {
		count[o]++
	}
	best, most := -1, 0
	for i, n := range c.nodes {
		if count[n.ID] > most {
			best, most = i, count[n.ID]
		}
	}
	if best < 0 {
		return -1, 0, fmt.Errorf("%w: no drill user has a known owner among the endpoints' nodes", ErrCluster)
	}
	return best, most, nil
}
