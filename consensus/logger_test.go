package consensus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestHCLogAdapterRoutesToSlog(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	tests := []struct {
		name string
		emit func()
		want string // "" means nothing logged
	}{
		{"debug filtered at info", func() { l.Debug("hidden") }, ""},
		{"trace filtered at info", func() { l.Trace("hidden") }, ""},
		{"info with pairs", func() { l.Info("elected", "term", 3) }, `level=INFO msg=elected term=3`},
		{"warn", func() { l.Warn("slow") }, `level=WARN msg=slow`},
		{"error", func() { l.Error("failed", "error", "boom") }, `level=ERROR msg=failed error=boom`},
		{"named with implied args", func() { l.Named("net").With("peer", "n2").Error("dial") }, `level=ERROR msg=dial peer=n2 subsystem=net`},
		{"odd pairs keep the value", func() { l.Info("odd", "k") }, `extra=k`},
		{"standard writer infers level", func() {
			_, _ = l.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true}).Write([]byte("[WARN] raft: hi\n"))
		}, `level=WARN msg="raft: hi"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			tt.emit()
			got := buf.String()
			if tt.want == "" {
				if got != "" {
					t.Fatalf("logged %q, want nothing", got)
				}
				return
			}
			if !strings.Contains(got, tt.want) {
				t.Fatalf("logged %q, want it to contain %q", got, tt.want)
			}
		})
	}
	if !l.IsInfo() || l.IsDebug() || l.GetLevel() != hclog.Info {
		t.Fatalf("levels: info %v debug %v get %v", l.IsInfo(), l.IsDebug(), l.GetLevel())
	}
}

// raftNode stands for the *raft.Raft that Raft logs: a Stringer whose
// fields encoding/json cannot see.
type raftNode struct{ addr, state string }

func (n *raftNode) String() string { return fmt.Sprintf("Node at %s [%s]", n.addr, n.state) }

// Raft's records, logged as New sets the adapter up, must make valid JSON
// lines that read like hclog's: every key once, hclog.Fmt values printed,
// and Raft's own value for a key we carry kept under another name.
func TestHCLogAdapterWritesRaftRecordsAsValidJSON(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "consensus", "node", "n1")
	l := newHCLog(log, "component", "node")
	servers := []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "10.77.0.1:7701"}}
	tests := []struct {
		name string
		emit func()
		want map[string]string
	}{
		{"raft's node is renamed", func() {
			l.Info("entering candidate state", "node", &raftNode{"10.77.0.1:7701", "Candidate"}, "term", 2)
		}, map[string]string{"node": "n1", "raft_node": "Node at 10.77.0.1:7701 [Candidate]", "term": "2"}},
		{"hclog.Fmt is rendered", func() {
			l.Info("updating configuration", "servers", hclog.Fmt("%+v", servers))
		}, map[string]string{"servers": "[{Suffrage:Voter ID:n1 Address:10.77.0.1:7701}]"}},
		{"hclog.Fmt with a literal percent", func() {
			l.Info("snapshot restore progress", "percent-complete", hclog.Fmt("%0.2f%%", 12.5))
		}, map[string]string{"percent-complete": "12.50%"}},
		{"carried keys through With and Named", func() {
			l.Named("snapshot").With("component", "store").Info("restored", "subsystem", "x")
		}, map[string]string{"component": "consensus", "raft_component": "store", "subsystem": "snapshot", "raft_subsystem": "x"}},
		{"keys the handler writes", func() {
			l.Warn("failed to contact", "server-id", "n2", "time", 57*time.Millisecond, "msg", "m", "level", "l")
		}, map[string]string{"msg": "failed to contact", "level": "WARN", "raft_time": "57000000", "raft_msg": "m", "raft_level": "l"}},
		{"a key raft repeats", func() {
			l.Warn("retry", "peer", "a", "peer", "b")
		}, map[string]string{"peer": "a", "raft_peer": "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			tt.emit()
			line := buf.String()
			keys := jsonKeys(t, line)
			seen := map[string]bool{}
			for _, k := range keys {
				if seen[k] {
					t.Errorf("key %q twice in %s", k, line)
				}
				seen[k] = true
			}
			var got map[string]any
			dec := json.NewDecoder(strings.NewReader(line))
			dec.UseNumber()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			for k, want := range tt.want {
				if v, ok := got[k]; !ok || fmt.Sprint(v) != want {
					t.Errorf("%s = %v, want %q in %s", k, v, want, line)
				}
			}
		})
	}
}

// jsonKeys lists a JSON object's top-level keys in order, repeats included
// (json.Unmarshal keeps only the last).
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object (%v): %s", err, line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
	}
	return keys
}
