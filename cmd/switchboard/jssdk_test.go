package main

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
)

// The browser SDK (client/js/switchboard.js) under Node's test runner,
// against three real processes: connect, receive, subscribe, presence,
// and a SIGKILLed node whose client resumes elsewhere with nothing lost
// (client/js/test/sdk.test.mjs).
func TestJSSDKAgainstRealCluster(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node (Node.js 20+) is not installed")
	ver, _ := exec.Command(nodeBin, "--version").Output()
	major, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(strings.TrimSpace(string(ver)), ".", 2)[0], "v"))
	testenv.Require(t, major >= 20, "node "+strings.TrimSpace(string(ver))+" has no WebSocket: Node.js 20+ is needed")
	f := newFleet(t)
	n1, n2, n3 := f.startThree()
	nodes := []*member{n1, n2, n3}
	var eps, bases, pids []string
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
		eps = append(eps, n.wsURL())
		bases = append(bases, n.base())
		pids = append(pids, strconv.Itoa(n.cmd.Process.Pid))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "--experimental-websocket", "--test", "--test-reporter=spec", "../../client/js/test/sdk.test.mjs")
	cmd.Env = append(os.Environ(),
		"SB_ENDPOINTS="+strings.Join(eps, ","), "SB_BASES="+strings.Join(bases, ","), "SB_PIDS="+strings.Join(pids, ","),
		"SB_API_KEY="+procAPIKey, "SB_TOKEN_SECRET="+procTokenSecret)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
}
