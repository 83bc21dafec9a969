package membership

import (
	"bytes"
	"log"
	"log/slog"
	"strings"
	"testing"
)

func TestParseMemberlistLine(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		{"[INFO] memberlist: Suspect n2 has failed, no acks received\n", slog.LevelDebug, "Suspect n2 has failed, no acks received"},
		{"[WARN] memberlist: Refuting a dead message (from: n1)\n", slog.LevelWarn, "Refuting a dead message (from: n1)"},
		{"[ERR] memberlist: Failed to send ping\n", slog.LevelError, "Failed to send ping"},
		{"[ERROR] memberlist: boom", slog.LevelError, "boom"},
		{"no prefix at all\n", slog.LevelInfo, "no prefix at all"},
		{"[ODD] memberlist: level we do not know\r\n", slog.LevelInfo, "level we do not know"},
	}
	for _, tt := range tests {
		t.Run(tt.wantMsg, func(t *testing.T) {
			level, msg := parseMemberlistLine([]byte(tt.line))
			if level != tt.wantLevel || msg != tt.wantMsg {
				t.Fatalf("got (%v, %q), want (%v, %q)", level, msg, tt.wantLevel, tt.wantMsg)
			}
		})
	}
}

func TestLogWriterRoutesThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	l := log.New(&logWriter{logger: logger.With("component", "membership")}, "", 0)
	l.Printf("[INFO] memberlist: chatty %d", 1)
	l.Printf("[WARN] memberlist: important %d", 2)
	out := buf.String()
	if strings.Contains(out, "chatty") {
		t.Fatalf("memberlist INFO line logged at info level: %s", out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, `msg="important 2"`) || !strings.Contains(out, "component=membership") {
		t.Fatalf("warn line missing or malformed: %s", out)
	}
}
