package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/session"
)

// This file holds the workload and the checker the fault tests share: many
// users, each with an SDK client, continuous publishers that retry a
// message under the same id until it is acknowledged, and a checker that
// turns the guarantees of DESIGN.md §1 into assertions on what the clients
// received and the publishers were told.

// workloadOptions shape a fault workload.
type workloadOptions struct {
	Users int
	// Placement lists node ids; user i's client tries Placement[i%len]
	// first (so it is where the user's stream starts), then the others.
	Placement []string
	// Interval is each publisher's pause between two acknowledged messages.
	Interval time.Duration
	// GiveUp bounds the retries of one message; a message not acknowledged
	// within it fails the test (every fault here leaves a quorum).
	GiveUp time.Duration
}

// faultWorkload runs the users and publishers of one fault test.
type faultWorkload struct {
	t     *testing.T
	c     *clustertest.Cluster
	opts  workloadOptions
	users []*faultUser
	http  *http.Client

	stop   chan struct{}
	pubs   sync.WaitGroup
	recv   sync.WaitGroup
	faultT atomic.Int64 // unix nanos of markFault; 0 before

	attempts, rejected atomic.Int64
}

// faultUser is one user: its client, what it received, and what its
// publisher was told.
type faultUser struct {
	name  string
	first string
	cl    *client.Client
	dups  *dupCounter

	mu         sync.Mutex
	got        []client.Message
	events     []client.Event
	acks       map[string]uint64 // publish id → acknowledged seq
	bySeq      map[uint64]string // acknowledged seq → publish id
	conflicts  []string          // one seq acknowledged for two ids
	gaveUp     []string          // ids never acknowledged within GiveUp
	afterFault int               // acknowledgements of publishes begun after the fault
	before     clustertest.SessionInfo
}

// startWorkload connects every user's client (before anything is
// published, so each user's stream starts on its first endpoint) and
// starts one continuous publisher per user.
func startWorkload(t *testing.T, c *clustertest.Cluster, o workloadOptions) *faultWorkload {
	t.Helper()
	if o.Interval == 0 {
		o.Interval = 25 * time.Millisecond
	}
	if o.GiveUp == 0 {
		o.GiveUp = 15 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * o.Users
	w := &faultWorkload{
		t: t, c: c, opts: o, stop: make(chan struct{}),
		// Shorter than a stuck owner's wait, so a publisher whose request
		// hangs on a cut-off node retries through another node.
		http: &http.Client{Timeout: 3 * time.Second, Transport: tr},
	}
	ids := c.IDs()
	var dials sync.WaitGroup
	dialErr := make([]error, o.Users)
	for i := range o.Users {
		first := o.Placement[i%len(o.Placement)]
		eps := []string{c.ConnectURL(first)}
		for _, id := range ids {
			if id != first {
				eps = append(eps, c.ConnectURL(id))
			}
		}
		u := &faultUser{name: fmt.Sprintf("fu%02d", i), first: first, dups: &dupCounter{}, acks: map[string]uint64{}, bySeq: map[uint64]string{}}
		w.users = append(w.users, u)
		cfg := client.DefaultConfig()
		cfg.Endpoints = eps
		cfg.Token = client.StaticToken(c.Token(u.name))
		cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		cfg.Logger = slog.New(u.dups)
		dials.Add(1)
		go func() {
			defer dials.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			u.cl, dialErr[i] = client.Dial(ctx, cfg)
		}()
	}
	dials.Wait()
	// Registered after the cluster's Stop, so it runs first: clients and
	// publishers are gone before the nodes.
	t.Cleanup(w.shutdown)
	if err := errors.Join(dialErr...); err != nil {
		t.Fatalf("dial: %v", err)
	}
	for _, u := range w.users {
		w.recv.Add(2)
		go func() {
			defer w.recv.Done()
			for m := range u.cl.Messages() {
				u.mu.Lock()
				u.got = append(u.got, m)
				u.mu.Unlock()
			}
		}()
		go func() {
			defer w.recv.Done()
			for e := range u.cl.Events() {
				u.mu.Lock()
				u.events = append(u.events, e)
				u.mu.Unlock()
			}
		}()
	}
	for _, u := range w.users {
		w.pubs.Add(1)
		go w.publish(u)
	}
	// Besides one publisher per user, batches that span every user: an
	// owner replicates those to each backup in one call, the path that
	// carries a real publisher's load.
	w.pubs.Add(1)
	go w.publishBatches()
	return w
}

// record notes an acknowledgement of id as seq for u.
func (w *faultWorkload) record(u *faultUser, id string, pr clustertest.PublishResult, afterFault bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if prev, ok := u.bySeq[pr.Seq]; ok && prev != id {
		u.conflicts = append(u.conflicts, fmt.Sprintf("seq %d acknowledged for %s and %s", pr.Seq, prev, id))
	}
	if prev, ok := u.acks[id]; ok && prev != pr.Seq {
		u.conflicts = append(u.conflicts, fmt.Sprintf("id %s acknowledged as seq %d and %d", id, prev, pr.Seq))
	}
	if pr.ID != id || pr.User != u.name {
		u.conflicts = append(u.conflicts, fmt.Sprintf("publish %s answered for user %q id %q", id, pr.User, pr.ID))
	}
	u.acks[id], u.bySeq[pr.Seq] = pr.Seq, id
	if afterFault {
		u.afterFault++
	}
}

// publishBatches publishes, until stop, one message to every user in one
// /v1/publish/batch request, and retries the items not acknowledged (same
// ids) through random running nodes until each is.
func (w *faultWorkload) publishBatches() {
	defer w.pubs.Done()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	for k := 1; ; k++ {
		select {
		case <-w.stop:
			return
		case <-time.After(time.Duration(rng.Int64N(int64(4 * w.opts.Interval)))):
		}
		type item struct {
			u  *faultUser
			id string
		}
		todo := make([]item, len(w.users))
		for i, u := range w.users {
			todo[i] = item{u, fmt.Sprintf("%s-b%d", u.name, k)}
		}
		begun := time.Now()
		afterFault := w.faultT.Load() != 0
		for len(todo) > 0 {
			running := w.c.Running()
			via := running[rng.IntN(len(running))]
			var body strings.Builder
			body.WriteString(`{"messages":[`)
			for i, it := range todo {
				if i > 0 {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, `{"user":%q,"id":%q,"data":{"b":%d}}`, it.u.name, it.id, k)
			}
			body.WriteString(`]}`)
			w.attempts.Add(int64(len(todo)))
			results, err := w.postBatch(via, body.String(), len(todo))
			var left []item
			for i, it := range todo {
				if err == nil && results[i].Error == "" {
					w.record(it.u, it.id, results[i].PublishResult, afterFault)
					continue
				}
				left = append(left, it)
			}
			w.rejected.Add(int64(len(left)))
			todo = left
			if len(todo) == 0 {
				break
			}
			if time.Since(begun) > w.opts.GiveUp {
				for _, it := range todo {
					it.u.mu.Lock()
					it.u.gaveUp = append(it.u.gaveUp, fmt.Sprintf("%s (batch, last: %v)", it.id, err))
					it.u.mu.Unlock()
				}
				break
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-w.stop: // as in publish: finish the retries
			}
		}
	}
}

// batchResult is one answer of /v1/publish/batch.
type batchResult struct {
	clustertest.PublishResult
	Error string `json:"error"`
}

// postBatch posts a publish batch of n messages through node via.
func (w *faultWorkload) postBatch(via, body string, n int) ([]batchResult, error) {
	req, err := http.NewRequest(http.MethodPost, w.c.URL(via)+"/v1/publish/batch", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+clustertest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var out struct {
		Results []batchResult `json:"results"`
	}
	if err := jsonDecode(resp, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != n {
		return nil, fmt.Errorf("%d results for %d messages", len(out.Results), n)
	}
	return out.Results, nil
}

// publish publishes to u until stop, each message under a unique id,
// retried with that same id through random running nodes until answered 200.
func (w *faultWorkload) publish(u *faultUser) {
	defer w.pubs.Done()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
	for k := 1; ; k++ {
		select {
		case <-w.stop:
			return
		case <-time.After(time.Duration(rng.Int64N(int64(2 * w.opts.Interval)))):
		}
		id := fmt.Sprintf("%s-m%d", u.name, k)
		begun := time.Now()
		afterFault := w.faultT.Load() != 0
		for {
			running := w.c.Running()
			via := running[rng.IntN(len(running))]
			w.attempts.Add(1)
			st, pr, err := w.post(via, u.name, k, id)
			if err == nil && st == http.StatusOK {
				w.record(u, id, pr, afterFault)
				break
			}
			w.rejected.Add(1)
			if time.Since(begun) > w.opts.GiveUp {
				u.mu.Lock()
				u.gaveUp = append(u.gaveUp, fmt.Sprintf("%s (last: %d %v)", id, st, err))
				u.mu.Unlock()
				break
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-w.stop:
				// Keep retrying this id to its end: stopping here would
				// leave an outcome unknown that the checker cannot judge.
			}
		}
	}
}

// post publishes one message through node via.
func (w *faultWorkload) post(via, user string, k int, id string) (int, clustertest.PublishResult, error) {
	var pr clustertest.PublishResult
	body := fmt.Sprintf(`{"user":%q,"id":%q,"data":{"k":%d}}`, user, id, k)
	req, err := http.NewRequest(http.MethodPost, w.c.URL(via)+"/v1/publish", strings.NewReader(body))
	if err != nil {
		return 0, pr, err
	}
	req.Header.Set("Authorization", "Bearer "+clustertest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.http.Do(req)
	if err != nil {
		return 0, pr, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, pr, nil
	}
	return resp.StatusCode, pr, jsonDecode(resp, &pr)
}

// waitAcked waits until every user has n acknowledged messages.
func (w *faultWorkload) waitAcked(n int, timeout time.Duration) {
	w.t.Helper()
	w.c.Eventually(timeout, fmt.Sprintf("%d acknowledged messages per user", n), func() bool {
		for _, u := range w.users {
			u.mu.Lock()
			k := len(u.acks)
			u.mu.Unlock()
			if k < n {
				return false
			}
		}
		return true
	})
}

// snapshotRegistry records every user's registry entry as it is before the
// fault, read through via.
func (w *faultWorkload) snapshotRegistry(via string) {
	w.t.Helper()
	for _, u := range w.users {
		var si clustertest.SessionInfo
		w.c.Eventually(10*time.Second, "registry entry of "+u.name, func() bool {
			var st int
			si, st = w.c.Session(via, u.name)
			return st == http.StatusOK && si.Owner != "" && si.Backup != ""
		})
		u.before = si
	}
}

// owners counts users per owner (and per backup) in the snapshot.
func (w *faultWorkload) owners() (owned, backed map[string]int) {
	owned, backed = map[string]int{}, map[string]int{}
	for _, u := range w.users {
		owned[u.before.Owner]++
		backed[u.before.Backup]++
	}
	return owned, backed
}

// stayedConnected lists the users whose stream owner was node before the
// fault and whose client never lost its connection: after a fault that
// moves those streams, there must be none.
func (w *faultWorkload) stayedConnected(node string) []string {
	var out []string
	for _, u := range w.users {
		if u.before.Owner != node {
			continue
		}
		u.mu.Lock()
		moved := slices.ContainsFunc(u.events, func(e client.Event) bool { return e.Kind == client.EventDisconnected })
		u.mu.Unlock()
		if !moved {
			out = append(out, u.name)
		}
	}
	return out
}

// markFault notes that the fault starts now.
func (w *faultWorkload) markFault() { w.faultT.Store(time.Now().UnixNano()) }

// stopPublishing stops the publishers; each finishes the message it has.
func (w *faultWorkload) stopPublishing() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.pubs.Wait()
}

// shutdown stops publishers and clients; idempotent.
func (w *faultWorkload) shutdown() {
	w.stopPublishing()
	for _, u := range w.users {
		if u.cl != nil {
			_ = u.cl.Close()
		}
	}
	w.recv.Wait()
	w.http.CloseIdleConnections()
}

// check stops the publishers, waits for every acknowledged message to be
// delivered, and asserts the guarantees:
//
//	G1  each user received seqs 1..n, in order, without gaps or duplicates
//	    (on the wire, too: the SDK drops duplicates, and counts them here);
//	G2  every acknowledged (id, seq) was received, with that seq;
//	G3  no seq was acknowledged for two ids, no id stored under two seqs;
//	    no client was told continuity was lost or saw a seq anomaly;
//	G4  afterwards each user's registry entry names live owner and backup
//	    nodes, the same session, and an epoch no older than before;
//
// and that the workload really ran through the fault: every user had
// publishes acknowledged after it began.
func (w *faultWorkload) check(live []string) {
	t := w.t
	t.Helper()
	w.stopPublishing()
	deadline := time.Now().Add(15 * time.Second)
	var total, after int
	for _, u := range w.users {
		u.mu.Lock()
		maxAcked := uint64(0)
		for s := range u.bySeq {
			maxAcked = max(maxAcked, s)
		}
		u.mu.Unlock()
		for {
			u.mu.Lock()
			n := len(u.got)
			last := uint64(0)
			if n > 0 {
				last = u.got[n-1].Seq
			}
			u.mu.Unlock()
			if last >= maxAcked {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: received up to seq %d, but seq %d was acknowledged", u.name, last, maxAcked)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		u.mu.Lock()
		w.checkUser(u, maxAcked)
		total += len(u.acks)
		after += u.afterFault
		u.mu.Unlock()
	}
	t.Logf("workload: %d users, %d acknowledged (%d begun after the fault), %d publish attempts, %d rejected and retried",
		len(w.users), total, after, w.attempts.Load(), w.rejected.Load())
	w.checkRegistry(live)
}

func (w *faultWorkload) checkUser(u *faultUser, maxAcked uint64) {
	t := w.t
	t.Helper()
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	// The client's own reports first: they usually explain the rest.
	reconnects := 0
	for _, e := range u.events {
		switch e.Kind {
		case client.EventContinuityLost, client.EventSequenceAnomaly:
			fail("client event %s from node %s: %v", e.Kind, e.Node, e.Err)
		case client.EventDisconnected:
			reconnects++
		}
	}
	for _, c := range u.conflicts {
		fail("%s", c)
	}
	for _, g := range u.gaveUp {
		fail("publish never acknowledged: %s", g)
	}
	if d := u.dups.n.Load(); d > 0 {
		fail("the server sent %d duplicate messages (dropped by the SDK)", d)
	}
	if len(u.acks) == 0 || maxAcked == 0 {
		fail("nothing acknowledged")
	}
	if u.afterFault == 0 {
		fail("no publish begun after the fault was acknowledged")
	}
	seqOf := map[string]uint64{}
	for i, m := range u.got {
		if m.Seq != uint64(i+1) {
			fail("message %d has seq %d: gap, duplicate or disorder (seqs %s)", i, m.Seq, seqWindow(u.got, i))
			break
		}
		if prev, ok := seqOf[m.ID]; ok {
			fail("id %s stored twice, as seq %d and %d", m.ID, prev, m.Seq)
		}
		seqOf[m.ID] = m.Seq
		if id, ok := u.bySeq[m.Seq]; ok && id != m.ID {
			fail("seq %d delivered with id %s, acknowledged for id %s", m.Seq, m.ID, id)
		}
	}
	var lost []string
	for id, s := range u.acks {
		if got, ok := seqOf[id]; !ok {
			lost = append(lost, fmt.Sprintf("%s@%d", id, s))
		} else if got != s {
			fail("acknowledged %s as seq %d, received as seq %d", id, s, got)
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		fail("%d acknowledged messages never received (G2), e.g. %v", len(lost), lost[:min(6, len(lost))])
	}
	if len(errs) > 0 {
		if len(errs) > 10 {
			errs = append(errs[:10], fmt.Sprintf("… and %d more", len(errs)-10))
		}
		t.Errorf("%s (first endpoint %s, owner before %s): received %d, acknowledged %d (max seq %d), %d reconnects:\n\t%s",
			u.name, u.first, u.before.Owner, len(u.got), len(u.acks), maxAcked, reconnects, strings.Join(errs, "\n\t"))
	}
}

// seqWindow shows the seqs around index i, for a failure message.
func seqWindow(msgs []client.Message, i int) string {
	var b strings.Builder
	for j := max(0, i-3); j < min(len(msgs), i+4); j++ {
		fmt.Fprintf(&b, "%d ", msgs[j].Seq)
	}
	return strings.TrimSpace(b.String())
}

// checkRegistry waits until every user's entry names live, distinct owner
// and backup nodes, with the session and no older epoch than before.
func (w *faultWorkload) checkRegistry(live []string) {
	t := w.t
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	moved := 0
	for _, u := range w.users {
		var si clustertest.SessionInfo
		var why string
		for {
			var st int
			si, st = w.c.Session(live[0], u.name)
			switch {
			case st != http.StatusOK:
				why = fmt.Sprintf("GET /v1/sessions/%s: %d", u.name, st)
			case !slices.Contains(live, si.Owner):
				why = "owner " + si.Owner + " is not a live node"
			case !slices.Contains(live, si.Backup) || si.Backup == si.Owner:
				why = fmt.Sprintf("backup %q is not another live node", si.Backup)
			default:
				why = ""
			}
			if why == "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if si.Owner != u.before.Owner {
			moved++
		}
		switch {
		case why != "":
			t.Errorf("%s: registry after the fault: %s (%+v)", u.name, why, si)
		case si.Session != u.before.Session:
			t.Errorf("%s: session changed from %s to %s: continuity was lost", u.name, u.before.Session, si.Session)
		case si.Epoch < u.before.Epoch:
			t.Errorf("%s: epoch went back from %d to %d", u.name, u.before.Epoch, si.Epoch)
		}
	}
	t.Logf("registry: %d of %d users changed owner", moved, len(w.users))
}

// dupCounter is the SDK client's log handler: it counts the duplicate
// messages the client dropped, which the server must never send (G3).
type dupCounter struct{ n atomic.Int64 }

func (d *dupCounter) Enabled(context.Context, slog.Level) bool { return true }
func (d *dupCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "dropping duplicate" {
		d.n.Add(1)
	}
	return nil
}
func (d *dupCounter) WithAttrs([]slog.Attr) slog.Handler { return d }
func (d *dupCounter) WithGroup(string) slog.Handler      { return d }

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

// jsonDecode decodes a response body into v.
func jsonDecode(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}
