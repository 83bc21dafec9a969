package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/switchboard/switchboard/consensus"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/session"
)

// The registry, seen from outside, is a linearizable map
// user → (epoch, owner, session, state). regModel is its sequential
// specification for porcupine, written from the contract (claim is a
// compare-and-set on the epoch that bumps it; detach needs the owner at
// the current epoch), not from session.Registry's code.

type regOpKind uint8

const (
	opRead regOpKind = iota
	opClaim
	opDetach
)

func (k regOpKind) String() string {
	return [...]string{"read", "claim", "detach"}[k]
}

// regCode is a command's outcome as the contract names it.
type regCode uint8

const (
	codeOK regCode = iota
	codeStale
	codeNotOwner
	codeNotFound
	codeOther
)

func (c regCode) String() string {
	return [...]string{"ok", "stale", "not-owner", "not-found", "other"}[c]
}

func codeOf(err error) regCode {
	switch {
	case err == nil:
		return codeOK
	case errors.Is(err, session.ErrStaleEpoch):
		return codeStale
	case errors.Is(err, session.ErrNotOwner):
		return codeNotOwner
	case errors.Is(err, session.ErrNotFound):
		return codeNotFound
	}
	return codeOther
}

// regState is one user's entry; the zero value is "no entry". It is
// comparable, so porcupine's default == equality works.
type regState struct {
	Epoch    uint64 // 0: no entry (every entry's epoch is at least 1)
	Owner    string
	Session  string
	Attached bool
}

func (s regState) String() string {
	if s.Epoch == 0 {
		return "∅"
	}
	st := "detached"
	if s.Attached {
		st = "attached"
	}
	return fmt.Sprintf("e%d %s/%s %s", s.Epoch, s.Owner, s.Session, st)
}

func stateOf(e session.Entry, ok bool) regState {
	if !ok || e.Epoch == 0 {
		return regState{}
	}
	return regState{Epoch: e.Epoch, Owner: e.Owner, Session: e.Session, Attached: e.State == session.Attached}
}

type regInput struct {
	Kind    regOpKind
	User    string
	Node    string // claimant or owner
	Session string // claim: the new session id, unique per claim
	Epoch   uint64 // claim, detach: the expected epoch
	Attach  bool   // claim
}

// regOutput is what the caller saw. Unknown marks a call whose outcome is
// unknown (consensus.ErrNotCommitted): it may have been applied at any
// point after its call, so any output is accepted.
type regOutput struct {
	Unknown bool
	Code    regCode
	Entry   regState // the entry in the result (read: the entry read)
}

// regApply is the specification: the next state and the expected output.
func regApply(s regState, in regInput) (regState, regOutput) {
	switch in.Kind {
	case opRead:
		if s.Epoch == 0 {
			return s, regOutput{Code: codeNotFound}
		}
		return s, regOutput{Code: codeOK, Entry: s}
	case opClaim:
		if s.Epoch != in.Epoch {
			return s, regOutput{Code: codeStale, Entry: s}
		}
		next := regState{Epoch: s.Epoch + 1, Owner: in.Node, Session: in.Session, Attached: in.Attach}
		return next, regOutput{Code: codeOK, Entry: next}
	case opDetach:
		switch {
		case s.Epoch == 0:
			return s, regOutput{Code: codeNotFound}
		case s.Epoch != in.Epoch:
			return s, regOutput{Code: codeStale, Entry: s}
		case s.Owner != in.Node:
			return s, regOutput{Code: codeNotOwner, Entry: s}
		}
		s.Attached = false
		return s, regOutput{Code: codeOK, Entry: s}
	}
	panic(fmt.Sprintf("unknown op kind %d", in.Kind))
}

var regModel = porcupine.Model{
	// Users are independent keys: each one's history is checked alone.
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byUser := map[string][]porcupine.Operation{}
		for _, op := range history {
			u := op.Input.(regInput).User
			byUser[u] = append(byUser[u], op)
		}
		users := make([]string, 0, len(byUser))
		for u := range byUser {
			users = append(users, u)
		}
		sort.Strings(users)
		out := make([][]porcupine.Operation, 0, len(users))
		for _, u := range users {
			out = append(out, byUser[u])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		next, want := regApply(state.(regState), input.(regInput))
		got := output.(regOutput)
		return got.Unknown || got == want, next
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		var call string
		switch in.Kind {
		case opRead:
			call = fmt.Sprintf("read(%s)", in.User)
		case opClaim:
			call = fmt.Sprintf("claim(%s, %s/%s, e%d, attach=%v)", in.User, in.Node, in.Session, in.Epoch, in.Attach)
		case opDetach:
			call = fmt.Sprintf("detach(%s, %s, e%d)", in.User, in.Node, in.Epoch)
		}
		if out.Unknown {
			return call + " → ?"
		}
		return fmt.Sprintf("%s → %s %s", call, out.Code, out.Entry)
	},
	DescribeState: func(state any) string { return state.(regState).String() },
}

// op builds a history element; ret < 0 means the outcome is unknown.
func op(client int, in regInput, call, ret int64, out regOutput) porcupine.Operation {
	if ret < 0 {
		ret, out = math.MaxInt64, regOutput{Unknown: true}
	}
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

// TestRegistryModelRejectsNonLinearizableHistories is the negative control:
// the checker, with this model, can fail.
func TestRegistryModelRejectsNonLinearizableHistories(t *testing.T) {
	claim := func(node, sess string, epoch uint64) regInput {
		return regInput{Kind: opClaim, User: "u", Node: node, Session: sess, Epoch: epoch}
	}
	read := regInput{Kind: opRead, User: "u"}
	e1a := regState{Epoch: 1, Owner: "a", Session: "s1"}
	e1b := regState{Epoch: 1, Owner: "b", Session: "s2"}
	e2b := regState{Epoch: 2, Owner: "b", Session: "s2"}
	ok := func(s regState) regOutput { return regOutput{Code: codeOK, Entry: s} }
	tests := []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"read after an acknowledged claim misses it", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, 10, ok(e1a)),
			op(1, read, 20, 30, regOutput{Code: codeNotFound}),
		}, porcupine.Illegal},
		{"two claims at the same epoch both win", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, 10, ok(e1a)),
			op(1, claim("b", "s2", 0), 5, 15, ok(e1b)),
		}, porcupine.Illegal},
		{"a read goes back in time", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, 10, ok(e1a)),
			op(0, claim("b", "s2", 1), 20, 30, ok(e2b)),
			op(1, read, 40, 50, ok(e2b)),
			op(1, read, 60, 70, ok(e1a)),
		}, porcupine.Illegal},
		{"a stale answer reports an epoch that never existed", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, 10, ok(e1a)),
			op(1, claim("b", "s2", 0), 20, 30, regOutput{Code: codeStale, Entry: regState{Epoch: 7, Owner: "a", Session: "s1"}}),
		}, porcupine.Illegal},
		{"an unknown claim cannot explain a state it does not produce", []porcupine.Operation{
			op(0, claim("a", "s1", 5), 0, -1, regOutput{}),
			op(1, read, 20, 30, ok(e1a)),
		}, porcupine.Illegal},
		// Positive controls: the same shapes, linearizable.
		{"concurrent claims, one wins", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, 10, ok(e1a)),
			op(1, claim("b", "s2", 0), 5, 15, regOutput{Code: codeStale, Entry: e1a}),
			op(2, read, 20, 30, ok(e1a)),
		}, porcupine.Ok},
		{"an unknown claim applied after the caller gave up", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, -1, regOutput{}),
			op(1, read, 20, 30, regOutput{Code: codeNotFound}),
			op(1, read, 40, 50, ok(e1a)),
		}, porcupine.Ok},
		{"an unknown claim that never took effect", []porcupine.Operation{
			op(0, claim("a", "s1", 0), 0, -1, regOutput{}),
			op(1, claim("b", "s2", 0), 20, 30, ok(e1b)),
			op(1, read, 40, 50, ok(e1b)),
		}, porcupine.Ok},
		{"detach by the owner, then by someone else", []porcupine.Operation{
			op(0, regInput{Kind: opClaim, User: "u", Node: "a", Session: "s1", Attach: true}, 0, 10,
				ok(regState{Epoch: 1, Owner: "a", Session: "s1", Attached: true})),
			op(0, regInput{Kind: opDetach, User: "u", Node: "a", Epoch: 1}, 20, 30, ok(e1a)),
			op(1, regInput{Kind: opDetach, User: "u", Node: "b", Epoch: 1}, 40, 50, regOutput{Code: codeNotOwner, Entry: e1a}),
		}, porcupine.Ok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(regModel, tc.history, 10*time.Second); got != tc.want {
				t.Fatalf("porcupine says %s, want %s", got, tc.want)
			}
		})
	}
}

var commandKind = map[regOpKind]session.Kind{opClaim: session.KindClaim, opDetach: session.KindDetach}

// linWorker drives registry operations as one client.
type linWorker struct {
	id    int
	name  string // the acting node id in its commands; not a real node
	rng   *rand.Rand
	users []string
	known map[string]uint64 // last epoch seen per user
	seq   int
}

func (w *linWorker) next() regInput {
	u := w.users[w.rng.IntN(len(w.users))]
	epoch := w.known[u]
	switch r := w.rng.IntN(100); {
	case r < 30:
		return regInput{Kind: opRead, User: u}
	case r < 75:
		if w.rng.IntN(10) == 0 { // sometimes a claim that should be stale
			epoch += uint64(w.rng.IntN(2))*2 - 1
		}
		w.seq++
		return regInput{Kind: opClaim, User: u, Node: w.name, Session: fmt.Sprintf("%s-%d", w.name, w.seq), Epoch: epoch, Attach: w.rng.IntN(2) == 0}
	default:
		return regInput{Kind: opDetach, User: u, Node: w.name, Epoch: epoch}
	}
}

// outcome classifies a call's error: nil and the output, or unknown
// (possibly applied), or failed (known not applied).
type outcome uint8

const (
	done outcome = iota
	unknown
	failed
)

// classify sorts a call's error. Failures consensus promises left nothing
// submitted (ErrNoLeader, ErrClosed alone, a context that ended first) are
// left out of the history: if that promise were broken, the state change
// nobody accounts for would make the history illegal. Other errors count
// as unknown outcomes; inContract tells whether they should happen at all.
func classify(err error) outcome {
	switch {
	case err == nil:
		return done
	case errors.Is(err, consensus.ErrNotCommitted):
		return unknown
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrClosed),
		errors.Is(err, context.DeadlineExceeded):
		return failed
	default:
		return unknown
	}
}

// inContract reports whether err is one the registry's callers are told
// to expect from consensus.
func inContract(err error) bool {
	return err == nil || errors.Is(err, consensus.ErrNotCommitted) || errors.Is(err, consensus.ErrNoLeader) ||
		errors.Is(err, consensus.ErrClosed) || errors.Is(err, context.DeadlineExceeded)
}

// testLogger logs node warnings to t until the test's cleanups run.
func testLogger(t *testing.T) *slog.Logger { return clustertest.TestLogger(t) }

// TestRegistryLinearizableUnderFaults runs concurrent clients against the
// registry of a 3-node cluster through every node, while a nemesis kills
// and restarts the leader and isolates nodes, and checks with porcupine
// that what the clients saw is linearizable.
func TestRegistryLinearizableUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const (
		workers  = 8
		users    = 12
		duration = 10 * time.Second
		opTime   = 5 * time.Second
	)
	c := clustertest.Start(t, 3, clustertest.Options{Faults: true, Logger: testLogger(t)})
	c.WaitLeader()

	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var userIDs []string
	for i := range users {
		userIDs = append(userIDs, fmt.Sprintf("lin-u%d", i))
	}

	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		counts  [3]int
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Workers log through t: they must be gone before the test ends,
	// however it ends.
	defer func() {
		stop()
		wg.Wait()
	}()
	for i := range workers {
		w := &linWorker{id: i, name: fmt.Sprintf("lw%d", i), rng: rand.New(rand.NewPCG(seed, uint64(i))), users: userIDs, known: map[string]uint64{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ids := c.Running()
				nd := c.Node(ids[w.rng.IntN(len(ids))])
				if nd == nil {
					continue // killed since Running
				}
				in := w.next()
				octx, cancel := context.WithTimeout(context.Background(), opTime)
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
						Kind: commandKind[in.Kind],
						User: in.User, Node: in.Node, Session: in.Session, Epoch: in.Epoch, Attach: in.Attach,
					})
					out = regOutput{Code: codeOf(res.Err), Entry: stateOf(res.Entry, true)}
				}
				ret := now()
				cancel()
				o := classify(err)
				// A read changes nothing, so any failed read is simply not
				// part of the history; commands must fail only as promised.
				if in.Kind != opRead && !inContract(err) {
					t.Errorf("%s %s via %s failed outside the contract: %v", w.name, in.Kind, nd.ID(), err)
				}
				mu.Lock()
				counts[o]++
				switch {
				case o == done:
					history = append(history, op(w.id, in, call, ret, out))
				case o == unknown && in.Kind != opRead:
					// A read whose answer is lost tells nothing.
					history = append(history, op(w.id, in, call, -1, regOutput{}))
				}
				mu.Unlock()
				if o == done {
					if out.Entry.Epoch > w.known[in.User] {
						w.known[in.User] = out.Entry.Epoch
					}
					continue
				}
				// Back off from a node that is failing, so a node cut off
				// for a second does not pile up unknown outcomes.
				t.Logf("%s %s via %s: %v", w.name, in.Kind, nd.ID(), err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(100+w.rng.IntN(200)) * time.Millisecond):
				}
			}
		}()
	}

	// The nemesis runs here: Kill, Isolate and friends fail the test from
	// the test goroutine only. One fault at a time, so a quorum is always
	// back within a second or so.
	nem := rand.New(rand.NewPCG(seed, math.MaxUint64))
	kills, isolations, slowed := 0, 0, 0
	deadline := time.Now().Add(duration)
	for round := 0; time.Now().Before(deadline); round++ {
		time.Sleep(time.Duration(700+nem.IntN(600)) * time.Millisecond)
		fault := time.Duration(500+nem.IntN(1000)) * time.Millisecond
		leader := c.Leader(c.Running()[0])
		switch round % 3 {
		case 0:
			if leader == "" || c.Node(leader) == nil {
				continue
			}
			t.Logf("nemesis: kill leader %s", leader)
			c.Kill(leader)
			kills++
			time.Sleep(fault)
			c.Restart(leader)
			t.Logf("nemesis: restarted %s", leader)
		case 1:
			ids := c.Running()
			id := ids[nem.IntN(len(ids))]
			t.Logf("nemesis: isolate %s", id)
			c.Isolate(id)
			isolations++
			time.Sleep(fault)
			c.Heal()
			t.Logf("nemesis: healed")
		case 2:
			if leader == "" {
				continue
			}
			// Slow the leader's links both ways: commits and forwards
			// straddle more of each other.
			t.Logf("nemesis: slow %s's links", leader)
			for _, id := range c.IDs() {
				if id != leader {
					c.Latency(leader, id, 30*time.Millisecond)
					c.Latency(id, leader, 30*time.Millisecond)
				}
			}
			slowed++
			time.Sleep(fault)
			c.Heal()
			t.Logf("nemesis: healed")
		}
	}
	stop()
	wg.Wait()

	t.Logf("%d operations: %d done, %d unknown outcome, %d failed; %d leader kills, %d isolations, %d slowdowns",
		counts[0]+counts[1]+counts[2], counts[done], counts[unknown], counts[failed], kills, isolations, slowed)
	// The test must not pass on an idle or broken run.
	if counts[done] < 200 || kills == 0 || isolations == 0 {
		t.Fatalf("too little happened to check: %d completed operations, %d kills, %d isolations", counts[done], kills, isolations)
	}

	res, info := porcupine.CheckOperationsVerbose(regModel, history, 20*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		f, err := os.CreateTemp("", "registry-linearizability-*.html")
		if err != nil {
			t.Fatalf("history is not linearizable (and the visualization could not be written: %v)", err)
		}
		if err := porcupine.Visualize(regModel, info, f); err != nil {
			t.Logf("visualization: %v", err)
		}
		f.Close()
		t.Fatalf("registry history is not linearizable (seed %d); visualization: %s", seed, f.Name())
	default:
		t.Fatalf("porcupine could not decide within its timeout (%d operations)", len(history))
	}
}
