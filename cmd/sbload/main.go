// Command sbload is Switchboard's load generator and failover-drill driver
// (DESIGN.md §2, §6). It speaks only the public contract — client
// WebSockets through the Go SDK, the publish API and the admin API — so it
// runs against any cluster:
//
//	sbload --endpoints http://127.0.0.1:7700,http://127.0.0.1:7710,http://127.0.0.1:7720 \
//	       --api-key-file F --admin-key-file F --token-secret-file F [--ca-file F] \
//	       --scenario drill --users 60 --rate 300 --duration 20s \
//	       --target n1 --at 5s --kill-pid 12345
//	sbload ... --scenario drill --target auto --kill-cmd 'docker kill sb-{node}'
//	sbload ... --scenario drill --target n2 --fault crash|isolate|drain
//
// Scenarios: idle (connection memory and CPU), unicast (open-loop
// latency), storm (reconnect storm) and drill (loss, duplicates, gaps and
// RTO through a node kill, drain, crash or isolation: the engine sbctl
// drill and the nodes' drill runner share). It shows a live progress line (on a
// terminal; otherwise a line on stderr every few seconds) and prints one
// JSON object on stdout at the end.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/load"
	"github.com/switchboard/switchboard/internal/secret"
)

// Exit codes: 0 success, 1 the run failed, 2 bad usage, 3 a drill found
// lost, duplicated or gapped messages.
const (
	exitOK        = 0
	exitFail      = 1
	exitUsage     = 2
	exitViolation = 3
)

// fdReserve is how many file descriptors beyond one per connection the
// process keeps for HTTP, logs and the runtime.
const fdReserve = 256

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stdout))
	stop()
	os.Exit(code)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// options are the parsed flags.
type options struct {
	cfg      load.Config
	scenario string
	endpoints, adminEndpoints,
	apiKey, apiKeyFile,
	adminKey, adminKeyFile,
	tokenSecret, tokenSecretFile string
	caFile          string
	killCmd         string
	killPID         int
	pids            string
	jsonOut         string
	cpuProfile      string
	logLevel        string
	connsPerProcess int
	channels        int
}

var errUsage = errors.New("usage")

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{cfg: load.DefaultConfig()}
	c := &o.cfg
	fs := flag.NewFlagSet("sbload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.scenario, "scenario", "unicast", "idle, unicast, broadcast, storm or drill")
	fs.IntVar(&o.channels, "channels", 1, "broadcast: channels, each owned by a node other than the first endpoint; --users subscribers spread over them and the nodes")
	fs.StringVar(&o.endpoints, "endpoints", "", "comma-separated node base URLs (http://host:port); the WebSocket URL is derived")
	fs.StringVar(&o.adminEndpoints, "admin-endpoints", "", "comma-separated admin base URLs in --endpoints order, for nodes with a separate --admin-addr")
	fs.StringVar(&o.apiKey, "api-key", "", "publish API key")
	fs.StringVar(&o.apiKeyFile, "api-key-file", "", "file holding the publish API key (trimmed)")
	fs.StringVar(&o.adminKey, "admin-key", "", "admin API key (drain, session lookups)")
	fs.StringVar(&o.adminKeyFile, "admin-key-file", "", "file holding the admin API key (trimmed)")
	fs.StringVar(&o.tokenSecret, "token-secret", "", "HS256 secret for minting client tokens")
	fs.StringVar(&o.tokenSecretFile, "token-secret-file", "", "file holding the token secret (trimmed)")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM CA to trust for https:// and wss:// endpoints instead of the system's roots (sbctl certs init's ca.pem)")
	fs.IntVar(&c.Users, "users", c.Users, "users, one connection each")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "total publish rate in messages/s (0 = as fast as the cluster answers)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to publish (idle: hold; storm: longest wait for reconnects)")
	fs.IntVar(&c.Batch, "batch", c.Batch, "most messages per /v1/publish/batch request")
	fs.DurationVar(&c.Tick, "tick", c.Tick, "open loop: send what has come due this often (the longest batching wait, counted in latency)")
	fs.IntVar(&c.Inflight, "inflight", c.Inflight, "concurrent publish requests")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", c.DialConcurrency, "concurrent connection attempts while users connect")
	fs.DurationVar(&c.Grace, "grace", c.Grace, "wait after publishing for acknowledged messages to arrive")
	fs.DurationVar(&c.RetryFor, "retry-for", c.RetryFor, "retry one message (same id) on 503/network errors for this long")
	fs.StringVar(&c.Target, "target", "", "storm: node (id or base URL) the users connect to and that is taken away; drill: the node taken away, or auto: the node owning the most drill users once they connected")
	fs.DurationVar(&c.At, "at", c.At, "drill: when to kill or drain the target, after publishing starts")
	fs.StringVar(&o.killCmd, "kill-cmd", "", "storm/drill: shell command that kills the target; {node} in it is replaced by the target's node id (docker kill sb-{node})")
	fs.IntVar(&o.killPID, "kill-pid", 0, "storm/drill: PID of the target to SIGKILL")
	fs.StringVar(&c.Fault, "fault", "", "storm/drill: take the target away through the admin API: drain, crash or isolate (crash and isolate need nodes started with --enable-fault-injection); default: --kill-cmd or --kill-pid")
	fs.DurationVar(&c.IsolateFor, "isolate-for", c.IsolateFor, "drill --fault isolate: how long the target is cut off")
	fs.BoolVar(&c.Drain, "drain", false, "storm/drill: --fault drain (the older spelling)")
	fs.StringVar(&o.pids, "pids", "", "idle, broadcast: local node processes as ID=PID,… for memory and CPU figures")
	fs.StringVar(&c.UserPrefix, "user-prefix", "", "user ids are PREFIX-u<i> (default: random per run)")
	fs.IntVar(&c.ClientBuffer, "client-buffer", c.ClientBuffer, "SDK message buffer per client")
	fs.IntVar(&o.connsPerProcess, "conns-per-process", 19000, "refuse more users than this in one process (split the run over processes; each connection is an open file)")
	fs.StringVar(&o.jsonOut, "json-out", "", "also write the JSON result to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of sbload itself to this file (is the load generator the bottleneck?)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "debug, info, warn or error (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected arguments: %v", fs.Args())
	}
	if err := o.finish(); err != nil {
		return nil, err
	}
	return o, nil
}

// finish resolves secrets, endpoints, PIDs and the trigger.
func (o *options) finish() error {
	c := &o.cfg
	for _, e := range strings.Split(o.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.Endpoints = append(c.Endpoints, e)
		}
	}
	if len(c.Endpoints) == 0 {
		return usagef("--endpoints is required")
	}
	for _, e := range strings.Split(o.adminEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.AdminEndpoints = append(c.AdminEndpoints, e)
		}
	}
	var err error
	if c.APIKey, err = secretOf(o.apiKey, o.apiKeyFile, "api-key"); err != nil {
		return err
	}
	if c.AdminKey, err = secretOf(o.adminKey, o.adminKeyFile, "admin-key"); err != nil {
		return err
	}
	ts, err := secretOf(o.tokenSecret, o.tokenSecretFile, "token-secret")
	if err != nil {
		return err
	}
	if ts == "" {
		return usagef("--token-secret or --token-secret-file is required")
	}
	c.TokenSecret = []byte(ts)
	if o.caFile != "" {
		pool, err := certs.ReadPool(o.caFile)
		if err != nil {
			return usagef("--ca-file: %v", err)
		}
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	switch o.scenario {
	case "idle", "unicast", "broadcast", "storm", "drill":
	default:
		return usagef("--scenario %q: want idle, unicast, broadcast, storm or drill", o.scenario)
	}
	if o.channels <= 0 {
		return usagef("--channels must be positive, got %d", o.channels)
	}
	if c.Users > o.connsPerProcess {
		return usagef("--users %d is over --conns-per-process %d: split the users over several sbload processes (with distinct --user-prefix)", c.Users, o.connsPerProcess)
	}
	if o.pids != "" {
		c.PIDs = map[string]int{}
		for _, kv := range strings.Split(o.pids, ",") {
			id, p, ok := strings.Cut(strings.TrimSpace(kv), "=")
			pid, err := strconv.Atoi(p)
			if !ok || id == "" || err != nil || pid <= 0 {
				return usagef("--pids: %q is not ID=PID", kv)
			}
			c.PIDs[id] = pid
		}
	}
	kills := 0
	if o.killCmd != "" {
		kills++
		c.Trigger = load.Command(o.killCmd)
	}
	if o.killPID != 0 {
		kills++
		c.Trigger = load.KillPID(o.killPID)
	}
	if c.Drain {
		if c.Fault != "" && c.Fault != load.FaultDrain {
			return usagef("give one of --drain and --fault %s", c.Fault)
		}
		c.Fault, c.Drain = load.FaultDrain, false
	}
	switch c.Fault {
	case "":
	case load.FaultDrain, load.FaultCrash, load.FaultIsolate:
		kills++
	default:
		return usagef("--fault %q: want drain, crash or isolate", c.Fault)
	}
	if kills > 1 {
		return usagef("give one of --kill-cmd, --kill-pid and --fault (or --drain)")
	}
	if o.scenario == "drill" && kills == 0 {
		return usagef("drill needs --fault drain|crash|isolate, --kill-cmd or --kill-pid")
	}
	return nil
}

// secretOf returns the value given directly or read from a file, trimmed.
func secretOf(value, file, name string) (string, error) {
	if value != "" && file != "" {
		return "", usagef("give --%s or --%s-file, not both", name, name)
	}
	if file == "" {
		return strings.TrimSpace(value), nil
	}
	v, err := secret.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	return v, nil
}

// raiseFileLimit lifts the soft open-files limit toward the hard one so
// that users connections fit.
func raiseFileLimit(users int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // cannot tell; let the dials report it
	}
	need := uint64(users + fdReserve)
	if lim.Cur >= need {
		return nil
	}
	if lim.Max < need {
		return fmt.Errorf("%d users need about %d open files, but the hard limit is %d: split the run over processes", users, need, lim.Max)
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// run is main without the process; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	o, err := parse(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "sbload: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return exitUsage
	case err != nil:
		fmt.Fprintln(stderr, "sbload:", err)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "sbload: --log-level %q: %v\n", o.logLevel, err)
		return exitUsage
	}
	o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := raiseFileLimit(o.cfg.Users); err != nil {
		fmt.Fprintln(stderr, "sbload:", err)
		return exitFail
	}
	pr := load.NewProgressLine(stdout, stderr, tty, "sbload: ")
	o.cfg.Progress = pr.Show
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "sbload: --cpuprofile:", err)
			return exitUsage
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	var (
		result    any
		violation bool
	)
	switch o.scenario {
	case "idle":
		result, err = load.Idle(ctx, o.cfg)
	case "unicast":
		result, err = load.Unicast(ctx, o.cfg)
	case "broadcast":
		var rep load.BroadcastReport
		rep, err = load.Broadcast(ctx, o.cfg, o.channels)
		result = rep
		violation = rep.Lost > 0 || rep.OutOfOrder > 0
	case "storm":
		result, err = load.Storm(ctx, o.cfg)
	case "drill":
		var rep load.DrillReport
		rep, err = load.Drill(ctx, o.cfg)
		result = rep
		violation = rep.Violated()
	}
	pr.Finish()
	if err != nil {
		fmt.Fprintln(stderr, "sbload:", err)
		return exitFail
	}
	out, err := json.MarshalIndent(result, "", "  ")
	if err != nil {
		fmt.Fprintln(stderr, "sbload: encoding result:", err)
		return exitFail
	}
	out = append(out, '\n')
	if o.jsonOut != "" {
		if err := os.WriteFile(o.jsonOut, out, 0o644); err != nil {
			fmt.Fprintln(stderr, "sbload: --json-out:", err)
			return exitFail
		}
	}
	if _, err := stdout.Write(out); err != nil {
		return exitFail
	}
	if violation {
		fmt.Fprintln(stderr, "sbload: drill found lost, duplicated, gapped or reordered messages")
		return exitViolation
	}
	return exitOK
}
