package consensus

import (
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter routes hashicorp/raft's hclog output into slog, so Raft logs
// carry the same handler, level and attributes as the rest of the node.
type hclogAdapter struct {
	l       *slog.Logger
	name    string
	implied []any
	taken   []string // keys every record already has
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// subsystemKey holds the hclog logger's name.
const subsystemKey = "subsystem"

// renamedPrefix goes before a key of Raft's that the record already has:
// Raft logs its own "node" and a "time", which must not repeat ours or the
// handler's, since a JSON object with a key twice is invalid.
const renamedPrefix = "raft_"

// newHCLog adapts l for hashicorp/raft. carried names the attributes l
// already has (slog cannot list them), so that Raft's keys do not repeat them.
func newHCLog(l *slog.Logger, carried ...string) hclog.Logger {
	taken := []string{slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey, subsystemKey}
	return &hclogAdapter{l: l, taken: append(taken, carried...)}
}

// slogLevel maps hclog levels; Trace sits below slog's Debug.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (h *hclogAdapter) enabled(level hclog.Level) bool {
	return h.l.Enabled(context.Background(), slogLevel(level))
}

// Log emits msg with hclog's alternating key/value args.
func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || !h.enabled(level) {
		return
	}
	var attrs []any
	if h.name != "" {
		attrs = append(attrs, slog.String(subsystemKey, h.name))
	}
	kv, _ := kvAttrs(args, h.taken)
	attrs = append(attrs, kv...)
	h.l.Log(context.Background(), slogLevel(level), msg, attrs...)
}

// kvAttrs turns hclog's loosely typed pairs into slog attributes; a
// non-string key or a dangling value must not lose the value. A key already
// taken, by the logger or an earlier pair, gets renamedPrefix. It returns
// the attributes and taken with their keys added.
func kvAttrs(args []any, taken []string) ([]any, []string) {
	out := make([]any, 0, len(args)/2+1)
	taken = slices.Clip(taken) // so appends copy: loggers made by With share it
	add := func(key string, v any) {
		for slices.Contains(taken, key) {
			key = renamedPrefix + key
		}
		taken = append(taken, key)
		out = append(out, slog.Any(key, hclogValue(v)))
	}
	for i := 0; i < len(args); i += 2 {
		key, ok := args[i].(string)
		if !ok {
			key = "arg"
		}
		if i+1 >= len(args) {
			add("extra", args[i])
			break
		}
		add(key, args[i+1])
	}
	return out, taken
}

// hclogValue renders what hclog renders itself: a Format is printf'd, and a
// Stringer that slog would otherwise marshal field by field (Raft logs its
// *raft.Raft, which has no exported fields: "{}" in JSON) becomes its String().
func hclogValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) > 0 {
			if format, ok := v[0].(string); ok {
				return fmt.Sprintf(format, v[1:]...)
			}
		}
		return fmt.Sprint(v...)
	case error, slog.LogValuer, json.Marshaler, encoding.TextMarshaler:
		return v
	case fmt.Stringer:
		if slog.AnyValue(v).Kind() == slog.KindAny {
			return fmt.Sprint(v) // fmt survives a nil receiver
		}
	}
	return v
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs returns the pairs added with With.
func (h *hclogAdapter) ImpliedArgs() []any { return h.implied }

// With returns a logger that adds the pairs to every record.
func (h *hclogAdapter) With(args ...any) hclog.Logger {
	implied := append(append([]any(nil), h.implied...), args...)
	attrs, taken := kvAttrs(args, h.taken)
	return &hclogAdapter{l: h.l.With(attrs...), name: h.name, implied: implied, taken: taken}
}

// Name returns the subsystem name.
func (h *hclogAdapter) Name() string { return h.name }

// Named appends name to the subsystem name.
func (h *hclogAdapter) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

// ResetNamed replaces the subsystem name.
func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: h.l, name: name, implied: h.implied, taken: h.taken}
}

// SetLevel is a no-op: the slog handler owns the level.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel reports the most verbose level the handler accepts.
func (h *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

// StandardLogger returns a *log.Logger writing through this adapter.
func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each write as one record.
func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := &stdWriter{h: h, level: hclog.Info}
	if opts != nil {
		w.strip = opts.InferLevels || opts.ForceLevel != hclog.NoLevel
		w.infer = opts.InferLevels && opts.ForceLevel == hclog.NoLevel
		if opts.ForceLevel != hclog.NoLevel {
			w.level = opts.ForceLevel
		}
	}
	return w
}

type stdWriter struct {
	h     *hclogAdapter
	level hclog.Level
	strip bool // remove a "[LEVEL]" prefix
	infer bool // and log at that level
}

var levelPrefixes = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error},
}

func (w *stdWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := w.level
	if w.strip {
		for _, lp := range levelPrefixes {
			if rest, ok := strings.CutPrefix(msg, lp.prefix); ok {
				msg = strings.TrimSpace(rest)
				if w.infer {
					level = lp.level
				}
				break
			}
		}
	}
	w.h.Log(level, msg)
	return len(p), nil
}
