package consensus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
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
