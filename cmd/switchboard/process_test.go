package main

// Multi-process tests: the real switchboard binary, started with exactly
// the DESIGN.md §6 command line, spoken to only through its public
// interfaces (WebSocket, publish and admin HTTP), killed with real signals.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/testenv"
	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/protocol"
)

var (
	binDir    string // removed by TestMain
	buildOnce sync.Once
	binPath   string
	buildErr  error
	noGo      error // set when there is no go toolchain to build with
)

// TestMain owns the directory the binary is built into, and fails the
// package if a goroutine outlives the tests (polling, as HTTP keep-alive
// goroutines end a moment after their servers go away).
func TestMain(m *testing.M) {
	code := func() int {
		var err error
		if binDir, err = os.MkdirTemp("", "switchboard-bin-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(binDir)
		code := m.Run()
		if code == 0 {
			if err = testenv.FindLeaks(); err != nil {
				fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
				code = 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// binary builds cmd/switchboard once per test run and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			noGo = err
			return
		}
		binPath = filepath.Join(binDir, "switchboard")
		out, err := exec.Command(goBin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if noGo != nil {
		t.Skip("no go toolchain to build the binary:", noGo)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one switchboard process; its output goes to files that are
// shown when the test fails.
type proc struct {
	name     string
	args     []string
	env      []string
	dir      string
	out, err string // stdout and stderr files, appended across restarts

	cmd    *exec.Cmd
	exited chan struct{}
}

// fleet starts processes for one test and kills whatever still runs when
// the test ends.
type fleet struct {
	t     *testing.T
	bin   string
	dir   string
	procs []*proc
	// nodeArgs are added to every node startNode starts, after the §6
	// flags (--enable-fault-injection, say).
	nodeArgs []string
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{t: t, bin: binary(t), dir: t.TempDir()}
	t.Cleanup(f.cleanup)
	return f
}

func (f *fleet) cleanup() {
	for _, p := range f.procs {
		if p.running() {
			_ = p.cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				f.t.Errorf("%s: not gone 10s after SIGKILL", p.name)
			}
		}
	}
	if f.t.Failed() {
		for _, p := range f.procs {
			for _, file := range []string{p.out, p.err} {
				f.t.Logf("==== %s %s\n%s", p.name, filepath.Base(file), tail(file, 120))
			}
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// start runs a new process in dir (the fleet's dir when empty) with args
// and extra environment.
func (f *fleet) start(name, dir string, args, env []string) *proc {
	f.t.Helper()
	if dir == "" {
		dir = f.dir
	}
	p := &proc{
		name: name, args: args, env: env, dir: dir,
		out: filepath.Join(f.dir, name+".stdout"), err: filepath.Join(f.dir, name+".stderr"),
	}
	f.procs = append(f.procs, p)
	f.run(p)
	return p
}

// run (re)starts p with its original command line.
func (f *fleet) run(p *proc) {
	f.t.Helper()
	open := func(path string) *os.File {
		fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			f.t.Fatal(err)
		}
		fmt.Fprintf(fh, "---- start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
		return fh
	}
	stdout, stderr := open(p.out), open(p.err)
	defer stdout.Close()
	defer stderr.Close()
	cmd := exec.Command(f.bin, p.args...)
	cmd.Dir = p.dir
	// Only what the test sets: no SWITCHBOARD_* leaks in from outside.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, p.env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		f.t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not gone 10s after SIGKILL", p.name)
	}
}

// member is a cluster node started with the §6 flags.
type member struct {
	*proc
	id                          string
	public, cluster, gossip     string
	region, zone                string
	tokenSecret, apiKey, admKey string // trimmed values
	tls                         bool   // its public listener speaks HTTPS and WSS
}

func (n *member) base() string {
	if n.tls {
		return "https://" + n.public
	}
	return "http://" + n.public
}

func (n *member) wsURL() string {
	if n.tls {
		return "wss://" + n.public + "/v1/connect"
	}
	return "ws://" + n.public + "/v1/connect"
}

// freePorts returns n loopback TCP ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int { return clustertest.FreePorts(t, n) }

// Secret files hold their value with white space around it: the node
// must trim it (§3), or no token or key below would be accepted.
const (
	procTokenSecret = "proc-token-secret"
	procAPIKey      = "proc-api-key"
	procAdminKey    = "proc-admin-key"
)

func writeSecrets(t *testing.T, dir string) (tokenFile, apiFile, adminFile string) {
	t.Helper()
	// Written to a temporary name and renamed: a node already starting
	// from the same files must never read a half-written (empty) one.
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		tmp, err := os.CreateTemp(dir, name+".*.tmp")
		if err == nil {
			_, err = tmp.WriteString(" \n\t" + v + " \r\n\n")
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			err = os.Rename(tmp.Name(), p)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("token-secret", procTokenSecret), write("api-key", procAPIKey), write("admin-key", procAdminKey)
}

// trusted holds the CAs of the TLS clusters the tests start; the tests'
// HTTP and WebSocket clients trust them.
var trusted rootSet

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
	TLSClientConfig: trusted.config(), MaxIdleConnsPerHost: 4, IdleConnTimeout: 10 * time.Second,
}}

// rootSet is a set of CAs that grows while clients use it.
type rootSet struct {
	mu   sync.Mutex
	pool *x509.CertPool
}

// add trusts the CA in the PEM file caFile.
func (r *rootSet) add(t *testing.T, caFile string) {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pool := x509.NewCertPool()
	if r.pool != nil {
		pool = r.pool.Clone()
	}
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("no certificate in %s", caFile)
	}
	r.pool = pool
}

func (r *rootSet) roots() *x509.CertPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pool
}

// config is client TLS that verifies servers against the set as it is at
// each handshake, names included.
func (r *rootSet) config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below, against the current set
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: r.roots(), Intermediates: inter, DNSName: cs.ServerName})
			return err
		},
	}
}

// request answers status 0 with the error text on network errors, which
// the polling helpers treat like "not yet".
func request(method, url, key string, body []byte) (int, http.Header, []byte) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, []byte(err.Error())
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// eventually polls cond every 100ms until it holds; it gives up after
// timeout, or at once when a process it depends on has exited.
func eventually(t *testing.T, timeout time.Duration, what string, watch []*proc, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, p := range watch {
			if !p.running() {
				t.Fatalf("waiting for %s: %s exited (%v)", what, p.name, p.cmd.ProcessState)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitReady(t *testing.T, base string, p *proc) {
	t.Helper()
	eventually(t, 30*time.Second, p.name+" /readyz", []*proc{p}, func() bool {
		st, _, _ := request("GET", base+"/readyz", "", nil)
		return st == http.StatusOK
	})
}

// clusterOf reads GET /v1/cluster from the node at base.
func clusterOf(base, adminKey string) (protocol.Cluster, bool) {
	var cv protocol.Cluster
	st, _, body := request("GET", base+"/v1/cluster", adminKey, nil)
	if st != http.StatusOK || json.Unmarshal(body, &cv) != nil {
		return cv, false
	}
	return cv, true
}

// publish posts one message and returns the status and decoded answer.
func publish(base, apiKey, user, id string, data any) (int, protocol.PublishResult, []byte) {
	raw, _ := json.Marshal(data)
	b, _ := json.Marshal(protocol.NewPublish(user, raw, id))
	st, _, out := request("POST", base+"/v1/publish", apiKey, b)
	var a protocol.PublishResult
	if st == http.StatusOK {
		_ = json.Unmarshal(out, &a)
	}
	return st, a, out
}

// publishRetry retries a publish (same id, so it is stored once) while the
// cluster answers 503 or the node is unreachable, up to timeout.
func publishRetry(t *testing.T, timeout time.Duration, base, apiKey, user, id string, data any) protocol.PublishResult {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, a, body := publish(base, apiKey, user, id, data)
		switch {
		case st == http.StatusOK:
			return a
		case st != http.StatusServiceUnavailable && st != 0:
			t.Fatalf("publish %s to %s: %d %s", id, user, st, body)
		case time.Now().After(deadline):
			t.Fatalf("publish %s to %s: still %d %s after %v", id, user, st, body, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// frame is one server frame as a raw client reads it: decoded as a
// message frame (its Type says whether it is one), with its bytes kept
// for failure messages.
type frame struct {
	protocol.Message
	raw []byte
}

// connectWS opens a client with a hello for the token and returns it with
// its welcome.
func connectWS(t *testing.T, url, tok string) (*websocket.Conn, protocol.Welcome) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: trusted.config()}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { ws.Close() })
	hello, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeHello, Token: tok, Resume: &protocol.Resume{Seq: 0}})
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
		t.Fatal(err)
	}
	f := nextFrame(t, ws)
	var w protocol.Welcome
	if f.Type != protocol.TypeWelcome || json.Unmarshal(f.raw, &w) != nil {
		t.Fatalf("want welcome, got %s", f.raw)
	}
	return ws, w
}

// nextFrame reads the next frame other than a heartbeat.
func nextFrame(t *testing.T, ws *websocket.Conn) frame {
	t.Helper()
	for {
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame is not JSON: %q", b)
		}
		f.raw = b
		if f.Type != protocol.TypeHeartbeat {
			return f
		}
	}
}

// startNode starts a cluster node with exactly the §6 flags.
func (f *fleet) startNode(id, region, zone string, ports []int, seed *member) *member {
	f.t.Helper()
	tokenFile, apiFile, adminFile := writeSecrets(f.t, f.dir)
	n := &member{
		id: id, region: region, zone: zone,
		public:      fmt.Sprintf("127.0.0.1:%d", ports[0]),
		cluster:     fmt.Sprintf("127.0.0.1:%d", ports[1]),
		gossip:      fmt.Sprintf("127.0.0.1:%d", ports[2]),
		tokenSecret: procTokenSecret, apiKey: procAPIKey, admKey: procAdminKey,
	}
	args := []string{
		"--node-id", id, "--region", region, "--zone", zone,
		"--data-dir", filepath.Join(f.dir, id+"-data"),
		"--public-addr", n.public, "--cluster-addr", n.cluster, "--gossip-addr", n.gossip,
	}
	if seed == nil {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", seed.gossip)
	}
	args = append(args, "--token-secret-file", tokenFile, "--api-key-file", apiFile, "--admin-key-file", adminFile)
	args = append(args, f.nodeArgs...)
	n.proc = f.start(id, "", args, nil)
	return n
}

// startThree starts n1 (r1/a, bootstrapping), n2 (r1/b) and n3 (r2/a),
// joining through n1, with the §6 flags; it does not wait for them.
func (f *fleet) startThree() (n1, n2, n3 *member) {
	f.t.Helper()
	ports := freePorts(f.t, 9)
	n1 = f.startNode("n1", "r1", "a", ports[0:3], nil)
	n2 = f.startNode("n2", "r1", "b", ports[3:6], n1)
	n3 = f.startNode("n3", "r2", "a", ports[6:9], n1)
	return n1, n2, n3
}

func TestThreeProcessesServeFailOverAndRejoin(t *testing.T) {
	f := newFleet(t)
	n1, n2, n3 := f.startThree()
	nodes := []*member{n1, n2, n3}
	byID := map[string]*member{"n1": n1, "n2": n2, "n3": n3}
	procs := []*proc{n1.proc, n2.proc, n3.proc}
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
	}

	// Every node lists all three, alive, with their places, and one
	// leader with two more voters, so that losing any one keeps a quorum.
	for _, n := range nodes {
		var cv protocol.Cluster
		eventually(t, 30*time.Second, n.id+" sees 3 alive nodes and 3 voters", procs, func() bool {
			var ok bool
			if cv, ok = clusterOf(n.base(), procAdminKey); !ok || cv.Leader == "" || len(cv.Nodes) != 3 {
				return false
			}
			voters := 0
			for _, m := range cv.Nodes {
				if m.State != "alive" {
					return false
				}
				if m.Raft == "leader" || m.Raft == "voter" {
					voters++
				}
			}
			return voters == 3
		})
		for _, m := range cv.Nodes {
			want, ok := byID[m.ID]
			if !ok || m.Region != want.region || m.Zone != want.zone || m.PublicURL != want.base() {
				t.Errorf("%s lists %+v", n.id, m)
			}
		}
	}

	// A raw client of alice on n2 receives, complete and in order, what is
	// published on n1. Its token is signed with the trimmed secret.
	tok, err := token.Mint([]byte(procTokenSecret), "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ws, w := connectWS(t, n2.wsURL(), tok)
	if w.Node != "n2" {
		t.Fatalf("welcome from %q, want n2: %+v", w.Node, w)
	}
	const total = 50
	for i := 1; i <= total; i++ {
		st, a, body := publish(n1.base(), procAPIKey, "alice", fmt.Sprintf("m%d", i), map[string]int{"i": i})
		if st != http.StatusOK || a.Seq != uint64(i) {
			t.Fatalf("publish %d on n1: %d %s", i, st, body)
		}
	}
	for i := 1; i <= total; i++ {
		m := nextFrame(t, ws)
		if m.Type != "message" || m.Seq != uint64(i) || m.ID != fmt.Sprintf("m%d", i) || string(m.Data) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("frame %d: %s", i, m.raw)
		}
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, n.id+" names n2 as alice's owner", procs, func() bool {
			st, _, body := request("GET", n.base()+"/v1/sessions/alice", procAdminKey, nil)
			var s protocol.Session
			return st == http.StatusOK && json.Unmarshal(body, &s) == nil && s.Owner == "n2" && s.Session == w.Session
		})
	}

	// SIGKILL the leader: the others elect a new one and keep accepting.
	cv, _ := clusterOf(n1.base(), procAdminKey)
	old := byID[cv.Leader]
	if old == nil {
		t.Fatalf("leader %q is not a node", cv.Leader)
	}
	t.Logf("killing leader %s", old.id)
	old.kill(t)
	var alive []*member
	var aliveProcs []*proc
	for _, n := range nodes {
		if n != old {
			alive = append(alive, n)
			aliveProcs = append(aliveProcs, n.proc)
		}
	}
	eventually(t, 30*time.Second, "a new leader both survivors agree on", aliveProcs, func() bool {
		leader := ""
		for _, n := range alive {
			cv, ok := clusterOf(n.base(), procAdminKey)
			if !ok || cv.Leader == "" || cv.Leader == old.id || (leader != "" && cv.Leader != leader) {
				return false
			}
			leader = cv.Leader
		}
		return true
	})
	for i, n := range alive {
		a := publishRetry(t, 30*time.Second, n.base(), procAPIKey, fmt.Sprintf("bob%d", i), "after-kill", "x")
		if a.Seq != 1 {
			t.Errorf("bob%d after the kill: seq %d, want 1", i, a.Seq)
		}
	}
	if old != n2 {
		// alice's node lives: her stream continues where it was.
		a := publishRetry(t, 30*time.Second, alive[0].base(), procAPIKey, "alice", "m51", map[string]int{"i": 51})
		if a.Seq != total+1 {
			t.Errorf("alice after the kill: seq %d, want %d", a.Seq, total+1)
		}
		if m := nextFrame(t, ws); m.Type != "message" || m.Seq != total+1 || m.ID != "m51" {
			t.Fatalf("after the kill: %s", m.raw)
		}
	}

	// Restarted with its original flags (--bootstrap included, if it was
	// n1) and data dir, the killed node rejoins.
	f.run(old.proc)
	waitReady(t, old.base(), old.proc)
	for _, n := range nodes {
		eventually(t, 30*time.Second, n.id+" lists "+old.id+" alive again", procs, func() bool {
			cv, ok := clusterOf(n.base(), procAdminKey)
			if !ok || cv.Leader == "" {
				return false
			}
			for _, m := range cv.Nodes {
				if m.ID == old.id {
					return m.State == "alive"
				}
			}
			return false
		})
	}
	if a := publishRetry(t, 30*time.Second, old.base(), procAPIKey, "carol", "after-restart", "y"); a.Seq != 1 {
		t.Errorf("publish through the restarted node: %+v", a)
	}
}

func TestEnvironmentConfiguresNode(t *testing.T) {
	f := newFleet(t)
	ports := freePorts(t, 3)
	tokenFile, apiFile, adminFile := writeSecrets(t, f.dir)
	public := fmt.Sprintf("127.0.0.1:%d", ports[0])
	env := []string{
		"SWITCHBOARD_NODE_ID=envnode",
		"SWITCHBOARD_REGION=env-region",
		"SWITCHBOARD_ZONE=env-zone",
		"SWITCHBOARD_DATA_DIR=" + filepath.Join(f.dir, "env-data"),
		"SWITCHBOARD_PUBLIC_ADDR=" + public,
		fmt.Sprintf("SWITCHBOARD_CLUSTER_ADDR=127.0.0.1:%d", ports[1]),
		fmt.Sprintf("SWITCHBOARD_GOSSIP_ADDR=127.0.0.1:%d", ports[2]),
		"SWITCHBOARD_BOOTSTRAP=true",
		"SWITCHBOARD_TOKEN_SECRET_FILE=" + tokenFile,
		"SWITCHBOARD_API_KEY_FILE=" + apiFile,
		"SWITCHBOARD_ADMIN_KEY_FILE=" + adminFile,
	}
	p := f.start("envnode", "", nil, env)
	base := "http://" + public
	waitReady(t, base, p)
	var cv protocol.Cluster
	eventually(t, 10*time.Second, "the cluster view", []*proc{p}, func() bool {
		var ok bool
		cv, ok = clusterOf(base, procAdminKey)
		return ok && cv.Leader != ""
	})
	if len(cv.Nodes) != 1 || cv.Leader != "envnode" || cv.Nodes[0].ID != "envnode" ||
		cv.Nodes[0].Region != "env-region" || cv.Nodes[0].Zone != "env-zone" || cv.Nodes[0].PublicURL != base {
		t.Fatalf("cluster view from environment config: %+v", cv)
	}
	// No cluster TLS flags: said at start, and in the cluster view.
	if log, _ := os.ReadFile(p.err); cv.ClusterTLS || !strings.Contains(string(log), "cluster ports must be on a private network") {
		t.Errorf("without cluster TLS: cluster_tls %v, and the log:\n%s", cv.ClusterTLS, log)
	}
	tok, _ := token.Mint([]byte(procTokenSecret), "erin", time.Hour)
	ws, w := connectWS(t, "ws://"+public+"/v1/connect", tok)
	if w.Node != "envnode" {
		t.Fatalf("welcome: %+v", w)
	}
	publishRetry(t, 10*time.Second, base, procAPIKey, "erin", "e1", "from env")
	if m := nextFrame(t, ws); m.Type != "message" || m.Seq != 1 || string(m.Data) != `"from env"` {
		t.Fatalf("message: %s", m.raw)
	}
}

// devOutput is what --dev prints for the operator.
var devOutput = map[string]*regexp.Regexp{
	"ws":       regexp.MustCompile(`client WebSocket\s+(ws://\S+)`),
	"publish":  regexp.MustCompile(`publish API\s+(http://\S+)/v1/publish`),
	"admin":    regexp.MustCompile(`admin API\s+(http://\S+)/v1/cluster`),
	"token":    regexp.MustCompile(`token \(user "demo"[^)]*\)\s+(\S+)`),
	"apikey":   regexp.MustCompile(`API key\s+(\S+)`),
	"adminkey": regexp.MustCompile(`admin key\s+(\S+)`),
}

// portsFree reports whether the --dev default ports can be bound now.
func portsFree(ports ...int) bool {
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

func TestDevModeServesWithPrintedCredentialsAndStopsOnSIGTERM(t *testing.T) {
	f := newFleet(t)
	cwd := t.TempDir()
	args := []string{"--dev"}
	if !portsFree(7700, 7701, 7702) {
		// Something else holds the embedded default ports; the printout
		// must then show the addresses given instead.
		ports := freePorts(t, 3)
		args = append(args, "--public-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"--cluster-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]))
		t.Log("ports 7700-7702 are busy; running --dev on", ports)
	}
	p := f.start("dev", cwd, args, nil)

	got := map[string]string{}
	eventually(t, 30*time.Second, "the --dev printout", []*proc{p}, func() bool {
		out, _ := os.ReadFile(p.out)
		for k, re := range devOutput {
			m := re.FindSubmatch(out)
			if m == nil {
				return false
			}
			got[k] = string(m[1])
		}
		return true
	})
	if got["publish"] != got["admin"] || got["ws"] != "ws://"+strings.TrimPrefix(got["publish"], "http://")+"/v1/connect" {
		t.Errorf("printed URLs disagree: %v", got)
	}
	base := got["publish"]
	waitReady(t, base, p)
	for _, name := range []string{"token-secret", "api-key", "admin-key"} {
		if _, err := os.Stat(filepath.Join(cwd, "switchboard-data", name)); err != nil {
			t.Errorf("--dev data dir: %v", err)
		}
	}
	if st, _, body := request("GET", got["admin"]+"/v1/cluster", got["adminkey"], nil); st != http.StatusOK {
		t.Errorf("admin API with the printed admin key: %d %s", st, body)
	}

	ws, _ := connectWS(t, got["ws"], got["token"])
	publishRetry(t, 10*time.Second, base, got["apikey"], "demo", "d1", map[string]string{"hello": "world"})
	if m := nextFrame(t, ws); m.Type != "message" || m.Seq != 1 || string(m.Data) != `{"hello":"world"}` {
		t.Fatalf("message: %s", m.raw)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}
