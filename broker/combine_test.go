package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingSend is a combiner send that records each call and answers
// every item with node/item, blocking while gate is held.
type recordingSend struct {
	gate  sync.RWMutex
	mu    sync.Mutex
	calls [][]string
}

func (r *recordingSend) send(_ context.Context, node string, items []string) []string {
	r.gate.RLock()
	defer r.gate.RUnlock()
	r.mu.Lock()
	r.calls = append(r.calls, slices.Clone(items))
	r.mu.Unlock()
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = node + "/" + it
	}
	return out
}

func TestCombinerIdleCallGoesAlone(t *testing.T) {
	r := &recordingSend{}
	c := newCombiner(r.send, func(s string) int { return len(s) }, func(err error) string { return err.Error() })
	got := c.do(context.Background(), "n1", []string{"a", "b"})
	if !slices.Equal(got, []string{"n1/a", "n1/b"}) {
		t.Fatalf("results %v", got)
	}
	if len(r.calls) != 1 || len(c.nodes) != 0 {
		t.Fatalf("calls %v, queues left %d", r.calls, len(c.nodes))
	}
}

// Calls made while one is in flight go out together in the next call, and
// each caller gets exactly its own results, in order.
func TestCombinerMergesCallsQueuedBehindOneInFlight(t *testing.T) {
	r := &recordingSend{}
	c := newCombiner(r.send, func(s string) int { return len(s) }, func(err error) string { return err.Error() })
	r.gate.Lock() // the first call blocks in send
	first := make(chan []string)
	go func() { first <- c.do(context.Background(), "n1", []string{"first"}) }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.nodes["n1"] != nil && c.nodes["n1"].busy })

	const callers = 20
	var wg sync.WaitGroup
	results := make([][]string, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.do(context.Background(), "n1", []string{fmt.Sprint(i, "x"), fmt.Sprint(i, "y")})
		}()
	}
	// A call to another node is not held up by n1's.
	other := make(chan []string)
	go func() { other <- c.do(context.Background(), "n2", []string{"z"}) }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.nodes["n1"].queue) == callers })
	r.gate.Unlock()
	wg.Wait()
	if got := <-first; !slices.Equal(got, []string{"n1/first"}) {
		t.Fatalf("first call got %v", got)
	}
	if got := <-other; !slices.Equal(got, []string{"n2/z"}) {
		t.Fatalf("n2 call got %v", got)
	}
	for i, got := range results {
		want := []string{fmt.Sprint("n1/", i, "x"), fmt.Sprint("n1/", i, "y")}
		if !slices.Equal(got, want) {
			t.Fatalf("caller %d got %v, want %v", i, got, want)
		}
	}
	// first, n2's, and one call for all twenty queued callers.
	if len(r.calls) != 3 {
		t.Fatalf("%d calls, want 3: %v", len(r.calls), r.calls)
	}
	if len(c.nodes) != 0 {
		t.Fatalf("%d queues left", len(c.nodes))
	}
}

// A combined call stops at combineMaxBytes; the rest goes in the next one.
func TestCombinerBoundsCombinedCallSize(t *testing.T) {
	r := &recordingSend{}
	half := combineMaxBytes/2 + 1
	c := newCombiner(r.send, func(string) int { return half }, func(err error) string { return err.Error() })
	r.gate.Lock()
	go c.do(context.Background(), "n1", []string{"first"})
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.nodes["n1"] != nil })
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := c.do(context.Background(), "n1", []string{fmt.Sprint(i)}); len(got) != 1 {
				t.Errorf("caller %d got %v", i, got)
			}
		}()
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.nodes["n1"].queue) == 3 })
	r.gate.Unlock()
	wg.Wait()
	// first, then no two of the three together.
	if len(r.calls) != 4 {
		t.Fatalf("%d calls, want 4: %v", len(r.calls), r.calls)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// A call that panics answers every caller with an error, and the next
// call to the node goes out as usual.
func TestCombinerPanickingCallAnswersEveryone(t *testing.T) {
	var calls atomic.Int32
	block := make(chan struct{})
	send := func(_ context.Context, _ string, items []string) []string {
		if calls.Add(1) == 2 {
			panic("boom")
		}
		<-block
		return slices.Clone(items)
	}
	c := newCombiner(send, func(s string) int { return len(s) }, func(err error) string { return "failed: " + err.Error() })
	go c.do(context.Background(), "n1", []string{"first"}) // call 1, blocked
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.nodes["n1"] != nil })
	var wg sync.WaitGroup
	got := make([][]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = c.do(context.Background(), "n1", []string{"a", "b"}) }()
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.nodes["n1"].queue) == 2 })
	close(block) // call 2, both queued callers together, panics
	wg.Wait()
	for i, res := range got {
		if len(res) != 2 || !strings.HasPrefix(res[0], "failed: ") || !strings.Contains(res[1], "boom") {
			t.Fatalf("caller %d got %q", i, res)
		}
	}
	if res := c.do(context.Background(), "n1", []string{"after"}); !slices.Equal(res, []string{"after"}) {
		t.Fatalf("the call after the panic got %q", res)
	}
}
