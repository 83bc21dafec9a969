package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The real binary, given --otlp-endpoint and --trace-sample-ratio through
// the environment (§6), posts OTLP/HTTP protobuf to <endpoint>/v1/traces:
// the publish's spans, under the node's service.instance.id, and what a
// node has queued at SIGTERM still goes out.
func TestBinaryExportsTraces(t *testing.T) {
	var mu sync.Mutex
	spans := map[string]string{} // span name → service.instance.id
	paths := map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		err := proto.Unmarshal(body, &req)
		mu.Lock()
		defer mu.Unlock()
		paths[r.URL.Path]++
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			inst := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.instance.id" {
					inst = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans[s.Name] = inst
				}
			}
		}
	}))
	defer recv.Close()

	f := newFleet(t)
	ports := freePorts(t, 3)
	tokenFile, apiFile, adminFile := writeSecrets(t, f.dir)
	public := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p := f.start("tracer", "", []string{
		"--node-id", "tracer", "--data-dir", filepath.Join(f.dir, "tracer-data"), "--bootstrap",
		"--public-addr", public, "--cluster-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--token-secret-file", tokenFile, "--api-key-file", apiFile, "--admin-key-file", adminFile,
		"--drain-timeout", "5s",
	}, []string{"SWITCHBOARD_OTLP_ENDPOINT=" + recv.URL + "/otlp", "SWITCHBOARD_TRACE_SAMPLE_RATIO=1"})
	base := "http://" + public
	waitReady(t, base, p)
	publishRetry(t, 10*time.Second, base, procAPIKey, "olga", "o1", "traced")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("node not stopped 30s after SIGTERM")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"publish", "publish.route", "stream.append", "session.takeover", "registry.propose"} {
		if inst, ok := spans[name]; !ok || inst != "tracer" {
			t.Errorf("span %s: exported %v with service.instance.id %q, want from \"tracer\"", name, ok, inst)
		}
	}
	if len(paths) != 1 || paths["/otlp/v1/traces"] == 0 {
		t.Errorf("exports went to %v, want /otlp/v1/traces only", paths)
	}
}
