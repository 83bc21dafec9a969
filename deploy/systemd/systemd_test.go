// Package systemd checks the unit and environment file of deploy/systemd:
// systemd itself verifies the unit, and every SWITCHBOARD_* variable is a
// flag the node parses.
package systemd

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
)

const (
	unitFile = "switchboard.service"
	envFile  = "switchboard.env"
	// Where the unit expects things on a host.
	installedBinary  = "/usr/local/bin/switchboard"
	installedEnvFile = "/etc/switchboard/switchboard.env"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	buildOut  []byte
)

// switchboardBinary builds cmd/switchboard once for the package's tests.
func switchboardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-systemd-test")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "switchboard")
		cmd := exec.Command("go", "build", "-o", binary, "github.com/switchboard/switchboard/cmd/switchboard")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build cmd/switchboard: %v\n%s", buildErr, buildOut)
	}
	return binary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	os.Exit(code)
}

// unit reads the unit file as key → values (a key may repeat).
func unit(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=VALUE", unitFile, line)
		}
		out[k] = append(out[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// env reads the environment file's assignments, in order.
func env(t *testing.T) ([]string, map[string]string) {
	t.Helper()
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	vals := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not NAME=VALUE", envFile, line)
		}
		if _, dup := vals[k]; dup {
			t.Errorf("%s: %s set twice", envFile, k)
		}
		names = append(names, k)
		vals[k] = v
	}
	return names, vals
}

// systemd-analyze verify accepts the unit without a word: it points at a
// real binary (a build of cmd/switchboard) and the environment file.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	testenv.Require(t, err == nil, "systemd-analyze is not installed (Debian package systemd)")
	bin := switchboardBinary(t)
	envPath, err := filepath.Abs(envFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for old, repl := range map[string]string{
		"ExecStart=" + installedBinary:        "ExecStart=" + bin,
		"EnvironmentFile=" + installedEnvFile: "EnvironmentFile=" + envPath,
	} {
		if !strings.Contains(text, old) {
			t.Fatalf("%s lacks %q", unitFile, old)
		}
		text = strings.ReplaceAll(text, old, repl)
	}
	tmp := filepath.Join(t.TempDir(), unitFile)
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "verify", tmp).CombinedOutput()
	// verify exits 0 on unknown keys and bad values, which it only
	// reports: any output is a finding.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// Every variable of the environment file is SWITCHBOARD_<FLAG> of a flag
// the node has, and the node parses every value: started with only this
// environment, it gets past the flags and stops at the first missing
// secret file.
func TestEnvFileSetsRealFlags(t *testing.T) {
	bin := switchboardBinary(t)
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1) {
		flags[m[1]] = true
	}
	if !flags["node-id"] || !flags["bootstrap-expect"] {
		t.Fatalf("could not read the flags from switchboard --help:\n%s", help)
	}
	names, vals := env(t)
	for _, name := range names {
		flag, ok := strings.CutPrefix(name, "SWITCHBOARD_")
		flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-"))
		if !ok || !flags[flag] {
			t.Errorf("%s: no flag --%s (SWITCHBOARD_<FLAG>, upper case, - as _)", name, flag)
		}
	}
	for _, must := range []string{"NODE_ID", "REGION", "ZONE", "DATA_DIR", "PUBLIC_ADDR", "CLUSTER_ADDR", "GOSSIP_ADDR",
		"JOIN", "TOKEN_SECRET_FILE", "API_KEY_FILE", "ADMIN_KEY_FILE", "DRAIN_TIMEOUT"} {
		if vals["SWITCHBOARD_"+must] == "" {
			t.Errorf("%s does not set SWITCHBOARD_%s", envFile, must)
		}
	}

	// Secrets and certificates live in /etc/switchboard: point that at an
	// empty directory so the run stops at the first of them.
	missing := t.TempDir()
	environ := []string{"PATH=" + os.Getenv("PATH")}
	for _, name := range names {
		environ = append(environ, name+"="+strings.ReplaceAll(vals[name], "/etc/switchboard", missing))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	// The last line is the error the node stopped with.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err == nil || !strings.HasPrefix(lines[len(lines)-1], "switchboard: --token-secret-file:") || strings.Contains(string(out), "SWITCHBOARD_") {
		t.Fatalf("switchboard with %s: %v\n%s\nwant it to parse every variable and stop at the missing token secret file", envFile, err, out)
	}
}

// The unit's settings that matter, against the environment file: the stop
// timeout covers the drain, the open-file limit the connections, and the
// hardening is in place.
func TestUnitSettings(t *testing.T) {
	u := unit(t)
	_, vals := env(t)
	one := func(key string) string {
		if v := u[key]; len(v) > 0 {
			return v[len(v)-1] // systemd: the last assignment wins
		}
		return "<unset>"
	}
	for key, want := range map[string]string{
		"ExecStart":               installedBinary,
		"EnvironmentFile":         installedEnvFile,
		"User":                    "switchboard",
		"StateDirectory":          "switchboard",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	} {
		if got := one(key); got != want {
			t.Errorf("%s=%s, want %s=%s", key, got, key, want)
		}
	}
	if vals["SWITCHBOARD_DATA_DIR"] != "/var/lib/"+one("StateDirectory") {
		t.Errorf("SWITCHBOARD_DATA_DIR %q is not the StateDirectory /var/lib/%s, the only place the unit lets the node write",
			vals["SWITCHBOARD_DATA_DIR"], one("StateDirectory"))
	}

	drain, err := time.ParseDuration(vals["SWITCHBOARD_DRAIN_TIMEOUT"])
	if err != nil {
		t.Fatalf("SWITCHBOARD_DRAIN_TIMEOUT: %v", err)
	}
	stop, err := time.ParseDuration(strings.ReplaceAll(one("TimeoutStopSec"), " ", ""))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", one("TimeoutStopSec"), err)
	}
	if stop < drain+10*time.Second {
		t.Errorf("TimeoutStopSec=%v does not cover the drain (%v) plus 10 s to leave and close", stop, drain)
	}

	nofile, err := strconv.Atoi(one("LimitNOFILE"))
	if err != nil {
		t.Fatalf("LimitNOFILE=%s: %v", one("LimitNOFILE"), err)
	}
	conns, err := strconv.Atoi(vals["SWITCHBOARD_MAX_CONNECTIONS"])
	if err != nil {
		t.Fatalf("SWITCHBOARD_MAX_CONNECTIONS: %v", err)
	}
	if conns < 100000 || nofile < conns+10000 {
		t.Errorf("LimitNOFILE=%d for %d connections: want 100,000+ connections and room for peers and files", nofile, conns)
	}

	// No capability: every listener must be on an unprivileged port.
	for _, name := range []string{"SWITCHBOARD_PUBLIC_ADDR", "SWITCHBOARD_ADMIN_ADDR", "SWITCHBOARD_CLUSTER_ADDR", "SWITCHBOARD_GOSSIP_ADDR"} {
		v := vals[name]
		i := strings.LastIndex(v, ":")
		port, err := strconv.Atoi(v[i+1:])
		if i < 0 || err != nil || port <= 1024 {
			t.Errorf("%s=%s: want a port above 1024 (the unit grants no capability)", name, v)
		}
	}
}
