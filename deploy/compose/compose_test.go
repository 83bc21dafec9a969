// Package compose tests the compose lab of this folder end to end, with
// the commands a user types (DESIGN.md §8): deploy/docker/build.sh, compose
// up, drill.sh, compose down -v.
package compose

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/certs"
	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/protocol"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

const (
	// project keeps the test's containers, network and volumes apart from
	// a user's lab (project "compose"), and is the same on every run so
	// that a crashed run's leftovers are taken down first.
	project = "sbcomposetest"
	// imageTag is the image the test builds and the lab runs
	// (SWITCHBOARD_TAG in compose.yaml).
	imageTag = "compose-test"
)

var nodeIDs = []string{"n1", "n2", "n3", "n4", "n5"}

func publicURL(id string) string { return "https://127.0.0.1:710" + strings.TrimPrefix(id, "n") }

// composeCommand is docker-compose (v1, what CI has) or docker compose
// (v2), whichever exists; nil if neither does.
func composeCommand() []string {
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	return nil
}

// dockerWorks says whether the docker CLI reaches a daemon.
func dockerWorks() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info").Run() == nil
}

// run runs a command in dir for at most limit and returns its stdout; it
// fails the test with the command's output on an error.
func run(t *testing.T, dir string, limit time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	out, errOut, err := runQuiet(dir, limit, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func runQuiet(dir string, limit time.Duration, env []string, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 10 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %v)", ctx.Err(), limit)
	}
	return out.String(), errOut.String(), err
}

func TestComposeLabDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and runs five containers")
	}
	compose := composeCommand()
	testenv.Require(t, compose != nil && dockerWorks(), "the compose lab needs Docker and docker-compose (or docker compose)")

	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(here, "..", "..")
	lab := filepath.Join(here, "lab")
	env := []string{"SWITCHBOARD_TAG=" + imageTag}
	composeArgs := func(args ...string) []string {
		return append(append(compose[1:], "-p", project, "-f", filepath.Join(here, "compose.yaml")), args...)
	}
	down := func() (string, string, error) {
		return runQuiet(repo, 3*time.Minute, env, compose[0], composeArgs("down", "-v", "--remove-orphans", "--timeout", "5")...)
	}

	// A crashed earlier run's containers and volumes go first; a lab of
	// the user's (other containers named sb-n…) holds the names and ports.
	if out, errOut, err := down(); err != nil {
		t.Fatalf("compose down of leftovers: %v\n%s%s", err, out, errOut)
	}
	others := strings.Fields(run(t, repo, time.Minute, nil, "docker", "ps", "-a", "--filter", "name=^sb-n[1-5]$", "--format", "{{.Names}}"))
	testenv.Require(t, len(others) == 0, fmt.Sprintf("another compose lab holds the containers %v and ports 7101-7105: take it down first (docker compose -f deploy/compose/compose.yaml down -v)", others))
	_, labErr := os.Stat(lab)
	ownLab := os.IsNotExist(labErr)
	t.Cleanup(func() {
		out, errOut, err := down()
		if err != nil {
			t.Errorf("compose down -v: %v\n%s%s", err, out, errOut)
		}
		// The lab folder goes with the lab, unless it was there before
		// (a user's lab keeps its secrets).
		if ownLab {
			if err := os.RemoveAll(lab); err != nil {
				t.Errorf("removing %s: %v", lab, err)
			}
		}
	})

	// The documented commands, from another working directory.
	start := time.Now()
	run(t, t.TempDir(), 15*time.Minute, nil, filepath.Join(repo, "deploy", "docker", "build.sh"), imageTag)
	t.Logf("image built in %v", time.Since(start).Round(time.Second))
	// Non-root, the three ports, the version stamped.
	var img struct {
		Config struct {
			User         string
			ExposedPorts map[string]struct{}
			Entrypoint   []string
			Labels       map[string]string
		}
	}
	inspect := run(t, repo, time.Minute, nil, "docker", "image", "inspect", "-f", "{{json .}}", "switchboard:"+imageTag)
	if err := json.Unmarshal([]byte(inspect), &img); err != nil {
		t.Fatalf("docker image inspect: %v", err)
	}
	version := img.Config.Labels["org.opencontainers.image.version"]
	if u := img.Config.User; u == "" || u == "root" || strings.HasPrefix(u, "0") || version == "" ||
		strings.Join(img.Config.Entrypoint, " ") != "/usr/local/bin/switchboard" {
		t.Errorf("image config %+v", img.Config)
	}
	for _, p := range []string{"7700/tcp", "7701/tcp", "7702/tcp"} {
		if _, ok := img.Config.ExposedPorts[p]; !ok {
			t.Errorf("image does not expose %s: %v", p, img.Config.ExposedPorts)
		}
	}
	start = time.Now()
	run(t, t.TempDir(), 5*time.Minute, env, compose[0], composeArgs("up", "-d")...)
	logs := func() {
		if t.Failed() {
			for _, id := range nodeIDs {
				out, errOut, _ := runQuiet(repo, time.Minute, nil, "docker", "logs", "--tail", "40", "sb-"+id)
				t.Logf("docker logs sb-%s:\n%s%s", id, out, errOut)
			}
		}
	}
	t.Cleanup(logs) // runs before the compose down registered earlier

	hc := labHTTPClient(t, lab)
	defer hc.CloseIdleConnections()
	for _, id := range nodeIDs {
		waitFor(t, 3*time.Minute, id+" ready", func() bool {
			st, _ := get(hc, publicURL(id)+"/readyz", "")
			return st == http.StatusOK
		})
	}
	t.Logf("lab up and ready in %v", time.Since(start).Round(time.Second))
	_, nodeLog, _ := runQuiet(repo, time.Minute, nil, "docker", "logs", "sb-n1")
	if !strings.Contains(nodeLog, `msg="switchboard starting" version=`+version) {
		t.Errorf("sb-n1 does not log version %s first:\n%.500s", version, nodeLog)
	}

	// Every node: mutual TLS on the cluster port, all five alive with
	// their places, a leader, and encrypted gossip everywhere.
	adminKey := readSecret(t, lab, "admin-key")
	places := map[string]string{"n1": "r1/a", "n2": "r1/b", "n3": "r2/a", "n4": "r2/b", "n5": "r3/a"}
	for _, id := range nodeIDs {
		var cv protocol.Cluster
		waitFor(t, time.Minute, id+" sees five alive nodes and a leader", func() bool {
			st, body := get(hc, publicURL(id)+"/v1/cluster", adminKey)
			cv = protocol.Cluster{}
			if st != http.StatusOK || json.Unmarshal(body, &cv) != nil || cv.Leader == "" || len(cv.Nodes) != 5 {
				return false
			}
			for _, m := range cv.Nodes {
				if m.State != "alive" {
					return false
				}
			}
			return true
		})
		if !cv.ClusterTLS {
			t.Errorf("%s: cluster_tls false", id)
		}
		for _, m := range cv.Nodes {
			if places[m.ID] != m.Region+"/"+m.Zone || m.PublicURL != publicURL(m.ID) {
				t.Errorf("%s lists %+v", id, m)
			}
		}
		var keys struct {
			Encrypted bool `json:"encrypted"`
			Nodes     int  `json:"nodes"`
		}
		st, body := get(hc, publicURL(id)+"/v1/gossip/keys", adminKey)
		if st != http.StatusOK || json.Unmarshal(body, &keys) != nil || !keys.Encrypted {
			t.Errorf("%s: /v1/gossip/keys %d %s", id, st, body)
		}
	}

	// A client of the Go SDK and a publisher, on the host, through the
	// published ports and the lab's CA.
	checkClientAndPublisher(t, lab, hc)

	// The drill: SIGKILL the container of the node owning the most drill
	// users; the report's last line is one JSON object.
	start = time.Now()
	out, errOut, err := runQuiet(t.TempDir(), 5*time.Minute, nil, filepath.Join(here, "drill.sh"), "--users", "30", "--rate", "100", "--duration", "10s")
	t.Logf("drill.sh in %v:\n%s\nstderr:\n%s", time.Since(start).Round(time.Second), out, errOut)
	if err != nil {
		t.Errorf("drill.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rep struct {
		Users, Affected, Acked, Lost, Duplicated, Gaps, Resumed int
		OutOfOrder                                              int      `json:"out_of_order"`
		ContinuityLost                                          int      `json:"continuity_lost"`
		RTOP50                                                  *float64 `json:"rto_p50_ms"`
		RTOP99                                                  *float64 `json:"rto_p99_ms"`
		RTOMax                                                  *float64 `json:"rto_max_ms"`
		Target                                                  string
		Killed                                                  []string
	}
	dec := json.NewDecoder(strings.NewReader(lines[len(lines)-1]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("the last line is not the report's JSON object: %v: %q", err, lines[len(lines)-1])
	}
	switch {
	case rep.Users != 30 || rep.Acked == 0 || rep.RTOP50 == nil || rep.RTOP99 == nil || rep.RTOMax == nil:
		t.Errorf("report %+v", rep)
	case rep.Lost != 0 || rep.Duplicated != 0 || rep.Gaps != 0 || rep.OutOfOrder != 0:
		t.Errorf("lost %d, duplicated %d, gaps %d, out of order %d", rep.Lost, rep.Duplicated, rep.Gaps, rep.OutOfOrder)
	case rep.Affected == 0 || rep.Resumed < rep.Affected || rep.ContinuityLost != 0:
		t.Errorf("%d users on the killed node, %d resumed, %d lost continuity", rep.Affected, rep.Resumed, rep.ContinuityLost)
	case len(rep.Killed) != 1 || rep.Killed[0] != rep.Target:
		t.Errorf("killed %v, target %q", rep.Killed, rep.Target)
	}
	// The target's container really died of the SIGKILL.
	if rep.Target != "" {
		state := strings.TrimSpace(run(t, repo, time.Minute, nil, "docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", "sb-"+rep.Target))
		if state != "false 137" {
			t.Errorf("sb-%s after the drill: running, exit code = %s; want false 137", rep.Target, state)
		}
	}
}

// checkClientAndPublisher connects a Go SDK client to every node's wss://
// URL on the host and publishes to its user through another node.
func checkClientAndPublisher(t *testing.T, lab string, hc *http.Client) {
	t.Helper()
	tok, err := token.Mint([]byte(readSecret(t, lab, "token-secret")), "compose-test-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.DefaultConfig()
	for _, id := range nodeIDs {
		cfg.Endpoints = append(cfg.Endpoints, "wss://"+strings.TrimPrefix(publicURL(id), "https://")+"/v1/connect")
	}
	cfg.Token = client.StaticToken(tok)
	cfg.TLS = hc.Transport.(*http.Transport).TLSClientConfig
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("client through the host ports: %v", err)
	}
	defer c.Close()
	// Publish through a node other than the client's.
	via := publicURL("n5")
	if c.Node() == "n5" {
		via = publicURL("n4")
	}
	pub := client.NewPublisher([]string{via}, readSecret(t, lab, "api-key"), hc)
	const total = 5
	for i := 1; i <= total; i++ {
		if _, err := pub.Publish(ctx, "compose-test-user", map[string]int{"i": i}, fmt.Sprintf("compose-%d", i)); err != nil {
			t.Fatalf("publish %d through %s: %v", i, via, err)
		}
	}
	for i := 1; i <= total; i++ {
		select {
		case m := <-c.Messages():
			if m.ID != fmt.Sprintf("compose-%d", i) || string(m.Data) != fmt.Sprintf(`{"i":%d}`, i) {
				t.Fatalf("message %d: %+v", i, m)
			}
		case <-ctx.Done():
			t.Fatalf("message %d did not arrive on %s", i, c.Node())
		}
	}
}

// labHTTPClient trusts the lab's CA, as a client on the host does.
func labHTTPClient(t *testing.T, lab string) *http.Client {
	t.Helper()
	var pool *x509.CertPool
	waitFor(t, 2*time.Minute, "lab/ca.pem", func() bool {
		var err error
		pool, err = certs.ReadPool(filepath.Join(lab, "ca.pem"))
		return err == nil
	})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func readSecret(t *testing.T, lab, name string) string {
	t.Helper()
	v, err := secret.ReadFile(filepath.Join(lab, name))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// get answers the status and body of a GET, 0 on a network error.
func get(hc *http.Client, url, adminKey string) (int, []byte) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil
	}
	if adminKey != "" {
		req.Header.Set("Authorization", "Bearer "+adminKey)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body
}

// waitFor polls cond every half second for at most limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
