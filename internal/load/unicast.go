package load

import (
	"context"
	"time"

	"github.com/switchboard/switchboard/client"
)

// ownerChecks is how many users' owners are checked against the registry
// when the admin key is known.
const ownerChecks = 20

// UnicastReport is the result of Unicast.
type UnicastReport struct {
	Scenario      string  `json:"scenario"`
	Users         int     `json:"users"`
	Rate          float64 `json:"rate"`
	Batch         int     `json:"batch"`
	TickMs        float64 `json:"tick_ms"`
	PublishMS     float64 `json:"publish_ms"`
	AckedPerS     float64 `json:"acked_per_s"`
	DeliveredPerS float64 `json:"delivered_per_s"`
	// Latency is delivery time − intended send time (open loop);
	// AckLatency is acknowledgement time − intended send time.
	Latency    Latency `json:"latency_ms"`
	AckLatency Latency `json:"ack_latency_ms"`
	Accounting
	PublishStats
	// OwnerMismatch counts checked users whose registry owner was not the
	// node of their welcome.
	OwnerMismatch int `json:"owner_mismatch"`
	// PublishTo says where publishes went: nodes other than each user's
	// owner, or, with one endpoint, the owner itself.
	PublishTo    string `json:"publish_to"`
	OwnerChecked int    `json:"owner_checked"`
}

// Unicast connects Users users (one connection each, spread over the
// nodes) and publishes to them at Rate through the batch API, always to a
// node other than the user's owner (the node itself when there is only
// one), then waits up to Grace for every
// acknowledged message.
func Unicast(ctx context.Context, cfg Config) (UnicastReport, error) {
	r, err := begin(ctx, "unicast", cfg, true, false)
	if err != nil {
		return UnicastReport{}, err
	}
	defer r.end()
	cl := r.cl
	tr := &tracker{}
	f := newFleet(&r.cfg, func(u *user, m client.Message, now time.Time) { tr.deliver(u.idx, m, now) })
	defer f.close()

	r.setPhase("connect")
	if err := f.connect(ctx, func(i int) []string { return cl.wsOrder(i % len(cl.nodes)) }); err != nil {
		return UnicastReport{}, err
	}

	// A user's first connection claims its stream where it lands, so the
	// welcome's node is the owner.
	byID := cl.byID()
	owners := make([]int, len(f.users))
	for i, u := range f.users {
		owners[i] = i % len(cl.nodes)
		if p := u.firstNode.Load(); p != nil {
			if k, ok := byID[*p]; ok {
				owners[i] = k
			}
		}
	}
	rep := UnicastReport{Scenario: "unicast", Users: r.cfg.Users, Rate: r.cfg.Rate, Batch: r.cfg.Batch, TickMs: ms(r.cfg.Tick)}
	if r.cfg.AdminKey != "" {
		for i := 0; i < min(ownerChecks, len(f.users)); i++ {
			o, err := cl.owner(ctx, cl.nodes[0].Admin, f.users[i].name)
			if err != nil {
				r.cfg.Logger.Warn("owner check", "component", "sbload", "err", err)
				continue
			}
			rep.OwnerChecked++
			if k, ok := byID[o]; !ok || k != owners[i] {
				rep.OwnerMismatch++
			}
		}
	}
	others := make([][]int, len(cl.nodes))
	rep.PublishTo = "other nodes"
	for o := range cl.nodes {
		for k := 1; k < len(cl.nodes); k++ {
			others[o] = append(others[o], (o+k)%len(cl.nodes))
		}
	}
	if len(cl.nodes) == 1 {
		// One node: it is every user's owner and takes every publish.
		others[0], rep.PublishTo = []int{0}, "the owner (one node)"
	}
	p := newPublisher(&r.cfg, cl, tr, func(u int) []int { return others[owners[u]] })
	r.startProgress(func(pr *Progress) {
		pr.Connected, pr.Sent = f.connected.Load(), p.sent.Load()
		pr.Acked, pr.Delivered = tr.acked.Load(), tr.delivered.Load()
		pr.Errors = p.s503.Load() + p.netErr.Load() + p.itemErr.Load() + p.other.Load()
	})

	r.setPhase("publish")
	elapsed := p.run(ctx, time.Now().Add(r.cfg.Duration))
	r.setPhase("grace")
	waitFor(ctx, r.cfg.Grace, func() bool { return tr.undelivered() == 0 })
	r.setPhase("done")

	rep.PublishMS = ms(elapsed)
	rep.Accounting = tr.account(len(f.users), r.cfg.userName, func(u int) bool { return f.users[u].continuityLost.Load() > 0 })
	rep.Accounting.OutOfOrder += sumUsers(f, func(u *user) int64 { return u.regressEvents.Load() })
	rep.Accounting.Gaps += sumUsers(f, func(u *user) int64 {
		if u.continuityLost.Load() > 0 {
			return u.gapEvents.Load()
		}
		return 0
	})
	rep.AckedPerS = perSecond(rep.Acked, elapsed)
	rep.DeliveredPerS = perSecond(rep.Delivered, elapsed)
	rep.Latency, rep.AckLatency = tr.latency.Summary(), tr.ackLatency.Summary()
	rep.PublishStats = p.stats()
	return rep, nil
}

// sumUsers adds fn over every user.
func sumUsers(f *fleet, fn func(*user) int64) int64 {
	var n int64
	for _, u := range f.users {
		n += fn(u)
	}
	return n
}
