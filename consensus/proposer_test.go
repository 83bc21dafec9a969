package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakeBackend plays Raft for the proposer: as leader it applies entries by
// echoing each command upper-cased; as follower it forwards through fwd.
type fakeBackend struct {
	mu      sync.Mutex
	addr    string
	self    bool
	entries [][][]byte // commands of each applied entry
	gate    chan struct{}
	entered chan struct{}
	fwd     func(payload []byte) ([]byte, error)
	changed chan struct{}
	asked   func() // called, outside mu, each time the proposer asks who leads
}

func newFakeBackend(self bool) *fakeBackend {
	return &fakeBackend{addr: "leader:1", self: self, changed: make(chan struct{})}
}

func (f *fakeBackend) leader() (string, bool) {
	if f.asked != nil {
		f.asked()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr, f.self
}

func (f *fakeBackend) noLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr == ""
}

func (f *fakeBackend) leaderChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeBackend) setLeader(addr string, self bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addr, f.self = addr, self
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeBackend) apply(data []byte) ([]byte, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	cmds, err := decodeFrames(data)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.entries = append(f.entries, cmds)
	f.mu.Unlock()
	results := make([][]byte, len(cmds))
	for i, c := range cmds {
		results[i] = bytes.ToUpper(c)
	}
	return encodeFrames(results), nil
}

func (f *fakeBackend) forward(_ context.Context, _ string, payload []byte) ([]byte, error) {
	return f.fwd(payload)
}

func (f *fakeBackend) entrySizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sizes []int
	for _, e := range f.entries {
		sizes = append(sizes, len(e))
	}
	return sizes
}

func startProposer(t *testing.T, be proposerBackend, maxCmds, inFlight int) *proposer {
	t.Helper()
	m, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	pr := newProposer(be, m, slog.New(slog.DiscardHandler), maxCmds, 1<<20, inFlight)
	t.Cleanup(func() {
		pr.close()
		pr.wait()
	})
	return pr
}

func propose(pr *proposer, ctx context.Context, cmd string) (string, error) {
	res, err := pr.submit(ctx, newProposal([][]byte{[]byte(cmd)}, false))
	if err != nil {
		return "", err
	}
	return string(res[0]), nil
}

func TestProposerPacksQueuedCommandsIntoOneEntry(t *testing.T) {
	be := newFakeBackend(true)
	be.gate = make(chan struct{})
	be.entered = make(chan struct{}, 1)
	pr := startProposer(t, be, 4096, 1)

	first := make(chan error, 1)
	go func() {
		_, err := propose(pr, context.Background(), "first")
		first <- err
	}()
	<-be.entered // the only worker is busy with "first"

	// Queue 99 proposals directly so the test knows they are all queued
	// before the worker frees up: they must become exactly one entry.
	var props []*proposal
	for i := range 99 {
		p := newProposal([][]byte{fmt.Appendf(nil, "cmd%d", i)}, false)
		props = append(props, p)
		pr.queue <- p
	}
	waitFor(t, 5*time.Second, "batcher to take the queue", func() bool { return len(pr.queue) == 0 })
	close(be.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, p := range props {
		<-p.done
		if p.err != nil || string(p.results[0]) != fmt.Sprintf("CMD%d", i) {
			t.Fatalf("proposal %d: %q, %v", i, p.results, p.err)
		}
	}
	if got := fmt.Sprint(be.entrySizes()); got != "[1 99]" {
		t.Fatalf("entry sizes %s, want [1 99]", got)
	}
}

func TestProposerRespectsBatchLimits(t *testing.T) {
	be := newFakeBackend(true)
	pr := startProposer(t, be, 7, 2)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := fmt.Sprintf("c%d", i)
			got, err := propose(pr, context.Background(), cmd)
			if err != nil || got != fmt.Sprintf("C%d", i) {
				t.Errorf("%s → %q, %v", cmd, got, err)
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range be.entrySizes() {
		if n > 7 {
			t.Fatalf("entry of %d commands exceeds BatchMaxCommands 7", n)
		}
		total += n
	}
	if total != 200 {
		t.Fatalf("%d commands applied, want 200", total)
	}
}

func TestProposerForwardsFromFollowerAndRetriesNotLeader(t *testing.T) {
	be := newFakeBackend(false)
	leader := newFakeBackend(true)
	var calls int
	be.fwd = func(payload []byte) ([]byte, error) {
		calls++
		if calls == 1 {
			return nil, fmt.Errorf("remote: %w", ErrNotLeader)
		}
		if payload[0] != kindBatch {
			return nil, fmt.Errorf("kind %d", payload[0])
		}
		return leader.apply(payload[1:])
	}
	pr := startProposer(t, be, 4096, 1)
	got, err := propose(pr, context.Background(), "hello")
	if err != nil || got != "HELLO" {
		t.Fatalf("got %q, %v", got, err)
	}
	if calls != 2 {
		t.Fatalf("%d forward calls, want 2 (one refused, one retried)", calls)
	}
}

func TestProposerErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(be *fakeBackend)
		want  []error
	}{
		{
			name:  "no leader until the deadline",
			setup: func(be *fakeBackend) { be.addr, be.self = "", false },
			want:  []error{ErrNoLeader, context.DeadlineExceeded},
		},
		{
			name: "forward fails: outcome unknown",
			setup: func(be *fakeBackend) {
				be.fwd = func([]byte) ([]byte, error) { return nil, io.ErrUnexpectedEOF }
			},
			want: []error{ErrNotCommitted, io.ErrUnexpectedEOF},
		},
		{
			name: "leader answers garbage: outcome unknown",
			setup: func(be *fakeBackend) {
				be.fwd = func([]byte) ([]byte, error) { return []byte{frameVersion, 5}, nil }
			},
			want: []error{ErrNotCommitted, ErrMalformed},
		},
		{
			name: "leader answers too few results",
			setup: func(be *fakeBackend) {
				be.fwd = func([]byte) ([]byte, error) { return encodeFrames(nil), nil }
			},
			want: []error{ErrNotCommitted, ErrMalformed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newFakeBackend(false)
			tt.setup(be)
			pr := startProposer(t, be, 4096, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err := propose(pr, ctx, "x")
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Fatalf("err = %v, want it to wrap %v", err, w)
				}
			}
		})
	}
}

// A caller that gives up while a worker is looking for a leader that is
// not there must learn that its command never reached Raft, not that its
// outcome is unknown (flaked in TestProposeWithoutLeaderFailsWithErrNoLeader).
func TestProposerCancelledWhileNoLeaderIsKnownFailsWithErrNoLeader(t *testing.T) {
	be := newFakeBackend(false)
	be.addr = ""
	inside, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	var first sync.Once
	be.asked = func() { first.Do(func() { close(inside); <-release }) }
	pr := startProposer(t, be, 4096, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := propose(pr, ctx, "x")
		errc <- err
	}()
	<-inside // the worker holds the batch and is asking who leads
	cancel()
	if err := <-errc; !errors.Is(err, ErrNoLeader) || !errors.Is(err, errNotSubmitted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrNoLeader (not submitted) wrapping the cancellation", err)
	}
}

func TestProposerRejectsForwardedWhenNotLeader(t *testing.T) {
	be := newFakeBackend(false)
	be.fwd = func([]byte) ([]byte, error) { t.Error("forwarded proposal was forwarded again"); return nil, io.EOF }
	pr := startProposer(t, be, 4096, 1)
	_, err := pr.submit(context.Background(), newProposal([][]byte{[]byte("a"), []byte("b")}, true))
	if !errors.Is(err, ErrNotLeader) || !errors.Is(err, errNotSubmitted) {
		t.Fatalf("err = %v, want ErrNotLeader (not submitted)", err)
	}
}

func TestProposerCloseFailsPendingWithErrClosed(t *testing.T) {
	be := newFakeBackend(false)
	be.addr = "" // proposals wait for a leader that never comes
	m, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	pr := newProposer(be, m, slog.New(slog.DiscardHandler), 4096, 1<<20, 2)
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := propose(pr, context.Background(), "x")
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let some reach the workers
	pr.close()
	pr.wait()
	for range 10 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	}
	if _, err := propose(pr, context.Background(), "late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestProposerLeaderChangeWakesWaitingBatch(t *testing.T) {
	be := newFakeBackend(false)
	be.addr = ""
	pr := startProposer(t, be, 4096, 1)
	done := make(chan error, 1)
	go func() {
		_, err := propose(pr, context.Background(), "x")
		done <- err
	}()
	time.Sleep(30 * time.Millisecond)
	be.setLeader("me:1", true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("proposal still waiting after a leader appeared")
	}
}
