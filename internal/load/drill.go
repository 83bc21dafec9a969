package load

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard/switchboard/client"
)

// DrillReport is the result of Drill. Lost, Duplicated and Gaps must be 0
// for the guarantees G1–G3 to hold through the failure.
type DrillReport struct {
	Scenario string  `json:"scenario"`
	Users    int     `json:"users"`
	Rate     float64 `json:"rate"`
	Target   string  `json:"target"`
	// Trigger is "kill" or "drain"; KillAtMS is when it fired, from the
	// start of publishing.
	Trigger      string  `json:"trigger"`
	TriggerError string  `json:"trigger_error,omitempty"`
	KillAtMS     float64 `json:"kill_at_ms"`
	PublishMS    float64 `json:"publish_ms"`
	// OnTargetBefore counts users whose first welcome came from the
	// target; Affected those connected to it when the trigger fired.
	OnTargetBefore int `json:"on_target_before"`
	Affected       int `json:"affected"`
	Accounting
	Failover
	PublishStats
	Latency    Latency `json:"latency_ms"`
	AckLatency Latency `json:"ack_latency_ms"`
}

// Drill is the failover drill: Users users connect spread over every
// node (user i first to node i mod N, failing over to the others in
// turn), messages are published at Rate through the nodes other than the
// target (retried with the same id on 503 and network errors), the target
// is killed or drained At after publishing starts, and publishing goes on
// until Duration. With Target AutoTarget, the target is the node that
// owns the most drill users once they connected. Every client fails over
// with the SDK (all endpoints, resume with its last seq). The report
// accounts for every message and gives per-user RTO: the time from the
// trigger to the first message after the user's new welcome.
func Drill(ctx context.Context, cfg Config) (DrillReport, error) {
	r, err := begin(ctx, "drill", cfg, true, true)
	if err != nil {
		return DrillReport{}, err
	}
	defer r.end()
	cl := r.cl
	target := -1
	if r.cfg.Target != AutoTarget {
		if target, err = cl.index(r.cfg.Target); err != nil {
			return DrillReport{}, err
		}
	}
	rep := DrillReport{Scenario: "drill", Users: r.cfg.Users, Rate: r.cfg.Rate}
	trigger := r.cfg.Trigger
	switch {
	case trigger != nil:
		rep.Trigger = "kill"
	case r.cfg.Drain:
		rep.Trigger = "drain"
	default:
		return DrillReport{}, fmt.Errorf("%w: a drill needs a trigger (kill) or drain", ErrConfig)
	}

	tr := &tracker{}
	f := newFleet(&r.cfg, func(u *user, m client.Message, now time.Time) { tr.deliver(u.idx, m, now) })
	defer f.close()
	r.setPhase("connect")
	if err := f.connect(ctx, func(i int) []string { return cl.wsOrder(i % len(cl.nodes)) }); err != nil {
		return DrillReport{}, err
	}
	if target < 0 {
		r.setPhase("choose target")
		names := make([]string, len(f.users))
		for i, u := range f.users {
			names[i] = u.name
		}
		all := make([]int, len(cl.nodes))
		for i := range all {
			all[i] = i
		}
		if target, _, err = cl.mostOwned(cl.owners(ctx, names, all)); err != nil {
			return DrillReport{}, err
		}
	}
	rep.Target = cl.nodes[target].ID
	if r.cfg.Drain {
		trigger = cl.drainer(target)
	}
	rep.OnTargetBefore = f.firstNodes()[cl.nodes[target].ID]

	var survivors []int
	for k := 1; k < len(cl.nodes); k++ {
		survivors = append(survivors, (target+k)%len(cl.nodes))
	}
	p := newPublisher(&r.cfg, cl, tr, func(int) []int { return survivors })
	r.startProgress(func(pr *Progress) {
		pr.Connected, pr.Sent = f.connected.Load(), p.sent.Load()
		pr.Acked, pr.Delivered = tr.acked.Load(), tr.delivered.Load()
		pr.Errors = p.s503.Load() + p.netErr.Load() + p.itemErr.Load() + p.other.Load()
	})

	r.setPhase("publish")
	start := time.Now()
	done := make(chan time.Duration, 1)
	go func() { done <- p.run(ctx, start.Add(r.cfg.Duration)) }()

	var (
		elapsed  time.Duration
		affected []*user // on the target when the trigger fired
	)
	kill := time.NewTimer(r.cfg.At)
	defer kill.Stop()
	select {
	case elapsed = <-done: // the run ended before the kill time
	case <-kill.C:
		r.setPhase("trigger")
		mark := time.Now()
		f.mark.Store(mark.UnixNano())
		rep.KillAtMS = ms(mark.Sub(start))
		affected = f.onNode(rep.Target)
		rep.Affected = len(affected)
		if err := trigger(ctx, rep.Target); err != nil {
			rep.TriggerError = err.Error()
			r.cfg.Logger.Error("trigger failed", "component", "sbload", "err", err)
		}
		r.setPhase("publish after trigger")
		elapsed = <-done
	}

	r.setPhase("grace")
	mark := f.mark.Load()
	waitFor(ctx, r.cfg.Grace, func() bool {
		if tr.undelivered() != 0 {
			return false
		}
		for _, u := range affected {
			if u.postWelcomeAt.Load() == 0 {
				return false
			}
		}
		return true
	})
	r.setPhase("done")

	rep.PublishMS = ms(elapsed)
	lost := func(u int) bool { return f.users[u].continuityLost.Load() > 0 }
	rep.Accounting = tr.account(len(f.users), r.cfg.userName, lost)
	rep.Accounting.OutOfOrder += sumUsers(f, func(u *user) int64 { return u.regressEvents.Load() })
	rep.Accounting.Gaps += sumUsers(f, func(u *user) int64 {
		if u.continuityLost.Load() > 0 {
			return u.gapEvents.Load()
		}
		return 0
	})
	if mark != 0 {
		rep.Failover = f.failover(mark)
	}
	rep.PublishStats = p.stats()
	rep.Latency, rep.AckLatency = tr.latency.Summary(), tr.ackLatency.Summary()
	return rep, nil
}
