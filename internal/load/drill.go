package load

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard/switchboard/client"
)

// ownerWatchMax bounds how many of the target's users are watched for a
// new owner after the trigger (GET /v1/sessions each, every
// ownerWatchEvery until it changes).
const (
	ownerWatchMax   = 100
	ownerWatchEvery = 100 * time.Millisecond
)

// DrillReport is the result of Drill, and what `sbctl drill --json`, `sbload
// --scenario drill` and the node's drill runner (GET /v1/drills/{id})
// print. The names of DESIGN.md §6 are at the top level: users, acked,
// lost, duplicated, gaps, out_of_order, resumed, continuity_lost,
// rto_p50_ms, rto_p99_ms, rto_max_ms. Lost, Duplicated, Gaps and
// OutOfOrder must be 0 for the guarantees G1–G3 to hold through the
// failure.
type DrillReport struct {
	Scenario string  `json:"scenario"`
	Users    int     `json:"users"`
	Rate     float64 `json:"rate"`
	Target   string  `json:"target"`
	// Trigger is the fault: kill, drain, crash or isolate; KillAtMS is
	// when it fired, from the start of publishing.
	Trigger      string  `json:"trigger"`
	TriggerError string  `json:"trigger_error,omitempty"`
	KillAtMS     float64 `json:"kill_at_ms"`
	PublishMS    float64 `json:"publish_ms"`
	// OnTargetBefore counts users whose first welcome came from the
	// target; Affected those connected to it when the trigger fired.
	OnTargetBefore int `json:"on_target_before"`
	Affected       int `json:"affected"`
	// RTO of the users welcomed again after the trigger: from the trigger
	// to their first message after the new welcome (Failover.RTO whole).
	RTOP50 float64 `json:"rto_p50_ms"`
	RTOP99 float64 `json:"rto_p99_ms"`
	RTOMax float64 `json:"rto_max_ms"`
	// NewOwnerMS is the time from the trigger until the registry named
	// another owner for every watched user the target owned (up to 100 of
	// them, GET /v1/sessions polled every 100 ms), NewOwnerP50MS the
	// median of the users' times; NewOwnerMissing counts watched users
	// still owned by the target at the end.
	NewOwnerMS      float64 `json:"new_owner_ms"`
	NewOwnerP50MS   float64 `json:"new_owner_p50_ms"`
	NewOwnerWatched int     `json:"new_owner_watched"`
	NewOwnerMissing int     `json:"new_owner_missing"`
	Accounting
	Failover
	PublishStats
	Latency    Latency `json:"latency_ms"`
	AckLatency Latency `json:"ack_latency_ms"`
}

// Violated reports whether the drill found a broken guarantee: a lost,
// duplicated, gapped or reordered message.
func (r DrillReport) Violated() bool {
	return r.Lost > 0 || r.Duplicated > 0 || r.Gaps > 0 || r.OutOfOrder > 0
}

// CheckDrill reports what is wrong with cfg for Drill, as Drill would,
// without running anything.
func CheckDrill(cfg Config) error {
	cfg, err := cfg.normalize(true, true)
	if err == nil && cfg.Fault == "" {
		err = fmt.Errorf("%w: a drill needs a fault: a trigger (kill), drain, crash or isolate", ErrConfig)
	}
	return err
}

// Drill is the failover drill: Users users connect spread over every
// node (user i first to node i mod N, failing over to the others in
// turn), messages are published at Rate through the nodes other than the
// target (retried with the same id on 503 and network errors), the
// target is taken away (Config.Fault: killed, drained, crashed or
// isolated) At after publishing starts, and publishing goes on until
// Duration. With Target AutoTarget, the target is the node that owns the
// most drill users once they connected. Every client fails over with the
// SDK (all endpoints, resume with its last seq). The report accounts for
// every message and gives per-user RTO (from the trigger to the first
// message after the user's new welcome) and the time to a new owner.
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
	if r.cfg.Fault == "" {
		return DrillReport{}, fmt.Errorf("%w: a drill needs a fault: a trigger (kill), drain, crash or isolate", ErrConfig)
	}
	rep := DrillReport{Scenario: "drill", Users: r.cfg.Users, Rate: r.cfg.Rate, Trigger: r.cfg.Fault}

	tr := &tracker{}
	f := newFleet(&r.cfg, func(u *user, m client.Message, now time.Time) { tr.deliver(u.idx, m, now) })
	defer f.close()
	r.setPhase("connect")
	// The figures progress shows grow with the run: connections first,
	// then the publisher's.
	var progress atomic.Pointer[func(*Progress)]
	connecting := func(pr *Progress) { pr.Connected = f.connected.Load() }
	progress.Store(&connecting)
	r.startProgress(func(pr *Progress) { (*progress.Load())(pr) })
	if err := f.connect(ctx, func(i int) []string { return cl.wsOrder(i % len(cl.nodes)) }); err != nil {
		return DrillReport{}, err
	}

	// Who owns whom, before the fault: to choose the target, and to watch
	// its users move.
	r.setPhase("owners")
	names := make([]string, len(f.users))
	for i, u := range f.users {
		names[i] = u.name
	}
	all := make([]int, len(cl.nodes))
	for i := range all {
		all[i] = i
	}
	owners := cl.owners(ctx, names, all)
	if target < 0 {
		if target, _, err = cl.mostOwned(owners); err != nil {
			return DrillReport{}, err
		}
	}
	rep.Target = cl.nodes[target].ID
	trigger := cl.trigger(&r.cfg, target)
	rep.OnTargetBefore = f.firstNodes()[rep.Target]
	var watched []string
	for _, u := range names {
		if owners[u] == rep.Target && len(watched) < ownerWatchMax {
			watched = append(watched, u)
		}
	}
	rep.NewOwnerWatched = len(watched)

	var survivors []int
	for k := 1; k < len(cl.nodes); k++ {
		survivors = append(survivors, (target+k)%len(cl.nodes))
	}
	p := newPublisher(&r.cfg, cl, tr, func(int) []int { return survivors })
	publishing := func(pr *Progress) {
		pr.Connected, pr.Sent = f.connected.Load(), p.sent.Load()
		pr.Acked, pr.Delivered = tr.acked.Load(), tr.delivered.Load()
		pr.Errors = p.s503.Load() + p.netErr.Load() + p.itemErr.Load() + p.other.Load()
	}
	progress.Store(&publishing)

	r.setPhase("publish")
	start := time.Now()
	done := make(chan time.Duration, 1)
	go func() { done <- p.run(ctx, start.Add(r.cfg.Duration)) }()

	var (
		elapsed  time.Duration
		affected []*user // on the target when the trigger fired
		moved    *ownerWatch
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
		moved = watchOwners(ctx, cl, survivors, watched, rep.Target, mark)
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
		return moved == nil || moved.pending() == 0
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
		rep.RTOP50, rep.RTOP99, rep.RTOMax = rep.RTO.P50, rep.RTO.P99, rep.RTO.Max
	}
	if moved != nil {
		times := moved.stop()
		rep.NewOwnerMissing = len(watched) - int(times.Count)
		rep.NewOwnerMS, rep.NewOwnerP50MS = times.Max, times.P50
	}
	rep.PublishStats = p.stats()
	rep.Latency, rep.AckLatency = tr.latency.Summary(), tr.ackLatency.Summary()
	return rep, nil
}

// ownerWatch polls the registry, through the surviving nodes, for the
// users the target owned, and records when each got another owner.
type ownerWatch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	left  map[string]bool
	times Histogram
}

func watchOwners(ctx context.Context, cl *cluster, via []int, users []string, target string, mark time.Time) *ownerWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &ownerWatch{cancel: cancel, left: map[string]bool{}}
	for _, u := range users {
		w.left[u] = true
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(ownerWatchEvery)
		defer t.Stop()
		for w.pending() > 0 {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			w.mu.Lock()
			var left []string
			for u := range w.left {
				left = append(left, u)
			}
			w.mu.Unlock()
			now := time.Now()
			for u, o := range cl.owners(ctx, left, via) {
				if o != "" && o != target {
					w.mu.Lock()
					if w.left[u] {
						delete(w.left, u)
						w.times.Record(int64(now.Sub(mark)))
					}
					w.mu.Unlock()
				}
			}
		}
	}()
	return w
}

func (w *ownerWatch) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.left)
}

// stop ends the watch and returns the users' times to a new owner.
func (w *ownerWatch) stop() Latency {
	w.cancel()
	w.wg.Wait()
	return w.times.Summary()
}

// WriteText prints the report for a person: the guarantees first, then
// the failover times.
func (r DrillReport) WriteText(out io.Writer) error {
	verdict := "PASS: no acknowledged message lost, duplicated, gapped or reordered"
	if r.Violated() {
		verdict = "FAIL: a guarantee was broken (lost, duplicated, gaps or out of order above 0)"
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "drill\t%s of %s, %d users, %.0f msg/s, fault at %.1f s\n", r.Trigger, r.Target, r.Users, r.Rate, r.KillAtMS/1000)
	if r.TriggerError != "" {
		fmt.Fprintf(w, "fault error\t%s\n", r.TriggerError)
	}
	fmt.Fprintf(w, "messages\t%d published, %d acked, %d delivered, %d unacked\n", r.Published, r.Acked, r.Delivered, r.Unacked)
	fmt.Fprintf(w, "lost\t%d\n", r.Lost)
	fmt.Fprintf(w, "duplicated\t%d\n", r.Duplicated)
	fmt.Fprintf(w, "gaps\t%d\n", r.Gaps)
	fmt.Fprintf(w, "out of order\t%d\n", r.OutOfOrder)
	fmt.Fprintf(w, "users on the target\t%d at the fault, %d welcomed again, %d resumed, %d continuity lost\n", r.Affected, r.Rewelcomed, r.Resumed, r.ContinuityLost)
	fmt.Fprintf(w, "RTO (ms)\tp50 %.0f, p99 %.0f, max %.0f\n", r.RTOP50, r.RTOP99, r.RTOMax)
	if r.NewOwnerWatched > 0 {
		fmt.Fprintf(w, "new owner (ms)\tp50 %.0f, all %.0f (%d users watched, %d never moved)\n", r.NewOwnerP50MS, r.NewOwnerMS, r.NewOwnerWatched, r.NewOwnerMissing)
	}
	fmt.Fprintf(w, "delivery latency (ms)\tp50 %.1f, p99 %.1f, max %.1f\n", r.Latency.P50, r.Latency.P99, r.Latency.Max)
	fmt.Fprintf(w, "verdict\t%s\n", verdict)
	return w.Flush()
}
