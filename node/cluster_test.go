package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/protocol"
)

// Behaviour tests of the core cluster: routing between nodes, ordering,
// idempotency, offline delivery and observability, each on a fresh
// in-process three-node cluster. Failure behaviour is in failover_test.go.

func TestMessagesPublishedOnOneNodeReachUserOnAnother(t *testing.T) {
	c := clustertest.Start(t, 3)
	cl := subscribe(t, c, "alice", []string{c.ConnectURL("n2")})
	if cl.Node() != "n2" {
		t.Fatalf("client welcomed by %q, want n2", cl.Node())
	}

	const n = 200
	for i := 1; i <= n; i++ {
		pr := mustPublish(t, c, "n1", "alice", map[string]int{"i": i}, fmt.Sprintf("alice-%d", i))
		if pr.Seq != uint64(i) || pr.Node != "n2" {
			t.Fatalf("publish %d answered seq %d by %q, want seq %d by the owner n2", i, pr.Seq, pr.Node, i)
		}
	}
	msgs := receive(t, cl, n, 20*time.Second)
	for i, m := range msgs {
		wantSeq, wantID := uint64(i+1), fmt.Sprintf("alice-%d", i+1)
		if m.Seq != wantSeq || m.ID != wantID {
			t.Fatalf("message %d is seq %d id %q, want seq %d id %q", i, m.Seq, m.ID, wantSeq, wantID)
		}
		var d struct{ I int }
		if err := json.Unmarshal(m.Data, &d); err != nil || d.I != i+1 {
			t.Fatalf("message %d data %s, want {\"i\":%d}", i, m.Data, i+1)
		}
	}
	expectNoMessage(t, cl, 200*time.Millisecond)
	expectNoAnomaly(t, cl)
	// The SDK drops duplicates silently; the node's own count shows that
	// it sent each message exactly once.
	st, body := c.Get("n2", "/metrics", "")
	if v := parseMetrics(body)["switchboard_gateway_deliveries_total"]; st != http.StatusOK || v != n {
		t.Errorf("n2 handed %v message frames to its connections, want exactly %d", v, n)
	}

	// Every node describes the same cluster: three live nodes with their
	// placement, one leader they agree on, the others voters.
	zones := map[string]string{"n1": "a", "n2": "b", "n3": "c"}
	var leader string
	for _, id := range c.IDs() {
		var ci clustertest.ClusterInfo
		eventually(t, 10*time.Second, id+" to see three live nodes", func() (bool, any) {
			var err error
			if ci, err = c.Cluster(id); err != nil {
				return false, err
			}
			if len(ci.Nodes) != 3 {
				return false, ci
			}
			for _, nd := range ci.Nodes {
				if nd.State != "alive" {
					return false, ci
				}
			}
			return true, nil
		})
		if leader == "" {
			leader = ci.Leader
		}
		if ci.Leader == "" || ci.Leader != leader {
			t.Fatalf("%s says the leader is %q, another node said %q", id, ci.Leader, leader)
		}
		if ci.Term == 0 || ci.CommitIndex == 0 {
			t.Errorf("%s reports term %d commit_index %d, want both > 0", id, ci.Term, ci.CommitIndex)
		}
		leaders := 0
		for _, nd := range ci.Nodes {
			zone, ok := zones[nd.ID]
			if !ok {
				t.Fatalf("%s lists unknown node %q", id, nd.ID)
			}
			if nd.Region != "r1" || nd.Zone != zone || nd.PublicURL != c.URL(nd.ID) {
				t.Errorf("%s lists %s at %s/%s %s, want r1/%s %s", id, nd.ID, nd.Region, nd.Zone, nd.PublicURL, zone, c.URL(nd.ID))
			}
			switch nd.Raft {
			case "leader":
				leaders++
				if nd.ID != leader {
					t.Errorf("%s marks %s leader, but reports leader %q", id, nd.ID, leader)
				}
			case "voter":
			default:
				t.Errorf("%s lists %s with raft role %q, want leader or voter", id, nd.ID, nd.Raft)
			}
		}
		if leaders != 1 {
			t.Errorf("%s lists %d leaders, want exactly 1", id, leaders)
		}
	}

	// Every replica of the registry names n2, where the user is connected.
	for _, id := range c.IDs() {
		eventually(t, 5*time.Second, id+" to name n2 owner of alice", func() (bool, any) {
			si, st := c.Session(id, "alice")
			return st == http.StatusOK && si.Owner == "n2" && si.State == "attached", fmt.Sprintf("%d %+v", st, si)
		})
	}
	si, _ := c.Session("n3", "alice")
	if si.Seq != n || si.Epoch == 0 || si.Session == "" {
		t.Errorf("session of alice as n3 reports it: %+v, want seq %d and a session with an epoch", si, n)
	}
}

func TestPublishIsIdempotentByID(t *testing.T) {
	c := clustertest.Start(t, 3)
	// A raw connection sees the frames themselves: the SDK would hide a
	// duplicate delivery by dropping it.
	ws := dialRaw(t, c, "n2", "hank")

	first := mustPublish(t, c, "n1", "hank", "once", "dup-1")
	again := mustPublish(t, c, "n3", "hank", "once", "dup-1")
	if first.Seq != 1 || again != first {
		t.Fatalf("same id published twice answered %+v then %+v, want the same answer with seq 1", first, again)
	}
	if pr := mustPublish(t, c, "n1", "hank", "next", "dup-2"); pr.Seq != 2 {
		t.Fatalf("next publish answered seq %d, want 2", pr.Seq)
	}
	ws.expectMessages(t, []wantMsg{{1, "dup-1"}, {2, "dup-2"}})

	// A batch answers every item in order; a bad item fails alone.
	batch := `{"messages":[
		{"user":"hank","data":{"n":3},"id":"b-1"},
		{"user":"ivy","data":{"n":1},"id":"b-2"},
		{"data":{"n":0},"id":"b-bad"},
		{"user":"hank","data":"once","id":"dup-1"},
		{"user":"ivy","data":{"n":2},"id":"b-3"}
	]}`
	st, body := c.Do("n3", http.MethodPost, "/v1/publish/batch", clustertest.APIKey, []byte(batch))
	if st != http.StatusOK {
		t.Fatalf("batch publish: %d %s", st, body)
	}
	var out struct {
		Results []client.PublishResult `json:"results"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("batch answer %s: %v", body, err)
	}
	want := []client.PublishResult{
		{User: "hank", Seq: 3, ID: "b-1", Node: "n2"},
		{User: "ivy", Seq: 1, ID: "b-2"},
		{}, // the error is checked below
		{User: "hank", Seq: 1, ID: "dup-1", Node: "n2"},
		{User: "ivy", Seq: 2, ID: "b-3"},
	}
	if len(out.Results) != len(want) {
		t.Fatalf("batch of %d answered with %d results: %s", len(want), len(out.Results), body)
	}
	for i, got := range out.Results {
		w := want[i]
		if i == 2 {
			if got.Error == "" || got.Seq != 0 {
				t.Errorf("result %d for an item without user is %+v, want an error and no seq", i, got)
			}
			continue
		}
		if w.Node == "" {
			w.Node = got.Node // ivy's owner is whichever node took her stream
		}
		if got != w || got.Node == "" {
			t.Errorf("result %d is %+v, want %+v", i, got, w)
		}
	}
	// hank's connection gets b-1 as seq 3 and never dup-1 again.
	ws.expectMessages(t, []wantMsg{{3, "b-1"}})
	if pr := mustPublish(t, c, "n2", "hank", "last", "dup-4"); pr.Seq != 4 {
		t.Fatalf("publish after the batch answered seq %d, want 4", pr.Seq)
	}
	ws.expectMessages(t, []wantMsg{{4, "dup-4"}})
}

func TestOfflineMessagesDeliveredOnConnectWithSeqZero(t *testing.T) {
	c := clustertest.Start(t, 3)
	for i := 1; i <= 5; i++ {
		if pr := mustPublish(t, c, "n1", "judy", i, fmt.Sprintf("off-%d", i)); pr.Seq != uint64(i) {
			t.Fatalf("offline publish %d answered seq %d", i, pr.Seq)
		}
	}
	// DefaultConfig resumes from {"seq":0} on a first connect.
	cl := subscribe(t, c, "judy", []string{c.ConnectURL("n3")})
	got := receive(t, cl, 5, 10*time.Second)
	if pr := mustPublish(t, c, "n2", "judy", 6, "live-6"); pr.Seq != 6 {
		t.Fatalf("live publish answered seq %d, want 6", pr.Seq)
	}
	got = append(got, receive(t, cl, 1, 10*time.Second)...)
	for i, m := range got {
		id := fmt.Sprintf("off-%d", i+1)
		if i == 5 {
			id = "live-6"
		}
		if m.Seq != uint64(i+1) || m.ID != id {
			t.Fatalf("message %d is seq %d id %q, want seq %d id %q", i, m.Seq, m.ID, i+1, id)
		}
	}
	expectNoAnomaly(t, cl)
}

func TestUserWithConnectionsOnTwoNodesSeesOneOrder(t *testing.T) {
	c := clustertest.Start(t, 3)
	a := dialRaw(t, c, "n1", "gina")
	// The second node attaches to the owner's stream once its replica
	// shows the first connection; before that it would take the stream
	// over (correctly, but that moves the first connection).
	c.Eventually(5*time.Second, "n3 to see gina attached at n1", func() bool {
		si, st := c.Session("n3", "gina")
		return st == http.StatusOK && si.Owner == "n1" && si.State == "attached"
	})
	b := dialRaw(t, c, "n3", "gina")
	if a.welcome.Session != b.welcome.Session || a.welcome.Node != "n1" || b.welcome.Node != "n3" {
		t.Fatalf("welcomes %+v and %+v, want one session served by n1 and n3", a.welcome, b.welcome)
	}

	// Concurrent publishers through n2: the owner alone decides the order.
	const writers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				st, _, body := c.Publish("n2", "gina", map[string]int{"w": w, "i": i}, fmt.Sprintf("g-%d-%d", w, i))
				if st != http.StatusOK {
					errs <- fmt.Errorf("publish g-%d-%d: %d %s", w, i, st, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fa := a.messages(t, writers*each)
	fb := b.messages(t, writers*each)
	ids := map[string]bool{}
	for i := range fa {
		if fa[i].Seq != uint64(i+1) {
			t.Fatalf("connection on n1: frame %d has seq %d, want %d", i, fa[i].Seq, i+1)
		}
		if fa[i].Seq != fb[i].Seq || fa[i].ID != fb[i].ID || !bytes.Equal(fa[i].Data, fb[i].Data) {
			t.Fatalf("frame %d differs: n1 got seq %d id %s, n3 got seq %d id %s", i, fa[i].Seq, fa[i].ID, fb[i].Seq, fb[i].ID)
		}
		ids[fa[i].ID] = true
	}
	if len(ids) != writers*each {
		t.Fatalf("%d distinct ids delivered, want %d", len(ids), writers*each)
	}
}

// TestAttachedClientGetsMessagesItsNodeMissed: the owner's links to a node
// serving an attached connection of the same user are cut while messages
// are published, and nothing is published after the links heal. The
// deliveries are lost between the nodes; the attached client must still
// get every message, not heartbeats over a stream that stopped.
func TestAttachedClientGetsMessagesItsNodeMissed(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Faults: true})
	leader := c.WaitLeader()
	var followers []string
	for _, id := range c.IDs() {
		if id != leader {
			followers = append(followers, id)
		}
	}
	// Raft runs between the leader and each follower: cutting one
	// follower's links to the other leaves it alone.
	owner, att := followers[0], followers[1]
	dialRaw(t, c, owner, "hal")
	c.Eventually(5*time.Second, att+" to see hal attached at "+owner, func() bool {
		si, st := c.Session(att, "hal")
		return st == http.StatusOK && si.Owner == owner && si.State == "attached"
	})
	cl := subscribe(t, c, "hal", []string{c.ConnectURL(att)})
	if cl.Node() != att {
		t.Fatalf("client welcomed by %s, want %s", cl.Node(), att)
	}
	mustPublish(t, c, leader, "hal", 1, "hal-1")
	receive(t, cl, 1, 10*time.Second)

	c.Cut(owner, att)
	mustPublish(t, c, leader, "hal", 2, "hal-2")
	mustPublish(t, c, leader, "hal", 3, "hal-3")
	c.Heal()
	msgs := receive(t, cl, 2, 15*time.Second)
	if msgs[0].Seq != 2 || msgs[1].Seq != 3 {
		t.Fatalf("after the cut the client got seqs %d, %d; want 2, 3", msgs[0].Seq, msgs[1].Seq)
	}
	expectNoAnomaly(t, cl)
}

func TestMetricsExposed(t *testing.T) {
	c := clustertest.Start(t, 3)
	// The connection's takeover is a registry proposal on n1; the publishes
	// are counted on n1, the node that received them.
	cl := subscribe(t, c, "kate", []string{c.ConnectURL("n1")})
	for i := 1; i <= 3; i++ {
		mustPublish(t, c, "n1", "kate", i, fmt.Sprintf("kate-%d", i))
	}
	receive(t, cl, 3, 10*time.Second)

	st, body := c.Get("n1", "/metrics", "")
	if st != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", st, body)
	}
	m := parseMetrics(body)
	checks := []struct {
		series string
		ok     func(float64) bool
		want   string
	}{
		{"switchboard_gateway_connections", func(v float64) bool { return v == 1 }, "1"},
		{`switchboard_publish_messages_total{result="ok"}`, func(v float64) bool { return v == 3 }, "3"},
		{`switchboard_registry_propose_duration_seconds_count{kind="claim",result="ok"}`, func(v float64) bool { return v >= 1 }, ">= 1"},
	}
	for _, ch := range checks {
		v, ok := m[ch.series]
		if !ok {
			t.Errorf("/metrics on n1 has no series %s:\n%s", ch.series, body)
			continue
		}
		if !ch.ok(v) {
			t.Errorf("%s = %v, want %s", ch.series, v, ch.want)
		}
	}
	for _, name := range []string{"switchboard_gateway_connections", "switchboard_publish_messages_total", "switchboard_registry_propose_duration_seconds"} {
		if !bytes.Contains(body, []byte("# TYPE "+name+" ")) {
			t.Errorf("/metrics on n1 does not declare %s", name)
		}
	}
	// Without auth, on every node; a node with no client reports 0.
	st, body = c.Get("n2", "/metrics", "")
	if v, ok := parseMetrics(body)["switchboard_gateway_connections"]; st != http.StatusOK || !ok || v != 0 {
		t.Errorf("n2 /metrics: status %d, switchboard_gateway_connections %v (present %v), want 200 and 0", st, v, ok)
	}
}

// eventually polls cond every 50ms until it holds, failing the test after
// timeout with the last state cond reported.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, any)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last seen: %+v", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// subscribe dials an SDK client for user that tries endpoints in order,
// and closes it when the test ends.
func subscribe(t *testing.T, c *clustertest.Cluster, user string, endpoints []string, adjust ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.Token = client.StaticToken(c.Token(user))
	cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	for _, f := range adjust {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %v as %s: %v", endpoints, user, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// receive returns the next n messages of cl, failing the test if they do
// not all arrive within timeout.
func receive(t *testing.T, cl *client.Client, n int, timeout time.Duration) []client.Message {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	out := make([]client.Message, 0, n)
	for len(out) < n {
		select {
		case m, ok := <-cl.Messages():
			if !ok {
				t.Fatalf("client closed after %d of %d messages", len(out), n)
			}
			out = append(out, m)
		case <-timer.C:
			last := uint64(0)
			if len(out) > 0 {
				last = out[len(out)-1].Seq
			}
			t.Fatalf("received %d of %d messages within %v (last seq %d)", len(out), n, timeout, last)
		}
	}
	return out
}

// expectNoMessage fails if cl delivers anything within d.
func expectNoMessage(t *testing.T, cl *client.Client, d time.Duration) {
	t.Helper()
	select {
	case m := <-cl.Messages():
		t.Fatalf("unexpected message seq %d id %q", m.Seq, m.ID)
	case <-time.After(d):
	}
}

// expectNoAnomaly fails if the client has reported a broken seq order or
// lost continuity so far; other events are discarded.
func expectNoAnomaly(t *testing.T, cl *client.Client) {
	t.Helper()
	for {
		select {
		case e := <-cl.Events():
			if e.Kind == client.EventSequenceAnomaly || e.Kind == client.EventContinuityLost {
				t.Fatalf("client reported %s: %v", e.Kind, e.Err)
			}
		default:
			return
		}
	}
}

// mustPublish publishes through node id and fails the test unless it is
// answered 200. A 503 (no quorum for a moment, say while a loaded machine
// delays Raft heartbeats) is retried with the same id, as §4 asks of
// publishers; the retries are logged.
func mustPublish(t *testing.T, c *clustertest.Cluster, id, user string, data any, msgID string) clustertest.PublishResult {
	t.Helper()
	if msgID == "" {
		msgID = client.NewID() // retries must be idempotent
	}
	pr, _ := publishRetrying(t, c, id, user, data, msgID, 10*time.Second)
	if pr.User != user || pr.ID != msgID {
		t.Fatalf("publish to %s id %q via %s answered %+v", user, msgID, id, pr)
	}
	return pr
}

// publishRetrying publishes until it is answered 200, retrying with the
// same id while the cluster answers 503 or not at all, for at most
// timeout. It returns the answer and how long it took.
func publishRetrying(t *testing.T, c *clustertest.Cluster, via, user string, data any, msgID string, timeout time.Duration) (clustertest.PublishResult, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		st, pr, body := c.Publish(via, user, data, msgID)
		switch st {
		case http.StatusOK:
			return pr, time.Since(start)
		case http.StatusServiceUnavailable, 0:
			if time.Since(start) > timeout {
				t.Fatalf("publish %s to %s via %s still failing after %v: %d %s", msgID, user, via, timeout, st, body)
			}
			t.Logf("publish %s to %s via %s: %d %s; retrying", msgID, user, via, st, bytes.TrimSpace(body))
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("publish %s to %s via %s: %d %s", msgID, user, via, st, body)
		}
	}
}

// frame is any server frame of the client protocol.
type frame struct {
	Type    string          `json:"type"`
	Seq     uint64          `json:"seq"`
	ID      string          `json:"id"`
	Data    json.RawMessage `json:"data"`
	Session string          `json:"session"`
	Node    string          `json:"node"`
	Resumed bool            `json:"resumed"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
}

// rawConn is a bare WebSocket client, for checks on the exact frames a
// connection receives.
type rawConn struct {
	ws      *websocket.Conn
	welcome frame
}

// dialRaw connects user to node id with resume {"seq":0} and reads the
// welcome. A hello answered "unavailable" (no quorum for a moment) is
// tried again, as the SDK would.
func dialRaw(t *testing.T, c *clustertest.Cluster, id, user string) *rawConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, ok := tryRaw(t, c, id, user)
		if ok {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("hello to %s still answered %+v after 10s", id, r.welcome)
		}
		t.Logf("hello to %s answered %+v; retrying", id, r.welcome)
		time.Sleep(100 * time.Millisecond)
	}
}

// tryRaw makes one connection; ok is false when the node asked to try
// again later, with the error frame in welcome.
func tryRaw(t *testing.T, c *clustertest.Cluster, id, user string) (r *rawConn, ok bool) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(c.ConnectURL(id), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "test done")
		_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = ws.Close()
	})
	hello, _ := json.Marshal(map[string]any{"type": "hello", "token": c.Token(user), "resume": map[string]any{"seq": 0}})
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
		t.Fatalf("hello to %s: %v", id, err)
	}
	r = &rawConn{ws: ws}
	r.welcome = r.next(t)
	switch {
	case r.welcome.Type == "error" && r.welcome.Code == protocol.CloseTryAgainLater.Slug():
		_ = ws.Close()
		return r, false
	case r.welcome.Type != "welcome":
		t.Fatalf("first frame from %s is %+v, want a welcome", id, r.welcome)
	}
	return r, true
}

// next returns the next frame other than a heartbeat.
func (r *rawConn) next(t *testing.T) frame {
	t.Helper()
	for {
		_ = r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := r.ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("undecodable frame %s: %v", b, err)
		}
		if f.Type != "heartbeat" {
			return f
		}
	}
}

// messages reads n frames, which must all be messages.
func (r *rawConn) messages(t *testing.T, n int) []frame {
	t.Helper()
	out := make([]frame, 0, n)
	for len(out) < n {
		f := r.next(t)
		if f.Type != "message" {
			t.Fatalf("frame %d of %d is %+v, want a message", len(out), n, f)
		}
		out = append(out, f)
	}
	return out
}

type wantMsg struct {
	seq uint64
	id  string
}

// expectMessages reads the next message frames and compares them to want.
func (r *rawConn) expectMessages(t *testing.T, want []wantMsg) {
	t.Helper()
	for i, f := range r.messages(t, len(want)) {
		if f.Seq != want[i].seq || f.ID != want[i].id {
			t.Fatalf("message frame is seq %d id %q, want seq %d id %q", f.Seq, f.ID, want[i].seq, want[i].id)
		}
	}
}

// parseMetrics reads Prometheus text into series (name plus labels, as
// written) → value.
func parseMetrics(body []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// TestOwnerStaysPutWhenConnectionsArriveOnTwoNodesAtOnce: a user whose
// stream is idle at its owner connects to the owner and to another node at
// the same moment. The owner keeps the stream while it has a connection:
// one connection is served locally, the other attaches to it (or both
// attach where the stream moved first); neither is sent away (4010), and
// both receive what is published next.
func TestOwnerStaysPutWhenConnectionsArriveOnTwoNodesAtOnce(t *testing.T) {
	c := clustertest.Start(t, 3)
	const users = 12
	name := func(i int) string { return fmt.Sprintf("pair%02d", i) }
	for i := range users {
		first := dialRaw(t, c, "n1", name(i))
		mustPublish(t, c, "n2", name(i), map[string]int{"m": 1}, name(i)+"-1")
		first.expectMessages(t, []wantMsg{{1, name(i) + "-1"}})
		_ = first.ws.Close()
	}
	for i := range users {
		c.Eventually(10*time.Second, name(i)+" idle at n1", func() bool {
			si, st := c.Session("n2", name(i))
			return st == http.StatusOK && si.Owner == "n1" && si.State == "detached"
		})
	}

	type conn struct {
		ws  *websocket.Conn
		err error
	}
	dial := func(node, user string) conn {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		ws, _, err := d.Dial(c.ConnectURL(node), nil)
		if err != nil {
			return conn{err: err}
		}
		hello, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeHello, Token: c.Token(user), Resume: &protocol.Resume{Seq: 1}})
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return conn{ws: ws, err: ws.WriteMessage(websocket.TextMessage, hello)}
	}
	conns := make([][2]conn, users)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range users {
		for k, node := range []string{"n1", "n2"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				conns[i][k] = dial(node, name(i))
			}()
		}
	}
	close(start)
	wg.Wait()
	for i := range users {
		for k := range 2 {
			if err := conns[i][k].err; err != nil {
				t.Fatalf("%s connection %d: %v", name(i), k, err)
			}
			ws := conns[i][k].ws
			t.Cleanup(func() { _ = ws.Close() })
		}
	}
	for i := range users {
		mustPublish(t, c, "n3", name(i), map[string]int{"m": 2}, name(i)+"-2")
	}
	// Each connection gets a welcome and then message 2; an error frame
	// (the 4010 of a displaced owner) fails the test.
	for i := range users {
		for k, node := range []string{"n1", "n2"} {
			r := &rawConn{ws: conns[i][k].ws}
			welcome := r.next(t)
			if welcome.Type != "welcome" {
				t.Fatalf("%s at %s: first frame %+v, want a welcome", name(i), node, welcome)
			}
			if f := r.next(t); f.Type != "message" || f.Seq != 2 {
				t.Errorf("%s at %s (welcomed by %s): got %+v, want message 2: the connection was displaced", name(i), node, welcome.Node, f)
			}
		}
	}
}

// GET /v1/raft (§5): the configuration as every node sees it, with the
// servers' places; admin key only.
func TestRaftEndpoint(t *testing.T) {
	c := clustertest.Start(t, 3)
	c.WaitVoters(3)
	leader := c.WaitLeader()
	for _, id := range c.IDs() {
		if st, _ := c.Get(id, "/v1/raft", clustertest.APIKey); st != http.StatusUnauthorized {
			t.Fatalf("%s: /v1/raft with the API key: %d", id, st)
		}
		var rs protocol.Raft
		eventually(t, 10*time.Second, id+" sees three voters", func() (bool, any) {
			st, body := c.Get(id, "/v1/raft", clustertest.AdminKey)
			rs = protocol.Raft{}
			if st != http.StatusOK || json.Unmarshal(body, &rs) != nil || len(rs.Servers) != 3 {
				return false, string(body)
			}
			for _, s := range rs.Servers {
				if s.Suffrage != "voter" || s.Address == "" || s.Region == "" || s.Zone == "" {
					return false, rs
				}
			}
			// Idle, a node has applied all it has committed (no-ops and
			// configuration entries included).
			return rs.Leader == leader && rs.Term > 0 && rs.CommitIndex > 0 && rs.AppliedIndex == rs.CommitIndex, rs
		})
	}
}
