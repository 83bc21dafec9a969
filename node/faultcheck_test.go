package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/session"
)

// The fault tests' workload and its checks of G1–G4 are
// internal/faultload's, shared with the multi-process tests; what stays
// here reaches into a node (its registry hook), which the contract does
// not expose.

// registryCheck runs linearizability clients against the registry
// hook (node.Registry) of every running node while a fault test runs, and
// checks their history with the model of linearizability_test.go. Users
// are its own, so the broker's claims do not interleave with them.
type registryCheck struct {
	t       *testing.T
	c       *clustertest.Cluster
	stop    context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	history []porcupine.Operation
	counts  [3]int
}

// startRegistryCheck starts workers registry clients on their own users.
func startRegistryCheck(t *testing.T, c *clustertest.Cluster, workers int) *registryCheck {
	seed := rand.Uint64()
	t.Logf("registry check seed %d", seed)
	users := []string{"lin-f0", "lin-f1", "lin-f2", "lin-f3", "lin-f4", "lin-f5"}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &registryCheck{t: t, c: c, stop: cancel}
	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }
	for i := range workers {
		lw := &linWorker{id: i, name: fmt.Sprintf("fw%d", i), rng: rand.New(rand.NewPCG(seed, uint64(i))), users: users, known: map[string]uint64{}}
		rc.wg.Add(1)
		go func() {
			defer rc.wg.Done()
			for ctx.Err() == nil {
				ids := c.Running()
				nd := c.Node(ids[lw.rng.IntN(len(ids))])
				if nd == nil {
					continue
				}
				in := lw.next()
				octx, ocancel := context.WithTimeout(context.Background(), 3*time.Second)
				call := now()
				var out regOutput
				var err error
				if in.Kind == opRead {
					var e session.Entry
					var ok bool
					e, ok, err = nd.Registry().Read(octx, in.User)
					out = regOutput{Code: codeOK, Entry: stateOf(e, ok)}
					if !ok {
						out.Code = codeNotFound
					}
				} else {
					var res session.Result
					res, err = nd.Registry().Propose(octx, session.Command{
						Kind: commandKind[in.Kind], User: in.User, Node: in.Node,
						Session: in.Session, Epoch: in.Epoch, Attach: in.Attach,
					})
					out = regOutput{Code: codeOf(res.Err), Entry: stateOf(res.Entry, true)}
				}
				ret := now()
				ocancel()
				o := classify(err)
				rc.mu.Lock()
				rc.counts[o]++
				switch {
				case o == done:
					rc.history = append(rc.history, op(lw.id, in, call, ret, out))
				case o == unknown && in.Kind != opRead:
					rc.history = append(rc.history, op(lw.id, in, call, -1, regOutput{}))
				}
				rc.mu.Unlock()
				if o == done {
					if out.Entry.Epoch > lw.known[in.User] {
						lw.known[in.User] = out.Entry.Epoch
					}
					continue
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(100+lw.rng.IntN(200)) * time.Millisecond):
				}
			}
		}()
	}
	t.Cleanup(rc.halt)
	return rc
}

func (rc *registryCheck) halt() {
	rc.stop()
	rc.wg.Wait()
}

// check stops the clients and asserts the history is linearizable.
func (rc *registryCheck) check() {
	t := rc.t
	t.Helper()
	rc.halt()
	t.Logf("registry check: %d done, %d unknown, %d failed", rc.counts[done], rc.counts[unknown], rc.counts[failed])
	if rc.counts[done] < 20 {
		t.Errorf("registry check: only %d operations completed", rc.counts[done])
		return
	}
	res, info := porcupine.CheckOperationsVerbose(regModel, rc.history, 10*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := "(not written)"
		if f, err := os.CreateTemp("", "fault-registry-*.html"); err == nil {
			if porcupine.Visualize(regModel, info, f) == nil {
				path = f.Name()
			}
			f.Close()
		}
		t.Errorf("registry history under this fault is not linearizable; visualization: %s", path)
	default:
		t.Errorf("porcupine could not decide within its timeout (%d operations)", len(rc.history))
	}
}
