// Command sbctl is the operator CLI for a Switchboard cluster (DESIGN.md §5,
// §6): cluster status, session lookup, client tokens, drain and leadership
// transfer, all through a node's admin API; and the cluster's certificates.
//
//	sbctl --addr URL --admin-key K [--ca-file F] status | sessions USER | channels NAME | token --user U | drain NODE | leader-transfer
//	sbctl certs init --dir D --nodes n1,n2,n3 [--hosts h1,h2] [--secrets] [--if-empty] [--owner-of P] [--group G]
//	sbctl keyring list | install K | use K | remove K
//	sbctl --addr URL --admin-key K drill --target NODE --fault crash|isolate|drain [--users N --rate R --duration D] [--json]
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/secret"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 a drill
// found lost, duplicated, gapped or reordered messages.
const (
	exitOK        = 0
	exitFail      = 1
	exitUsage     = 2
	exitViolation = 3
)

// defaultAddr is where `switchboard --dev` listens.
const defaultAddr = "http://127.0.0.1:7700"

const usageText = `usage: sbctl [global flags] <command> [command flags]

commands:
  status                 cluster leader, term, commit index and nodes (--json for raw JSON)
  sessions USER          a user's registry entry (--json for raw JSON)
  channels NAME          a channel's owner, backup, seq and subscribers (--json for raw JSON)
  raft                   the Raft configuration: servers, suffrage, places, leader (*), term, indexes (--json)
  token --user U         mint a client token (--ttl 1h, --token-secret-file F, --channels 'ticker:*,room:42');
                         without F or SWITCHBOARD_TOKEN_SECRET_FILE, ./switchboard-data/token-secret (--dev's)
  drain NODE             ask node NODE to drain its clients and leave
  drain --self           drain the node --addr points at (as a Kubernetes preStop hook does)
  leader-transfer        move Raft leadership to another voter
  certs init --dir D --nodes n1,n2,… [--hosts h1,h2,…] [--new-ca] [--validity 8760h]
                         a cluster CA (D/ca.pem, D/ca-key.pem) and a certificate per node
                         (D/<id>.pem, D/<id>-key.pem) for --tls-* and --cluster-* alike;
                         an existing CA in D issues them unless --new-ca;
                         --secrets also writes D/token-secret, D/api-key, D/admin-key and
                         D/gossip-key where missing; --if-empty leaves a D with files alone;
                         --owner-of P gives the files P's owner, --group G makes keys and
                         secrets 0640 for group G (the compose lab's init, deploy/compose)
  keyring list           the gossip keys of the live nodes, by fingerprint (--json for raw JSON)
  keyring install K      install base64 key K on every live node (or --key-file F)
  keyring use K          make K the key every live node encrypts gossip with
  keyring remove K       remove K from every live node; rotate with install, use, remove
  drill --target NODE --fault crash|isolate|drain [--users N --rate R --duration D] [--json]
                         failover drill: N users spread over the nodes, publishing at R msg/s,
                         the fault at --at (a third of D); reports lost, duplicated, gaps,
                         out of order, resumed, RTO and time to a new owner; exits 3 when
                         lost, duplicated, gaps or out of order is above 0. Also takes
                         --token-secret-file and --api-key-file (or SWITCHBOARD_TOKEN_SECRET_FILE,
                         SWITCHBOARD_API_KEY_FILE), --at, --isolate-for, --grace

global flags (also after the command):
  --addr URL             a node's admin API, http:// or https:// (env SWITCHBOARD_ADDR; default ` + defaultAddr + `)
  --admin-key K          admin key (env SWITCHBOARD_ADMIN_KEY)
  --admin-key-file F     file holding the admin key, trimmed (env SWITCHBOARD_ADMIN_KEY_FILE)
  --ca-file F            PEM CA to trust for https:// instead of the system's roots, e.g. D/ca.pem
                         (env SWITCHBOARD_CA_FILE)
  --timeout D            HTTP request timeout (default 15s)
`

// errUsage marks errors that are the caller's invocation, not the cluster's
// answer; they exit 2 with the usage text.
var errUsage = errors.New("usage")

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errViolation):
		fmt.Fprintln(stderr, "sbctl:", err)
		return exitViolation
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usageText)
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "sbctl: %s\n\n%s", strings.TrimPrefix(err.Error(), errUsage.Error()+": "), usageText)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "sbctl:", err)
		return exitFail
	}
}

// globals are the flags every command accepts.
type globals struct {
	addr         string
	adminKey     string
	adminKeyFile string
	caFile       string
	timeout      time.Duration
}

// register binds the global flags to fs. The current values are the
// defaults, so registering them again on a command's flag set keeps what
// was parsed before the command name.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "a node's admin API base URL")
	fs.StringVar(&g.adminKey, "admin-key", g.adminKey, "admin key")
	fs.StringVar(&g.adminKeyFile, "admin-key-file", g.adminKeyFile, "file holding the admin key")
	fs.StringVar(&g.caFile, "ca-file", g.caFile, "PEM CA to trust for https://")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "HTTP request timeout")
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by run
	fs.Usage = func() {}
	return fs
}

// parseFlags parses fs and turns its errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	return nil
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	g := &globals{timeout: 15 * time.Second}
	fs := newFlagSet("sbctl")
	g.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("no command given")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		return cmdStatus(g, rest, stdout)
	case "sessions", "session":
		return cmdSessions(g, rest, stdout)
	case "channels", "channel":
		return cmdChannels(g, rest, stdout)
	case "raft":
		return cmdRaft(g, rest, stdout)
	case "token":
		return cmdToken(g, rest, stdout)
	case "drain":
		return cmdDrain(g, rest, stdout)
	case "leader-transfer":
		return cmdLeaderTransfer(g, rest, stdout)
	case "certs":
		return cmdCerts(rest, stdout)
	case "keyring":
		return cmdKeyring(g, rest, stdout)
	case "drill":
		return cmdDrill(g, rest, stdout, stderr)
	case "help":
		return flag.ErrHelp
	}
	return usagef("unknown command %q", cmd)
}

// adminClient resolves the address and admin key (flags win over the
// environment) and returns a client for the admin API.
func (g *globals) adminClient() (*adminClient, error) {
	addr := g.addr
	if addr == "" {
		addr = os.Getenv("SWITCHBOARD_ADDR")
	}
	if addr == "" {
		addr = defaultAddr
	}
	base, err := baseURL(addr)
	if err != nil {
		return nil, err
	}
	key, err := g.resolveKey()
	if err != nil {
		return nil, err
	}
	if g.timeout <= 0 {
		return nil, usagef("--timeout must be positive, got %v", g.timeout)
	}
	tlsConfig, err := g.tlsConfig()
	if err != nil {
		return nil, err
	}
	return newAdminClient(base, key, g.timeout, tlsConfig), nil
}

// tlsConfig trusts --ca-file (or SWITCHBOARD_CA_FILE) for https://, in
// place of the system's roots; nil without one.
func (g *globals) tlsConfig() (*tls.Config, error) {
	file := g.caFile
	if file == "" {
		file = os.Getenv("SWITCHBOARD_CA_FILE")
	}
	if file == "" {
		return nil, nil
	}
	pool, err := certs.ReadPool(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// resolveKey picks the admin key: --admin-key, --admin-key-file,
// SWITCHBOARD_ADMIN_KEY, SWITCHBOARD_ADMIN_KEY_FILE, in that order; giving
// both forms at the same level is ambiguous and refused.
func (g *globals) resolveKey() (string, error) {
	key, file, source := g.adminKey, g.adminKeyFile, "flags"
	if key == "" && file == "" {
		key, file, source = os.Getenv("SWITCHBOARD_ADMIN_KEY"), os.Getenv("SWITCHBOARD_ADMIN_KEY_FILE"), "environment"
	}
	switch {
	case key != "" && file != "":
		return "", usagef("both an admin key and an admin key file given in the %s; give one", source)
	case key != "":
		return strings.TrimSpace(key), nil
	case file != "":
		key, err := secret.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("admin key file: %w", err)
		}
		return key, nil
	}
	return "", usagef("an admin key is required: --admin-key, --admin-key-file, SWITCHBOARD_ADMIN_KEY or SWITCHBOARD_ADMIN_KEY_FILE")
}

// baseURL accepts "host:port" or an http(s) URL and returns it without a
// trailing slash.
func baseURL(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", usagef("--addr %q: %v", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", usagef("--addr %q: want an http:// or https:// URL", addr)
	}
	if u.Host == "" {
		return "", usagef("--addr %q: no host", addr)
	}
	return strings.TrimRight(u.String(), "/"), nil
}
