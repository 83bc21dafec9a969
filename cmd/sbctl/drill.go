package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/internal/load"
	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/protocol"
)

// errViolation: a drill found a broken guarantee; sbctl exits 3.
var errViolation = errors.New("drill found lost, duplicated, gapped or reordered messages")

// cmdDrill runs the failover drill (DESIGN.md §6) against the cluster of
// --addr: users connect through the public protocol spread over the
// nodes, messages are published through the publish API, the fault is
// injected through the admin API, and the report says what the users
// saw. It is internal/load's Drill, the engine of sbload --scenario drill
// and of the nodes' drill runner.
func cmdDrill(g *globals, args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("drill", g)
	target := fs.String("target", "", "node to take away (its id)")
	fault := fs.String("fault", "", "crash, isolate or drain (crash and isolate need the target started with --enable-fault-injection)")
	d := load.DefaultConfig()
	users := fs.Int("users", d.Users, "users, one connection each, spread over the nodes")
	rate := fs.Float64("rate", 200, "publish rate in messages/s over all users")
	duration := fs.Duration("duration", 20*time.Second, "how long to publish")
	at := fs.Duration("at", 0, "when the fault strikes after publishing starts (default: a third of --duration)")
	isolateFor := fs.Duration("isolate-for", d.IsolateFor, "--fault isolate: how long the target is cut off")
	grace := fs.Duration("grace", d.Grace, "wait after publishing for acknowledged messages and users to come back")
	jsonOut := fs.Bool("json", false, "print the report as one JSON object")
	tokenFile := fs.String("token-secret-file", "", "file holding the HS256 token secret (env SWITCHBOARD_TOKEN_SECRET_FILE)")
	apiFile := fs.String("api-key-file", "", "file holding the publish API key (env SWITCHBOARD_API_KEY_FILE)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := positional(fs, 0, ""); err != nil {
		return err
	}
	switch {
	case *target == "":
		return usagef("drill: --target is required")
	case *fault != load.FaultCrash && *fault != load.FaultIsolate && *fault != load.FaultDrain:
		return usagef("drill: --fault %q: want crash, isolate or drain", *fault)
	case *users <= 0 || *rate <= 0 || *duration <= 0:
		return usagef("drill: --users, --rate and --duration must be positive")
	case *at < 0 || *at >= *duration:
		return usagef("drill: --at %v must be within --duration %v", *at, *duration)
	}
	if *at == 0 {
		*at = *duration / 3
	}
	tokenSecret, err := secretFlag(*tokenFile, "SWITCHBOARD_TOKEN_SECRET_FILE", "token-secret-file")
	if err != nil {
		return err
	}
	apiKey, err := secretFlag(*apiFile, "SWITCHBOARD_API_KEY_FILE", "api-key-file")
	if err != nil {
		return err
	}
	c, err := g.adminClient()
	if err != nil {
		return err
	}
	defer c.Close()
	tlsConfig, err := g.tlsConfig()
	if err != nil {
		return err
	}

	// The endpoints are the live nodes' public URLs in the cluster's own
	// view. With the admin API on the public listener, each node's admin
	// API is its public URL; behind a separate admin listener only --addr
	// is known, so every admin call goes there.
	var ci protocol.Cluster
	if _, err := c.getJSON("/v1/cluster", &ci); err != nil {
		return err
	}
	cfg := d
	adminOnPublic := false
	for _, n := range ci.Nodes {
		if n.State != "alive" || n.PublicURL == "" {
			continue
		}
		cfg.Endpoints = append(cfg.Endpoints, n.PublicURL)
		adminOnPublic = adminOnPublic || n.PublicURL == c.base
	}
	if !adminOnPublic {
		for range cfg.Endpoints {
			cfg.AdminEndpoints = append(cfg.AdminEndpoints, c.base)
		}
	}
	cfg.APIKey, cfg.AdminKey, cfg.TokenSecret, cfg.TLS = apiKey, c.key, []byte(tokenSecret), tlsConfig
	cfg.Users, cfg.Rate, cfg.Duration, cfg.At, cfg.Grace = *users, *rate, *duration, *at, *grace
	cfg.Target, cfg.Fault, cfg.IsolateFor = *target, *fault, *isolateFor
	// The drill's log and its progress line write stderr from different
	// goroutines.
	stderr = &lockedWriter{w: stderr}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pr := load.NewProgressLine(stdout, stderr, isTerminal(stdout), "sbctl: ")
	cfg.Progress = pr.Show

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := load.Drill(ctx, cfg)
	pr.Finish()
	if err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	if *jsonOut {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if _, err := stdout.Write(append(b, '\n')); err != nil {
			return err
		}
	} else if err := rep.WriteText(stdout); err != nil {
		return err
	}
	switch {
	case rep.Violated():
		return errViolation
	case rep.TriggerError != "":
		return fmt.Errorf("drill: the fault was not injected, so nothing was drilled: %s", rep.TriggerError)
	}
	return nil
}

// secretFlag reads the secret file named by a flag or, without it, by
// the environment variable env.
func secretFlag(file, env, name string) (string, error) {
	if file == "" {
		file = os.Getenv(env)
	}
	if file == "" {
		return "", usagef("drill: --%s (or %s) is required", name, env)
	}
	v, err := secret.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", name, err)
	}
	return v, nil
}

// isTerminal says whether w is a terminal, where the progress line is
// drawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
