package load

import (
	"context"
	"time"
)

// StormReport is the result of Storm.
type StormReport struct {
	Scenario string `json:"scenario"`
	Users    int    `json:"users"`
	Target   string `json:"target"`
	// Trigger is "kill", "drain" or "operator" (the first disconnect
	// started the clock).
	Trigger      string  `json:"trigger"`
	TriggerError string  `json:"trigger_error,omitempty"`
	ConnectMS    float64 `json:"connect_ms"`
	// StormMS is the time from the trigger until the last user was
	// welcomed again; ClaimsPerS is the re-welcomed users over it.
	StormMS        float64 `json:"storm_ms"`
	ClaimsPerS     float64 `json:"claims_per_s"`
	NotRewelcomed  int     `json:"not_rewelcomed"`
	OnTargetBefore int     `json:"on_target_before"`
	// ConnectFailed users never got their first welcome and take no part.
	ConnectFailed int    `json:"connect_failed"`
	ConnectError  string `json:"connect_error,omitempty"`
	Failover
}

// Storm connects Users users to the target node, takes the target away
// (Trigger, Drain, or the operator) and measures how long it takes until
// every user is welcomed again on another node, and how many resumed.
func Storm(ctx context.Context, cfg Config) (StormReport, error) {
	r, err := begin(ctx, "storm", cfg, false, true)
	if err != nil {
		return StormReport{}, err
	}
	defer r.end()
	cl := r.cl
	target, err := cl.index(r.cfg.Target)
	if err != nil {
		return StormReport{}, err
	}
	rep := StormReport{Scenario: "storm", Users: r.cfg.Users, Target: cl.nodes[target].ID}
	trigger := cl.trigger(&r.cfg, target)
	rep.Trigger = r.cfg.Fault
	if trigger == nil {
		rep.Trigger = "operator"
	}
	f := newFleet(&r.cfg, nil)
	f.operatorMode = trigger == nil
	defer f.close()
	rewelcomed := func() int64 {
		return sumUsers(f, func(u *user) int64 {
			if u.postWelcomeAt.Load() != 0 {
				return 1
			}
			return 0
		})
	}
	r.startProgress(func(p *Progress) {
		p.Connected = f.connected.Load()
		p.Delivered = rewelcomed() // re-welcomed users, in the storm phase
	})

	r.setPhase("connect")
	t0 := time.Now()
	err = f.connect(ctx, func(int) []string { return cl.wsOrder(target) })
	if err := tolerate(err, &rep.ConnectFailed, &rep.ConnectError); err != nil {
		return StormReport{}, err
	}
	rep.ConnectMS = ms(time.Since(t0))
	rep.OnTargetBefore = f.firstNodes()[cl.nodes[target].ID]

	var start int64
	if trigger != nil {
		r.setPhase("trigger")
		start = time.Now().UnixNano()
		f.mark.Store(start)
		if err := trigger(ctx, cl.nodes[target].ID); err != nil {
			rep.TriggerError = err.Error()
			return rep, err
		}
	} else {
		r.setPhase("waiting for the operator")
		if !waitFor(ctx, r.cfg.Duration, func() bool { return f.firstDrop.Load() != 0 }) {
			rep.NotRewelcomed = int(f.connected.Load())
			return rep, nil
		}
		start = f.firstDrop.Load()
	}
	r.setPhase("storm")
	waitFor(ctx, r.cfg.Duration, func() bool { return rewelcomed() == f.connected.Load() })
	r.setPhase("done")
	rep.Failover = f.failover(start)
	rep.NotRewelcomed = int(f.connected.Load()) - rep.Rewelcomed
	rep.StormMS = rep.LastRewelcome
	if rep.StormMS > 0 {
		rep.ClaimsPerS = round3(float64(rep.Rewelcomed) / (rep.StormMS / 1000))
	}
	return rep, nil
}
