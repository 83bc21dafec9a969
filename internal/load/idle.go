package load

import (
	"context"
	"time"
)

// settle lets freshly opened connections finish their setup (welcome,
// registry writes) before memory and CPU are sampled.
const settle = 2 * time.Second

// IdleNode is one node's figures in an Idle run.
type IdleNode struct {
	ID string `json:"id"`
	// ConnectionsBefore and Connections are switchboard_gateway_connections
	// before the users connected and at the end of the hold.
	ConnectionsBefore int64 `json:"connections_before"`
	Connections       int64 `json:"connections"`
	// Memory and CPU, only for nodes with a local PID.
	PID       int   `json:"pid,omitempty"`
	RSSBefore int64 `json:"rss_before_bytes,omitempty"`
	RSS       int64 `json:"rss_bytes,omitempty"`
	// BytesPerConn is the RSS growth divided by the connection growth;
	// RSSPerConn is the whole RSS divided by all connections.
	BytesPerConn float64 `json:"bytes_per_conn,omitempty"`
	RSSPerConn   float64 `json:"rss_per_conn,omitempty"`
	// CPUPercent is the node's CPU use while holding the idle connections
	// (100 = one core).
	CPUPercent float64 `json:"cpu_percent_idle,omitempty"`
	Err        string  `json:"error,omitempty"`
}

// IdleReport is the result of Idle.
type IdleReport struct {
	Scenario  string `json:"scenario"`
	Users     int    `json:"users"`
	Connected int64  `json:"connected"`
	// ConnectFailed users never got a welcome; ConnectError is the first
	// reason.
	ConnectFailed int        `json:"connect_failed"`
	ConnectError  string     `json:"connect_error,omitempty"`
	ConnectMS     float64    `json:"connect_ms"`
	ConnectRate   float64    `json:"connects_per_s"`
	HoldMS        float64    `json:"hold_ms"`
	Nodes         []IdleNode `json:"nodes"`
}

// Idle opens Users connections spread round-robin over the endpoints,
// holds them for Duration, and reports each node's connection count and,
// for nodes with a PID, memory per connection and idle CPU.
func Idle(ctx context.Context, cfg Config) (IdleReport, error) {
	r, err := begin(ctx, "idle", cfg, false, false)
	if err != nil {
		return IdleReport{}, err
	}
	defer r.end()
	cl := r.cl
	f := newFleet(&r.cfg, nil)
	defer f.close()
	r.startProgress(func(p *Progress) { p.Connected = f.connected.Load() })

	nodes := make([]IdleNode, len(cl.nodes))
	sampleRSS := func(i int) int64 {
		pid := nodes[i].PID
		if pid == 0 {
			return 0
		}
		v, err := procRSS(pid)
		if err != nil {
			nodes[i].Err = err.Error()
		}
		return v
	}
	for i, n := range cl.nodes {
		nodes[i].ID = n.ID
		nodes[i].PID = r.cfg.PIDs[n.ID]
		c, err := cl.connections(ctx, n.Base)
		if err != nil {
			return IdleReport{}, err
		}
		nodes[i].ConnectionsBefore = c
		nodes[i].RSSBefore = sampleRSS(i)
	}

	r.setPhase("connect")
	t0 := time.Now()
	err = f.connect(ctx, func(i int) []string { return cl.wsOrder(i % len(cl.nodes)) })
	connectTime := time.Since(t0)
	var failed int
	var failMsg string
	if err := tolerate(err, &failed, &failMsg); err != nil {
		return IdleReport{}, err
	}

	r.setPhase("hold")
	sleepCtx(ctx, settle)
	cpu0 := make([]int64, len(nodes))
	for i := range nodes {
		if nodes[i].PID != 0 {
			cpu0[i], _ = procCPUTicks(nodes[i].PID)
		}
	}
	h0 := time.Now()
	sleepCtx(ctx, r.cfg.Duration)
	hold := time.Since(h0)
	for i := range nodes {
		if pid := nodes[i].PID; pid != 0 {
			if c1, err := procCPUTicks(pid); err == nil {
				nodes[i].CPUPercent = round3(float64(c1-cpu0[i]) / clockTicks / hold.Seconds() * 100)
			}
		}
		nodes[i].RSS = sampleRSS(i)
		c, err := cl.connections(ctx, cl.nodes[i].Base)
		if err != nil {
			nodes[i].Err = err.Error()
		}
		nodes[i].Connections = c
		if d := c - nodes[i].ConnectionsBefore; d > 0 && nodes[i].RSS > 0 {
			nodes[i].BytesPerConn = round3(float64(nodes[i].RSS-nodes[i].RSSBefore) / float64(d))
		}
		if c > 0 && nodes[i].RSS > 0 {
			nodes[i].RSSPerConn = round3(float64(nodes[i].RSS) / float64(c))
		}
	}
	r.setPhase("done")
	return IdleReport{
		Scenario:      "idle",
		Users:         r.cfg.Users,
		Connected:     f.connected.Load(),
		ConnectFailed: failed,
		ConnectError:  failMsg,
		ConnectMS:     ms(connectTime),
		ConnectRate:   perSecond(f.connected.Load(), connectTime),
		HoldMS:        ms(hold),
		Nodes:         nodes,
	}, nil
}
