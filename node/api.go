package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/membership"
)

// publicHandler serves clients, the publish API, health and metrics, and
// the admin API unless a separate admin listener is configured.
func (n *Node) publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/connect", n.gateway)
	mux.HandleFunc("/v1/publish", n.handlePublish)
	mux.HandleFunc("/v1/publish/batch", n.handlePublishBatch)
	n.commonRoutes(mux)
	if n.adminLn == nil {
		n.adminRoutes(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return mux
}

// adminHandler serves the admin listener: admin API, health, metrics and
// pprof (which is never on the public port).
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	n.commonRoutes(mux)
	n.adminRoutes(mux)
	mux.HandleFunc("/debug/pprof/", n.admin_(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", n.admin_(pprof.Profile))
	mux.HandleFunc("/debug/pprof/trace", n.admin_(pprof.Trace))
	return mux
}

func (n *Node) commonRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": n.cfg.NodeID})
	})
	mux.HandleFunc("GET /readyz", n.handleReady)
	mux.Handle("GET /metrics", n.metrics.handler())
}

func (n *Node) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/cluster", n.admin_(n.handleCluster))
	mux.HandleFunc("/v1/sessions/{user}", n.admin_(n.handleSession))
	mux.HandleFunc("/v1/nodes/{id}/drain", n.admin_(n.handleDrain))
	mux.HandleFunc("/v1/raft/transfer-leadership", n.admin_(n.handleTransfer))
}

// admin_ guards an admin endpoint with the admin key.
func (n *Node) admin_(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !bearer(r, n.cfg.AdminKey) {
			writeError(w, http.StatusUnauthorized, "missing or bad admin key")
			return
		}
		h(w, r)
	}
}

func (n *Node) handleReady(w http.ResponseWriter, _ *http.Request) {
	reason := ""
	switch {
	case n.draining.Load():
		reason = "draining"
	case !n.joined.Load():
		reason = "not joined to the cluster yet"
	case !n.raft.Ready():
		reason = "registry not caught up (no leader or replaying)"
	}
	if reason != "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": reason, "node": n.cfg.NodeID})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "node": n.cfg.NodeID})
}

// publishBody is one message of the publish API (§4).
type publishBody struct {
	User *string         `json:"user"`
	Data json.RawMessage `json:"data"`
	ID   *string         `json:"id"`
}

// publishAnswer is the 200 answer for one message.
type publishAnswer struct {
	User  string `json:"user,omitempty"`
	Seq   uint64 `json:"seq,omitempty"`
	ID    string `json:"id,omitempty"`
	Node  string `json:"node,omitempty"`
	Error string `json:"error,omitempty"`
}

// maxIDLen bounds idempotency keys, which streams remember for the window.
const maxIDLen = 256

// apiError is a client-facing error with its HTTP status.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// parsePublish validates one message; the returned error is an *apiError.
func (n *Node) parsePublish(raw []byte) (broker.PublishRequest, error) {
	var b publishBody
	if err := json.Unmarshal(raw, &b); err != nil {
		// Unmarshal also refuses trailing data after the object.
		return broker.PublishRequest{}, &apiError{http.StatusBadRequest, "body is not a JSON object: " + err.Error()}
	}
	return n.checkPublish(b)
}

// checkPublish validates one decoded message; the error is an *apiError.
func (n *Node) checkPublish(b publishBody) (broker.PublishRequest, error) {
	switch {
	case b.User == nil:
		return broker.PublishRequest{}, &apiError{http.StatusBadRequest, "user is required"}
	case len(b.Data) == 0:
		return broker.PublishRequest{}, &apiError{http.StatusBadRequest, "data is required"}
	case len(b.Data) > n.cfg.MaxFrameBytes:
		return broker.PublishRequest{}, &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("data is %d bytes, over the %d-byte frame limit", len(b.Data), n.cfg.MaxFrameBytes)}
	}
	if err := validUser(*b.User); err != nil {
		return broker.PublishRequest{}, &apiError{http.StatusBadRequest, err.Error()}
	}
	id := ""
	if b.ID != nil {
		id = *b.ID
		if id == "" || len(id) > maxIDLen || !utf8.ValidString(id) {
			return broker.PublishRequest{}, &apiError{http.StatusBadRequest, fmt.Sprintf("id must be 1..%d bytes of UTF-8", maxIDLen)}
		}
	} else {
		id = newPublishID()
	}
	data := make([]byte, 0, len(b.Data))
	data = appendCompact(data, b.Data)
	return broker.PublishRequest{User: *b.User, ID: id, Data: data}, nil
}

// appendCompact strips insignificant white space so frames stay small; the
// input is already valid JSON. Most publishers send compact JSON: without
// any white space byte there is nothing to strip.
func appendCompact(dst, src []byte) []byte {
	if bytes.IndexAny(src, " \t\r\n") < 0 {
		return append(dst, src...)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, src); err != nil {
		return append(dst, src...)
	}
	return append(dst, buf.Bytes()...)
}

// newPublishID names a publish that came without an id, so the answer
// carries one the caller can retry with.
func newPublishID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (n *Node) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, n.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("body over the %d-byte limit", n.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return nil, &apiError{http.StatusBadRequest, "reading body: " + err.Error()}
	}
	return body, nil
}

// publishAuth runs the checks every publish request shares.
func (n *Node) publishAuth(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return false
	}
	if !bearer(r, n.cfg.APIKey) {
		writeError(w, http.StatusUnauthorized, "missing or bad API key")
		return false
	}
	return true
}

func (n *Node) handlePublish(w http.ResponseWriter, r *http.Request) {
	if !n.publishAuth(w, r) {
		return
	}
	body, err := n.readBody(w, r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	req, err := n.parsePublish(body)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.PublishTimeout)
	defer cancel()
	res := n.broker.Publish(ctx, []broker.PublishRequest{req})[0]
	n.metrics.publishedN(1, res.Err)
	if res.Err != nil {
		writePublishError(w, res.Err)
		return
	}
	writeJSON(w, http.StatusOK, publishAnswer{User: req.User, Seq: res.Seq, ID: req.ID, Node: res.Node})
}

func (n *Node) handlePublishBatch(w http.ResponseWriter, r *http.Request) {
	if !n.publishAuth(w, r) {
		return
	}
	body, err := n.readBody(w, r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	// One pass when every message decodes; otherwise message by message,
	// so that each bad one gets its own error and the rest are published.
	var whole struct {
		Messages []publishBody `json:"messages"`
	}
	var batch struct {
		Messages []json.RawMessage `json:"messages"`
	}
	fast := json.Unmarshal(body, &whole) == nil
	if !fast {
		if err := json.Unmarshal(body, &batch); err != nil {
			writeError(w, http.StatusBadRequest, "body is not {\"messages\":[...]}: "+err.Error())
			return
		}
	}
	count := len(batch.Messages)
	if fast {
		count = len(whole.Messages)
	}
	switch {
	case fast && whole.Messages == nil, !fast && batch.Messages == nil:
		writeError(w, http.StatusBadRequest, "messages is required")
		return
	case count > n.cfg.MaxBatch:
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%d messages, over the batch limit of %d", count, n.cfg.MaxBatch))
		return
	}
	answers := make([]publishAnswer, count)
	reqs := make([]broker.PublishRequest, 0, count)
	slots := make([]int, 0, count)
	for i := range count {
		var req broker.PublishRequest
		var err error
		if fast {
			req, err = n.checkPublish(whole.Messages[i])
		} else {
			req, err = n.parsePublish(batch.Messages[i])
		}
		if err != nil {
			answers[i].Error = err.Error()
			continue
		}
		reqs = append(reqs, req)
		slots = append(slots, i)
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.PublishTimeout)
	defer cancel()
	results := n.broker.Publish(ctx, reqs)
	for k, res := range results {
		i, req := slots[k], reqs[k]
		n.metrics.publishedN(1, res.Err)
		if res.Err != nil {
			answers[i].Error = res.Err.Error()
			continue
		}
		answers[i] = publishAnswer{User: req.User, Seq: res.Seq, ID: req.ID, Node: res.Node}
	}
	writeJSON(w, http.StatusOK, struct {
		Results []publishAnswer `json:"results"`
	}{answers})
}

// writePublishError maps broker errors to the §4 status codes: anything
// that a retry (same id) may fix is 503 with Retry-After.
func writePublishError(w http.ResponseWriter, err error) {
	if errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrRerouted) || errors.Is(err, broker.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

func writeAPIError(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae.status, ae.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// clusterNode is one node in GET /v1/cluster.
type clusterNode struct {
	ID            string `json:"id"`
	Region        string `json:"region"`
	Zone          string `json:"zone"`
	PublicURL     string `json:"public_url"`
	State         string `json:"state"`
	Raft          string `json:"raft"`
	Connections   int    `json:"connections"`
	SessionsOwned int    `json:"sessions_owned"`
}

func (n *Node) handleCluster(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	st := n.raft.Status()
	suffrage := map[string]string{}
	for _, s := range st.Servers {
		suffrage[s.ID] = s.Suffrage
	}
	members := n.pool.Members()
	nodes := make([]clusterNode, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		role := suffrage[m.ID]
		switch {
		case m.ID == st.Leader && st.Leader != "":
			role = "leader"
		case role == "":
			role = "none"
		}
		nodes[i] = clusterNode{ID: m.ID, Region: m.Region, Zone: m.Zone, PublicURL: m.PublicURL, State: string(m.State), Raft: role}
		n.raft.Read(func() { nodes[i].SessionsOwned = n.machine.Registry.Owned(m.ID) })
		switch {
		case m.ID == n.cfg.NodeID:
			nodes[i].Connections = n.gateway.Connections()
		case usable(m.State):
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(r.Context(), time.Second)
				defer cancel()
				if c, err := n.remoteConnections(ctx, m.ID); err == nil {
					nodes[i].Connections = c
				}
			}()
		}
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, map[string]any{
		"leader": st.Leader, "term": st.Term, "commit_index": st.CommitIndex, "nodes": nodes,
		"durability": n.durability(members),
	})
}

// durability tells operators whether acknowledged messages survive a node
// loss: with one node they are only as safe as that process.
func (n *Node) durability(members []membership.Member) string {
	live := 0
	for _, m := range members {
		if usable(m.State) {
			live++
		}
	}
	if live < 2 {
		return "local"
	}
	return "replicated"
}

func (n *Node) handleSession(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	user := r.PathValue("user")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	// Operators expect the truth, not this replica's lag: read after a
	// barrier (linearizable). Without a leader, say so rather than guess.
	if err := n.raft.ReadBarrier(ctx); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "registry unavailable: "+err.Error())
		return
	}
	e, ok := registry{n}.Get(user)
	if !ok {
		writeError(w, http.StatusNotFound, "no session for user "+strconv.Quote(user))
		return
	}
	seq, _ := n.streamSeq(ctx, e.Owner, user)
	writeJSON(w, http.StatusOK, map[string]any{
		"user": e.User, "session": e.Session, "owner": e.Owner, "backup": e.Backup,
		"epoch": e.Epoch, "state": e.State.String(), "seq": seq,
	})
}

func (n *Node) handleDrain(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	id := r.PathValue("id")
	if id == n.cfg.NodeID {
		n.startDrain()
		writeJSON(w, http.StatusAccepted, map[string]string{"node": id, "state": "draining"})
		return
	}
	m, ok := n.pool.Member(id)
	if !ok || !usable(m.State) {
		writeError(w, http.StatusNotFound, "no live node "+strconv.Quote(id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := (peersByID{n}).Call(ctx, id, methodDrain, nil); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "asking "+id+" to drain: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"node": id, "state": "draining"})
}

// startDrain drains and stops this node in the background; Done closes
// when it is gone, so the process can exit. Shutdown waits for the node's
// own goroutines, so this one is not among them: it ends with the node.
func (n *Node) startDrain() {
	if n.draining.Load() {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			n.log.Warn("drain", "err", err)
		}
	}()
}

func (n *Node) handleTransfer(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	prev := n.raft.Status().Leader
	var err error
	if n.raft.IsLeader() {
		err = n.raft.TransferLeadership()
	} else if prev == "" {
		err = errors.New("no leader")
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		_, err = (peersByID{n}).Call(ctx, prev, methodTransfer, nil)
		cancel()
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "leadership transfer: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"previous": prev, "leader": n.raft.Status().Leader})
}
