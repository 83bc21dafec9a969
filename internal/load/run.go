package load

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// progressEvery is how often Config.Progress is called.
const progressEvery = time.Second

// pollEvery is how often end conditions are checked.
const pollEvery = 20 * time.Millisecond

// runner holds what every scenario shares: the config, the cluster, the
// phase and the progress reporter.
type runner struct {
	cfg      Config
	cl       *cluster
	scenario string
	start    time.Time
	phase    atomic.Pointer[string]

	stopProgress context.CancelFunc
	progressDone sync.WaitGroup
}

// begin validates cfg and resolves the endpoints' node ids.
func begin(ctx context.Context, scenario string, cfg Config, publish, target bool) (*runner, error) {
	cfg, err := cfg.normalize(publish, target)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, cl: newCluster(&cfg), scenario: scenario, start: time.Now()}
	r.setPhase("resolve")
	if err := r.cl.resolve(ctx, cfg.Endpoints, cfg.AdminEndpoints); err != nil {
		r.cl.close()
		return nil, err
	}
	r.cfg.Logger.Info("cluster resolved", "component", "sbload", "scenario", scenario, "nodes", len(r.cl.nodes), "users", cfg.Users)
	return r, nil
}

func (r *runner) setPhase(p string) {
	r.phase.Store(&p)
	r.cfg.Logger.Info("phase", "component", "sbload", "scenario", r.scenario, "phase", p, "elapsed", time.Since(r.start).Round(time.Millisecond))
}

// startProgress calls Config.Progress every second with snap's figures
// until end.
func (r *runner) startProgress(snap func(*Progress)) {
	if r.cfg.Progress == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stopProgress = cancel
	r.progressDone.Add(1)
	go func() {
		defer r.progressDone.Done()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p := Progress{Scenario: r.scenario, Phase: *r.phase.Load(), Elapsed: time.Since(r.start)}
				snap(&p)
				r.cfg.Progress(p)
			}
		}
	}()
}

// end stops the progress reporter and releases HTTP connections.
func (r *runner) end() {
	if r.stopProgress != nil {
		r.stopProgress()
		r.progressDone.Wait()
	}
	r.cl.close()
}

// waitFor polls cond until it holds, timeout passes or ctx is done, and
// reports whether it held.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round3(float64(n) / d.Seconds())
}
