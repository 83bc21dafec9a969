// Package load drives Switchboard clusters for load tests and failover
// drills through the public contract only (DESIGN.md §3–§5): client
// WebSocket connections through the Go SDK, the publish API and the admin
// API. Each scenario (Idle, Unicast, Storm, Drill) returns a report that
// marshals to JSON; cmd/sbload is its command line.
//
// Published messages carry their intended send time, so latency is
// measured open-loop (deliver time − intended send time) and a stall
// cannot hide behind a paused sender (coordinated omission).
package load

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Sentinel errors; returned errors wrap one of them.
var (
	// ErrConfig reports an invalid Config; the message names the field.
	ErrConfig = errors.New("load: invalid config")
	// ErrCluster means the cluster could not be reached or answered
	// something the contract does not allow.
	ErrCluster = errors.New("load: cluster")
	// ErrTrigger means the kill or drain action failed.
	ErrTrigger = errors.New("load: trigger failed")
)

// Trigger makes the target node go away: a kill, a drain, or whatever the
// caller's harness does. node is the target's id (the one chosen when
// Config.Target is "auto"). It must return promptly.
type Trigger func(ctx context.Context, node string) error

// How a drill or a storm takes the target away (Config.Fault).
const (
	FaultKill    = "kill"    // Config.Trigger: a kill command, a PID, a harness
	FaultDrain   = "drain"   // POST /v1/nodes/{id}/drain
	FaultCrash   = "crash"   // POST /v1/nodes/{id}/faults {"kind":"crash"}
	FaultIsolate = "isolate" // POST /v1/nodes/{id}/faults {"kind":"isolate"}
)

// AutoTarget as Config.Target makes Drill choose the target after the
// users connect: the node that owns the most of them.
const AutoTarget = "auto"

// Config is shared by every scenario; each uses the fields it needs.
type Config struct {
	// Endpoints are the nodes' public base URLs (http://host:port); the
	// WebSocket URL is derived from each.
	Endpoints []string
	// AdminEndpoints are the nodes' admin base URLs, in the order of
	// Endpoints, for nodes started with a separate admin listener; empty
	// means the admin API is on the public listener.
	AdminEndpoints []string
	// APIKey authenticates publishes, AdminKey the admin API (drain,
	// sessions), TokenSecret signs client JWTs.
	APIKey      string
	AdminKey    string
	TokenSecret []byte
	// TLS is what the clients and HTTP calls use for https:// and wss://
	// endpoints, e.g. RootCAs with the cluster's CA; nil means the
	// system's roots.
	TLS *tls.Config

	// Users is the number of users, one connection each.
	Users int
	// Rate is the total publish rate in messages per second; 0 publishes
	// as fast as the cluster answers (closed loop).
	Rate float64
	// Duration is how long the scenario runs (publishing, or holding idle
	// connections; for Storm, the bound on waiting for the reconnects).
	Duration time.Duration
	// Batch is the largest number of messages in one /v1/publish/batch.
	Batch int
	// Tick is how often the open-loop publisher sends what has come due:
	// the longest a message waits to be batched. Latency is measured from
	// each message's intended time, so the wait is counted in it; a longer
	// tick sends fewer, larger requests.
	Tick time.Duration
	// Inflight bounds concurrent publish requests.
	Inflight int
	// DialConcurrency bounds concurrent connection attempts while the
	// users connect.
	DialConcurrency int
	// Grace is how long to wait after publishing for acknowledged messages
	// to be delivered before counting them lost.
	Grace time.Duration
	// RetryFor bounds how long one message is retried (same id) on 503 or
	// network errors before it is given up as unacknowledged.
	RetryFor time.Duration

	// Target is the node (id or base URL) that Storm connects the users
	// to, and that Storm and Drill take away. For Drill, AutoTarget
	// picks the node owning the most drill users once they connected.
	Target string
	// At is when, after publishing starts, Drill fires the trigger.
	At time.Duration
	// Fault is how the target is taken away: FaultKill (Trigger does it),
	// FaultDrain (POST /v1/nodes/{id}/drain), or FaultCrash and
	// FaultIsolate (POST /v1/nodes/{id}/faults, on a cluster started with
	// --enable-fault-injection). Empty means FaultKill with a Trigger,
	// FaultDrain with Drain; with neither, Storm waits for the operator
	// (the first disconnect starts the clock).
	Fault string
	// IsolateFor is how long FaultIsolate cuts the target off.
	IsolateFor time.Duration
	// Trigger takes the target away (FaultKill).
	Trigger Trigger
	// Drain is Fault FaultDrain (the older spelling, sbload --drain).
	Drain bool

	// PIDs maps node ids to local process ids, for memory and CPU figures
	// in Idle (read from /proc).
	PIDs map[string]int
	// UserPrefix names the users (prefix-u<i>); empty picks a random one
	// per run so that runs against one cluster do not share streams.
	UserPrefix string
	// ClientBuffer is the SDK's per-client message buffer.
	ClientBuffer int

	// Progress, if set, is called about once a second while a scenario
	// runs.
	Progress func(Progress)
	// Logger receives the scenario's logs; nil discards them.
	Logger *slog.Logger
}

// Progress is a live snapshot for progress display.
type Progress struct {
	Scenario  string        `json:"scenario"`
	Phase     string        `json:"phase"`
	Elapsed   time.Duration `json:"elapsed"`
	Connected int64         `json:"connected"`
	Sent      int64         `json:"sent"`
	Acked     int64         `json:"acked"`
	Delivered int64         `json:"delivered"`
	Errors    int64         `json:"errors"`
}

// DefaultConfig returns sensible defaults; set Endpoints and the secrets.
func DefaultConfig() Config {
	return Config{
		Users:           100,
		Rate:            1000,
		Duration:        10 * time.Second,
		Batch:           100,
		Tick:            time.Millisecond,
		Inflight:        64,
		DialConcurrency: 128,
		Grace:           10 * time.Second,
		RetryFor:        30 * time.Second,
		At:              5 * time.Second,
		IsolateFor:      10 * time.Second,
		ClientBuffer:    256,
	}
}

// normalize fills defaults and validates, naming the offending field.
func (c Config) normalize(needPublish, needTarget bool) (Config, error) {
	d := DefaultConfig()
	if c.Batch == 0 {
		c.Batch = d.Batch
	}
	if c.Inflight == 0 {
		c.Inflight = d.Inflight
	}
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = d.DialConcurrency
	}
	if c.RetryFor == 0 {
		c.RetryFor = d.RetryFor
	}
	if c.ClientBuffer == 0 {
		c.ClientBuffer = d.ClientBuffer
	}
	if c.IsolateFor == 0 {
		c.IsolateFor = d.IsolateFor
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.UserPrefix == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.UserPrefix = "sbload-" + hex.EncodeToString(b[:])
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Endpoints) == 0 {
		bad("endpoints is empty")
	}
	eps := make([]string, 0, len(c.Endpoints))
	for _, e := range c.Endpoints {
		b, err := normalizeBase(e)
		if err != nil {
			bad("endpoint %q: %v", e, err)
			continue
		}
		eps = append(eps, b)
	}
	c.Endpoints = eps
	if len(c.AdminEndpoints) > 0 && len(c.AdminEndpoints) != len(c.Endpoints) {
		bad("admin endpoints: %d given for %d endpoints", len(c.AdminEndpoints), len(c.Endpoints))
	}
	adm := make([]string, 0, len(c.AdminEndpoints))
	for _, e := range c.AdminEndpoints {
		b, err := normalizeBase(e)
		if err != nil {
			bad("admin endpoint %q: %v", e, err)
			continue
		}
		adm = append(adm, b)
	}
	c.AdminEndpoints = adm
	if len(c.TokenSecret) == 0 {
		bad("token secret is empty")
	}
	if !safeName(c.UserPrefix) {
		bad("user prefix %q: use 1..64 of A-Z a-z 0-9 . _ -", c.UserPrefix)
	}
	if c.Users <= 0 {
		bad("users must be positive, not %d", c.Users)
	}
	if c.Duration <= 0 {
		bad("duration must be positive, not %v", c.Duration)
	}
	if c.Grace < 0 {
		bad("grace must not be negative, not %v", c.Grace)
	}
	if c.Inflight < 0 || c.DialConcurrency < 0 || c.ClientBuffer < 0 {
		bad("inflight, dial concurrency and client buffer must not be negative")
	}
	if needPublish {
		if c.APIKey == "" {
			bad("api key is empty")
		}
		if c.Rate < 0 {
			bad("rate must not be negative, not %v", c.Rate)
		}
		if c.Batch < 0 {
			bad("batch must be positive, not %d", c.Batch)
		}
		if c.Tick < 0 || c.Tick > time.Second {
			bad("tick must be between 0 and 1s, not %v", c.Tick)
		}
	}
	if needTarget {
		if c.Target == "" {
			bad("target is required")
		}
		switch {
		case c.Drain && c.Fault != "" && c.Fault != FaultDrain:
			bad("drain and fault %q: give one", c.Fault)
		case c.Drain:
			c.Fault = FaultDrain
		case c.Fault == "" && c.Trigger != nil:
			c.Fault = FaultKill
		}
		switch c.Fault {
		case "", FaultKill:
			if c.Fault == FaultKill && c.Trigger == nil {
				bad("fault kill needs a trigger (a kill command or PID)")
			}
		case FaultDrain, FaultCrash, FaultIsolate:
			if c.AdminKey == "" {
				bad("%s needs the admin key", c.Fault)
			}
			if c.Trigger != nil {
				bad("give either a trigger (kill) or %s, not both", c.Fault)
			}
		default:
			bad("fault %q: want kill, drain, crash or isolate", c.Fault)
		}
		if c.Fault == FaultIsolate && (c.IsolateFor <= 0 || c.IsolateFor > 10*time.Minute) {
			bad("isolate duration must be between 1ms and 10m, not %v", c.IsolateFor)
		}
		if len(c.Endpoints) < 2 {
			bad("a target to take away needs at least 2 endpoints")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return c, nil
}

// normalizeBase checks an http(s)://host:port base URL and strips any
// trailing slash.
func normalizeBase(s string) (string, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("want http://host:port or https://host:port")
	}
	if u.Path != "" {
		return "", errors.New("want a base URL without a path")
	}
	return s, nil
}

// safeName reports whether s is a short name that needs no escaping in
// JSON, URLs or logs.
func safeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// wsURL derives the client WebSocket URL from a base URL.
func wsURL(base string) string {
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest + "/v1/connect"
	}
	return "ws://" + strings.TrimPrefix(base, "http://") + "/v1/connect"
}

// userName is the id of user i.
func (c *Config) userName(i int) string { return fmt.Sprintf("%s-u%d", c.UserPrefix, i) }
