package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/auth"
	"github.com/switchboard/switchboard/broker"
	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// publishRoutes serves the publish API (DESIGN.md §4), for publishers
// holding the API key.
func (n *Node) publishRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/publish", n.metrics.countAnswers(n.handlePublish))
	mux.HandleFunc("/v1/publish/batch", n.metrics.countAnswers(n.handlePublishBatch))
	mux.HandleFunc("GET /v1/channels/{channel}/history", n.handleHistory)
	mux.HandleFunc("GET /v1/channels/{channel}/presence", n.handleChannelPresence)
}

// maxIDLen bounds idempotency keys, which streams remember for the window.
const maxIDLen = 256

// parsePublish decodes and validates one message.
func (n *Node) parsePublish(raw []byte) (broker.PublishRequest, error) {
	var p protocol.Publish
	if err := json.Unmarshal(raw, &p); err != nil {
		// Unmarshal also refuses trailing data after the object.
		return broker.PublishRequest{}, protocol.Errorf(protocol.ErrBadRequest, "body is not a JSON object: %v", err)
	}
	return n.checkPublish(p)
}

// checkPublish validates one decoded message.
func (n *Node) checkPublish(p protocol.Publish) (broker.PublishRequest, error) {
	switch {
	case p.User == nil && p.Channel == nil:
		return broker.PublishRequest{}, protocol.Errorf(protocol.ErrBadRequest, "user or channel is required")
	case p.User != nil && p.Channel != nil:
		return broker.PublishRequest{}, protocol.Errorf(protocol.ErrBadRequest, "user and channel are exclusive: publish to one of them")
	case len(p.Data) == 0:
		return broker.PublishRequest{}, protocol.Errorf(protocol.ErrBadRequest, "data is required")
	case len(p.Data) > n.cfg.Gateway.MaxFrameBytes:
		return broker.PublishRequest{}, protocol.Errorf(protocol.ErrTooLarge, "data is %d bytes, over the %d-byte frame limit", len(p.Data), n.cfg.Gateway.MaxFrameBytes)
	}
	var key session.Key
	if p.Channel != nil {
		if err := protocol.ValidChannel(*p.Channel); err != nil {
			return broker.PublishRequest{}, err
		}
		key = session.ChannelKey(*p.Channel)
	} else {
		if err := auth.ValidUser(*p.User); err != nil {
			return broker.PublishRequest{}, protocol.Errorf(protocol.ErrBadRequest, "%v", err)
		}
		key = session.UserKey(*p.User)
	}
	id := ""
	if p.ID != nil {
		id = *p.ID
		if id == "" || len(id) > maxIDLen || !utf8.ValidString(id) {
			return broker.PublishRequest{}, protocol.Errorf(protocol.ErrBadRequest, "id must be 1..%d bytes of UTF-8", maxIDLen)
		}
	} else {
		id = newPublishID()
	}
	data := make([]byte, 0, len(p.Data))
	data = appendCompact(data, p.Data)
	return broker.PublishRequest{Key: key, ID: id, Data: data}, nil
}

// publishResult is the answer to a stored publish.
func publishResult(req broker.PublishRequest, res broker.PublishResult) protocol.PublishResult {
	r := protocol.PublishResult{Seq: res.Seq, ID: req.ID, Node: res.Node}
	if req.Key.Kind == session.ChannelStream {
		r.Channel = req.Key.Name
	} else {
		r.User = req.Key.Name
	}
	return r
}

// appendCompact strips insignificant white space so frames stay small; the
// input is already valid JSON. Most publishers send compact JSON: without
// any white space byte there is nothing to strip.
func appendCompact(dst, src []byte) []byte {
	if !bytes.ContainsAny(src, " \t\r\n") {
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

// admit counts n messages against API.MaxInflight until the returned
// release is called; false means the node is at its bound and the
// request was answered 503 with Retry-After. A request larger than the
// whole bound is counted as the whole bound: it runs alone.
func (n *Node) admit(w http.ResponseWriter, count int) (release func(), ok bool) {
	limit := int64(n.cfg.API.MaxInflight)
	if limit == 0 {
		return func() {}, true
	}
	need := min(int64(count), limit)
	for {
		cur := n.inflight.Load()
		if cur+need > limit {
			n.metrics.refusedPublishes()
			writeError(w, protocol.Errorf(protocol.ErrUnavailable, "node is serving %d publishes, its limit is %d: retry later", cur, limit))
			return nil, false
		}
		if n.inflight.CompareAndSwap(cur, cur+need) {
			return func() { n.inflight.Add(-need) }, true
		}
	}
}

// publishBody runs the checks every publish request shares and reads its
// body; false means the request was answered.
func (n *Node) publishBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if !only(http.MethodPost, w, r) {
		return nil, false
	}
	if !bearer(r, n.apiKeys()) {
		writeError(w, protocol.Errorf(protocol.ErrUnauthorized, "missing or bad API key"))
		return nil, false
	}
	body, err := readBody(w, r, n.cfg.API.MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	return body, true
}

func (n *Node) handlePublish(w http.ResponseWriter, r *http.Request) {
	body, ok := n.publishBody(w, r)
	if !ok {
		return
	}
	req, err := n.parsePublish(body)
	if err != nil {
		writeError(w, err)
		return
	}
	release, ok := n.admit(w, 1)
	if !ok {
		return
	}
	defer release()
	ctx, span := n.startPublish(r, []broker.PublishRequest{req})
	ctx, cancel := context.WithTimeout(ctx, n.cfg.API.PublishTimeout)
	defer cancel()
	res := n.broker.Publish(ctx, []broker.PublishRequest{req})[0]
	n.metrics.publishedN(1, res.Err)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrSeq.Int64(int64(res.Seq)), tracing.AttrOwner.String(res.Node))
	}
	tracing.End(span, res.Err)
	if res.Err != nil {
		writeError(w, publishError(res.Err))
		return
	}
	writeJSON(w, http.StatusOK, publishResult(req, res))
}

// startPublish begins a publish request's span: it continues the
// caller's trace when the request has a W3C traceparent header, else the
// sampler decides. Its attributes name the stream and the message id,
// never a header (the API key is one).
func (n *Node) startPublish(r *http.Request, reqs []broker.PublishRequest) (context.Context, trace.Span) {
	ctx := n.tracer.Extract(r.Context(), r.Header)
	ctx, span := n.tracer.Start(ctx, tracing.SpanPublish, trace.SpanKindServer)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrEntry.String(n.cfg.NodeID), tracing.AttrCount.Int(len(reqs)))
		if len(reqs) == 1 {
			key := reqs[0].Key
			if key.Kind == session.ChannelStream {
				span.SetAttributes(tracing.AttrChannel.String(key.Name))
			} else {
				span.SetAttributes(tracing.AttrUser.String(key.Name))
			}
			span.SetAttributes(tracing.AttrID.String(reqs[0].ID))
		}
	}
	return ctx, span
}

// publishError is what a publish the broker could not store answers: a
// deadline that ended it is a 503 like any other failure a retry (with
// the same id) may fix.
func publishError(err error) error {
	if protocol.StatusOf(err) == http.StatusInternalServerError && errors.Is(err, context.DeadlineExceeded) {
		return protocol.Errorf(protocol.ErrUnavailable, "%v", err)
	}
	return err
}

func (n *Node) handlePublishBatch(w http.ResponseWriter, r *http.Request) {
	body, ok := n.publishBody(w, r)
	if !ok {
		return
	}
	// One pass when every message decodes; otherwise message by message,
	// so that each bad one gets its own error and the rest are published.
	var whole protocol.PublishBatch
	var raw protocol.RawPublishBatch
	fast := json.Unmarshal(body, &whole) == nil
	if !fast {
		if err := json.Unmarshal(body, &raw); err != nil {
			writeError(w, protocol.Errorf(protocol.ErrBadRequest, `body is not {"messages":[...]}: %v`, err))
			return
		}
	}
	count := len(raw.Messages)
	if fast {
		count = len(whole.Messages)
	}
	switch {
	case fast && whole.Messages == nil, !fast && raw.Messages == nil:
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "messages is required"))
		return
	case count > n.cfg.API.MaxBatch:
		writeError(w, protocol.Errorf(protocol.ErrTooLarge, "%d messages, over the batch limit of %d", count, n.cfg.API.MaxBatch))
		return
	}
	answers := make([]protocol.PublishResult, count)
	reqs := make([]broker.PublishRequest, 0, count)
	slots := make([]int, 0, count)
	for i := range count {
		var req broker.PublishRequest
		var err error
		if fast {
			req, err = n.checkPublish(whole.Messages[i])
		} else {
			req, err = n.parsePublish(raw.Messages[i])
		}
		if err != nil {
			answers[i].Error = err.Error()
			continue
		}
		reqs = append(reqs, req)
		slots = append(slots, i)
	}
	release, ok := n.admit(w, len(reqs))
	if !ok {
		return
	}
	defer release()
	ctx, span := n.startPublish(r, reqs)
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.API.PublishTimeout)
	defer cancel()
	results := n.broker.Publish(ctx, reqs)
	for k, res := range results {
		i, req := slots[k], reqs[k]
		n.metrics.publishedN(1, res.Err)
		if res.Err != nil {
			answers[i].Error = res.Err.Error()
			continue
		}
		answers[i] = publishResult(req, res)
	}
	writeJSON(w, http.StatusOK, protocol.PublishBatchResult{Results: answers})
}
