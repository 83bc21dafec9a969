package node_test

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
)

// span is one exported span as the receiver saw it.
type span struct {
	node, service      string // resource: service.instance.id, service.name
	name               string
	kind               tracepb.Span_SpanKind
	trace, id, parent  string // hex
	attrs              map[string]string
	remoteParent, ends bool
}

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes the protobuf
// ExportTraceServiceRequest bodies the nodes post to /v1/traces.
type otlpReceiver struct {
	srv *httptest.Server

	mu    sync.Mutex
	spans []span
	bad   []string
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err == nil && req.Header.Get("Content-Encoding") == "gzip" {
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(body)); err == nil {
			body, err = io.ReadAll(zr)
		}
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &msg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case req.Method != http.MethodPost || req.URL.Path != "/v1/traces":
		r.bad = append(r.bad, req.Method+" "+req.URL.Path)
		http.NotFound(w, req)
		return
	case req.Header.Get("Content-Type") != "application/x-protobuf":
		r.bad = append(r.bad, "content type "+req.Header.Get("Content-Type"))
	case err != nil:
		r.bad = append(r.bad, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rs := range msg.ResourceSpans {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, span{
					node: res["service.instance.id"], service: res["service.name"],
					name: s.Name, kind: s.Kind,
					trace: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId),
					attrs:        attrMap(s.Attributes),
					remoteParent: s.Flags&uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK) != 0,
					ends:         s.EndTimeUnixNano >= s.StartTimeUnixNano,
				})
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = fmt.Sprint(x.BoolValue)
		default:
			m[kv.Key] = v.String()
		}
	}
	return m
}

// all returns a copy of every span received so far.
func (r *otlpReceiver) all() ([]span, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans), slices.Clone(r.bad)
}

// trace returns the spans of the trace whose publish span carries the
// message id, once it holds every name of want.
func (r *otlpReceiver) waitTrace(t *testing.T, msgID string, want []string) []span {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		spans, bad := r.all()
		if len(bad) > 0 {
			t.Fatalf("receiver got bad exports: %v", bad)
		}
		tid := ""
		for _, s := range spans {
			if s.name == "publish" && s.attrs["switchboard.message_id"] == msgID {
				tid = s.trace
			}
		}
		var got []span
		names := map[string]bool{}
		for _, s := range spans {
			if tid != "" && s.trace == tid {
				got = append(got, s)
				names[s.name] = true
			}
		}
		missing := slices.DeleteFunc(slices.Clone(want), func(n string) bool { return names[n] })
		if tid != "" && len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace of %s (%q) still lacks %v after 30s; spans: %s", msgID, tid, missing, describe(got))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func describe(spans []span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "\n  %s %s on %s id %s parent %s %v", s.name, s.kind, s.node, s.id, s.parent, s.attrs)
	}
	return b.String()
}

// TestOnePublishIsOneTraceAcrossThreeNodes: a publish entering at a node
// that owns nothing is one trace across the entry node, the owner and the
// backup — publish → publish.route → stream.append → stream.replicate
// (owner) → stream.replicate (backup), and gateway.deliver under
// stream.append on each node that writes it to a client — each span from
// its own node's resource; a request's traceparent is continued; no
// secret appears in any attribute.
func TestOnePublishIsOneTraceAcrossThreeNodes(t *testing.T) {
	recv := newOTLPReceiver(t)
	c := clustertest.Start(t, 3, clustertest.Options{Configure: func(cfg *node.Config) {
		cfg.Tracing.Endpoint = recv.srv.URL
		cfg.Tracing.SampleRatio = 1
	}})
	const user = "tracy"
	conn := dialRaw(t, c, "n2", user)
	owner := conn.welcome.Node
	var si clustertest.SessionInfo
	c.Eventually(10*time.Second, "every node's registry naming the owner and a backup", func() bool {
		si, _ = c.Session(owner, user)
		if si.Owner != owner || si.Backup == "" || si.Backup == owner {
			return false
		}
		for _, id := range c.IDs() {
			if s, _ := c.Session(id, user); s.Owner != si.Owner || s.Backup != si.Backup || s.Epoch != si.Epoch {
				return false
			}
		}
		return true
	})
	backup := si.Backup
	entry := ""
	for _, id := range c.IDs() {
		if id != owner && id != backup {
			entry = id
		}
	}
	t.Logf("owner %s, backup %s, entry %s", owner, backup, entry)
	// A second connection of the user, on the backup node, is served from
	// the owner's stream: the owner's delivery to that node carries the
	// trace too.
	attachedConn := dialRaw(t, c, backup, user)

	pr := mustPublish(t, c, entry, user, map[string]string{"hello": "trace"}, "traced-1")
	if pr.Node != owner {
		t.Fatalf("stored by %s, want the owner %s", pr.Node, owner)
	}
	conn.expectMessages(t, []wantMsg{{pr.Seq, "traced-1"}})
	attachedConn.expectMessages(t, []wantMsg{{pr.Seq, "traced-1"}})

	want := []string{"publish", "publish.route", "stream.append", "stream.replicate", "gateway.deliver"}
	spans := recv.waitTrace(t, "traced-1", want)
	// The backup's side of the replication is exported on its own; wait
	// for it too.
	c.Eventually(30*time.Second, "the backup's stream.replicate and gateway.deliver spans", func() bool {
		spans = recv.waitTrace(t, "traced-1", want)
		return slices.ContainsFunc(spans, func(s span) bool { return s.name == "stream.replicate" && s.node == backup }) &&
			slices.ContainsFunc(spans, func(s span) bool { return s.name == "gateway.deliver" && s.node == backup })
	})
	t.Logf("trace:%s", describe(spans))

	one := func(name, node string, kind tracepb.Span_SpanKind) span {
		t.Helper()
		var found []span
		for _, s := range spans {
			if s.name == name && s.node == node && (kind == tracepb.Span_SPAN_KIND_UNSPECIFIED || s.kind == kind) {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d %s spans (%s) on %s in the trace, want 1:%s", len(found), name, kind, node, describe(spans))
		}
		return found[0]
	}
	publish := one("publish", entry, tracepb.Span_SPAN_KIND_SERVER)
	route := one("publish.route", entry, 0)
	appendSpan := one("stream.append", owner, 0)
	repOwner := one("stream.replicate", owner, tracepb.Span_SPAN_KIND_CLIENT)
	repBackup := one("stream.replicate", backup, tracepb.Span_SPAN_KIND_SERVER)
	deliver := one("gateway.deliver", owner, 0)
	deliverAttached := one("gateway.deliver", backup, 0)

	parentOf := func(child, parent span, remote bool) {
		t.Helper()
		if child.parent != parent.id {
			t.Errorf("%s on %s has parent %s, want %s on %s (%s)", child.name, child.node, child.parent, parent.name, parent.node, parent.id)
		}
		if child.remoteParent != remote {
			t.Errorf("%s on %s: parent is remote = %v, want %v", child.name, child.node, child.remoteParent, remote)
		}
	}
	if publish.parent != "" && publish.parent != strings.Repeat("0", 16) {
		t.Errorf("publish span has parent %s, want a root", publish.parent)
	}
	parentOf(route, publish, false)
	parentOf(appendSpan, route, true) // across the peer link, entry → owner
	parentOf(repOwner, appendSpan, false)
	parentOf(repBackup, repOwner, true) // across the peer link, owner → backup
	parentOf(deliver, appendSpan, false)
	parentOf(deliverAttached, appendSpan, true) // the owner's delivery frame to the attached node

	nodes := map[string]bool{}
	for _, s := range spans {
		nodes[s.node] = true
		if s.service != "switchboard" {
			t.Errorf("%s on %s has service.name %q", s.name, s.node, s.service)
		}
		if !s.ends {
			t.Errorf("%s on %s ends before it starts", s.name, s.node)
		}
	}
	if len(nodes) != 3 || !nodes[entry] || !nodes[owner] || !nodes[backup] {
		t.Errorf("trace spans nodes %v, want the entry, owner and backup", nodes)
	}
	seq := fmt.Sprint(pr.Seq)
	for _, s := range []span{appendSpan, repOwner, repBackup, deliver, deliverAttached} {
		if s.attrs["switchboard.user"] != user || s.attrs["switchboard.seq"] != seq {
			t.Errorf("%s on %s: user %q seq %q, want %q %s", s.name, s.node, s.attrs["switchboard.user"], s.attrs["switchboard.seq"], user, seq)
		}
	}
	for _, s := range []span{appendSpan, repOwner, repBackup} {
		if s.attrs["switchboard.node.owner"] != owner || s.attrs["switchboard.node.backup"] != backup || s.attrs["switchboard.epoch"] == "" {
			t.Errorf("%s on %s: owner %q backup %q epoch %q", s.name, s.node, s.attrs["switchboard.node.owner"], s.attrs["switchboard.node.backup"], s.attrs["switchboard.epoch"])
		}
	}
	if appendSpan.attrs["switchboard.node.entry"] != entry || route.attrs["switchboard.node.owner"] != owner {
		t.Errorf("entry %q on stream.append, owner %q on publish.route; want %s, %s", appendSpan.attrs["switchboard.node.entry"], route.attrs["switchboard.node.owner"], entry, owner)
	}

	// One publish, one trace: every span anywhere about this message is
	// in it, and the entry node, which owns nothing, took nothing over.
	all, _ := recv.all()
	for _, s := range all {
		if s.attrs["switchboard.user"] == user && s.attrs["switchboard.seq"] == seq && s.trace != publish.trace {
			t.Errorf("%s on %s about seq %s is in trace %s, not the publish's %s", s.name, s.node, seq, s.trace, publish.trace)
		}
		if s.trace == publish.trace && s.name == "session.takeover" {
			t.Errorf("the publish took the stream over on %s: %v", s.node, s.attrs)
		}
	}

	// The hello that made the owner took the stream over: session.takeover
	// with its registry.propose.
	var takeover span
	for _, s := range all {
		if s.name == "session.takeover" && s.node == owner && s.attrs["switchboard.user"] == user {
			takeover = s
		}
	}
	if takeover.id == "" {
		t.Errorf("no session.takeover span of %s on %s", user, owner)
	} else if !slices.ContainsFunc(all, func(s span) bool {
		return s.name == "registry.propose" && s.parent == takeover.id && s.trace == takeover.trace
	}) {
		t.Errorf("session.takeover on %s has no registry.propose child", owner)
	}

	// A caller's traceparent is continued: same trace id, the caller's
	// span as the parent of publish.
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	body := []byte(`{"user":"` + user + `","data":{"hello":"again"},"id":"traced-2"}`)
	req, err := http.NewRequest(http.MethodPost, c.URL(entry)+"/v1/publish", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+clustertest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish with traceparent: %d", resp.StatusCode)
	}
	spans = recv.waitTrace(t, "traced-2", want)
	for _, s := range spans {
		if s.trace != callerTrace {
			t.Fatalf("span %s in trace %s, want the caller's %s", s.name, s.trace, callerTrace)
		}
	}
	publish2 := slices.IndexFunc(spans, func(s span) bool { return s.name == "publish" })
	if p := spans[publish2]; p.parent != callerSpan || !p.remoteParent {
		t.Errorf("publish continued from traceparent has parent %s (remote %v), want the caller's %s", p.parent, p.remoteParent, callerSpan)
	}

	// Secrets never appear in span attributes.
	all, bad := recv.all()
	if len(bad) > 0 {
		t.Fatalf("receiver got bad exports: %v", bad)
	}
	secrets := []string{clustertest.APIKey, clustertest.AdminKey, clustertest.TokenSecret, c.Token(user)}
	for _, s := range all {
		for k, v := range s.attrs {
			for _, secret := range secrets {
				if strings.Contains(v, secret) || strings.Contains(k, secret) {
					t.Errorf("%s on %s: attribute %s holds a secret", s.name, s.node, k)
				}
			}
			if strings.Contains(strings.ToLower(k), "authorization") || strings.Contains(strings.ToLower(k), "token") {
				t.Errorf("%s on %s: attribute %s names a credential", s.name, s.node, k)
			}
		}
	}
}
