package membership

import (
	"bytes"
	"context"
	"log/slog"
)

// logWriter adapts memberlist's *log.Logger output ("[LEVEL] memberlist: msg")
// to slog. log.Logger issues one Write per line, so each Write is one record.
type logWriter struct {
	logger *slog.Logger
}

// Write implements io.Writer. It never fails: losing a log line must not
// disturb gossip.
func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(p)
	w.logger.Log(context.Background(), level, msg)
	return len(p), nil
}

// parseMemberlistLine splits a memberlist log line into a level and message.
// memberlist's INFO lines (suspect, failed, joined) duplicate the member state
// changes Pool logs itself at info level, so they are demoted to debug.
func parseMemberlistLine(p []byte) (slog.Level, string) {
	line := bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	if bytes.HasPrefix(line, []byte("[")) {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			switch string(line[1:end]) {
			case "DEBUG", "TRACE", "INFO":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = bytes.TrimLeft(line[end+1:], " ")
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	return level, string(line)
}
