package main

// The drill acceptance test (issue 11): sbctl drill against three real
// processes started with --enable-fault-injection, through a crash, an
// isolation and a drain, and sbload --scenario drill on the same cluster,
// whose report must have the same fields (one engine, internal/load).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/load"
)

var (
	toolsOnce sync.Once
	toolsErr  error
)

// tools builds sbctl and sbload next to the switchboard binary, once.
func tools(t *testing.T) (sbctl, sbload string) {
	t.Helper()
	binary(t) // skips without a go toolchain
	sbctl, sbload = filepath.Join(binDir, "sbctl"), filepath.Join(binDir, "sbload")
	toolsOnce.Do(func() {
		for _, b := range []struct{ out, pkg string }{{sbctl, "../sbctl"}, {sbload, "../sbload"}} {
			if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
				toolsErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if toolsErr != nil {
		t.Fatal(toolsErr)
	}
	return sbctl, sbload
}

// runTool runs a command line tool with env added, and returns its exit
// code, stdout and stderr.
func runTool(t *testing.T, bin string, env []string, args ...string) (int, []byte, []byte) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: %v", filepath.Base(bin), err)
		}
		code = ee.ExitCode()
	}
	return code, out.Bytes(), errOut.Bytes()
}

// drillFields are the report's §6 names and the engine's accounting,
// which every drill must report as numbers.
var drillFields = []string{"users", "acked", "lost", "duplicated", "gaps", "out_of_order", "resumed",
	"continuity_lost", "rto_p50_ms", "rto_p99_ms", "rto_max_ms", "new_owner_ms", "affected", "rewelcomed", "unacked"}

// checkDrill decodes a drill's JSON report and checks what the issue
// asks: nothing lost, duplicated, gapped or reordered, and every user on
// the target resumed elsewhere.
func checkDrill(t *testing.T, what string, out []byte, users int) (load.DrillReport, map[string]any) {
	t.Helper()
	var fields map[string]any
	var rep load.DrillReport
	if json.Unmarshal(out, &fields) != nil || json.Unmarshal(out, &rep) != nil {
		t.Fatalf("%s: stdout is not one JSON object:\n%s", what, out)
	}
	for _, name := range drillFields {
		if _, ok := fields[name].(float64); !ok {
			t.Errorf("%s: report has no number %q", what, name)
		}
	}
	t.Logf("%s: %d users, acked %d, lost %d, duplicated %d, gaps %d, out of order %d; %d on %s at the fault, %d back, %d resumed, %d continuity lost; RTO p50 %.0f p99 %.0f max %.0f ms, new owner %.0f ms",
		what, rep.Users, rep.Acked, rep.Lost, rep.Duplicated, rep.Gaps, rep.OutOfOrder, rep.Affected, rep.Target, rep.Rewelcomed, rep.Resumed, rep.ContinuityLost,
		rep.RTOP50, rep.RTOP99, rep.RTOMax, rep.NewOwnerMS)
	switch {
	case rep.Users != users || rep.Acked == 0 || rep.Unacked != 0 || rep.TriggerError != "":
		t.Fatalf("%s: the drill did not run through: %s", what, out)
	case rep.Lost != 0 || rep.Duplicated != 0 || rep.Gaps != 0 || rep.OutOfOrder != 0 || rep.SeqMismatch != 0 || rep.SeqConflict != 0:
		t.Fatalf("%s: a guarantee broke: %s", what, out)
	case rep.Affected == 0 || rep.Rewelcomed < rep.Affected || rep.Resumed != rep.Rewelcomed || rep.ContinuityLost != 0:
		t.Fatalf("%s: not every user on the target resumed: %s", what, out)
	case rep.ByNode[rep.Target] != 0 || rep.RTO.Count != uint64(rep.Rewelcomed):
		t.Fatalf("%s: failover: %s", what, out)
	}
	return rep, fields
}

// TestDrillsAgainstThreeProcesses: sbctl drill --fault crash, isolate
// and drain against three processes started with
// --enable-fault-injection each report lost 0, duplicated 0, gaps 0, out
// of order 0 and every user of the target resumed; the node is started
// again (same flags, same data dir) after each. sbload --scenario drill
// (--target auto, a kill command naming the node) gives a report with
// the same fields, all zero where they must be.
func TestDrillsAgainstThreeProcesses(t *testing.T) {
	sbctl, sbload := tools(t)
	f := newFleet(t)
	f.nodeArgs = []string{"--enable-fault-injection"}
	n1, n2, n3 := f.startThree()
	nodes := []*member{n1, n2, n3}
	byID := map[string]*member{"n1": n1, "n2": n2, "n3": n3}
	allAlive := func(what string) {
		t.Helper()
		for _, n := range nodes {
			waitReady(t, n.base(), n.proc)
		}
		var procs []*proc
		for _, n := range nodes {
			procs = append(procs, n.proc)
		}
		eventually(t, 60*time.Second, what, procs, func() bool {
			for _, via := range nodes {
				cv, ok := clusterOf(via.base(), procAdminKey)
				if !ok || cv.Leader == "" || len(cv.Nodes) != 3 {
					return false
				}
				for _, m := range cv.Nodes {
					if m.State != "alive" || m.Raft == "none" || m.Raft == "nonvoter" {
						return false
					}
				}
			}
			return true
		})
	}
	allAlive("three alive voters")
	tokenFile, apiFile, adminFile := writeSecrets(t, t.TempDir())
	env := []string{"SWITCHBOARD_TOKEN_SECRET_FILE=" + tokenFile, "SWITCHBOARD_API_KEY_FILE=" + apiFile}
	const users = 30
	drill := []string{"--users", strconv.Itoa(users), "--rate", "100", "--duration", "8s"}

	var ctlFields map[string]any
	for _, tc := range []struct{ fault, target, via string }{
		{"crash", "n3", "n1"},
		{"isolate", "n2", "n3"},
		{"drain", "n1", "n2"},
	} {
		target := byID[tc.target]
		args := append([]string{"--addr", byID[tc.via].base(), "--admin-key-file", adminFile,
			"drill", "--target", tc.target, "--fault", tc.fault, "--json"}, drill...)
		code, out, errOut := runTool(t, sbctl, env, args...)
		if code != 0 {
			t.Fatalf("sbctl drill --fault %s: exit %d\n%s\n%s", tc.fault, code, errOut, out)
		}
		_, ctlFields = checkDrill(t, "sbctl drill --fault "+tc.fault, out, users)
		switch tc.fault {
		case "crash", "drain":
			select {
			case <-target.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s still runs after the %s", tc.target, tc.fault)
			}
			f.run(target.proc) // its original flags and data dir
		case "isolate":
			if !target.running() {
				t.Fatalf("%s exited: isolation must not stop it", tc.target)
			}
		}
		allAlive(tc.target + " back after the " + tc.fault)
	}

	// sbload picks the node owning the most users and kills it with a
	// command naming it, as deploy/compose's drill.sh does with docker.
	pids := t.TempDir()
	for _, n := range nodes {
		if err := os.WriteFile(filepath.Join(pids, n.id), []byte(strconv.Itoa(n.cmd.Process.Pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runTool(t, sbload, nil, append([]string{"--scenario", "drill",
		"--endpoints", n1.base() + "," + n2.base() + "," + n3.base(),
		"--token-secret-file", tokenFile, "--api-key-file", apiFile, "--admin-key-file", adminFile,
		"--target", "auto", "--at", "3s", "--kill-cmd", "kill -9 $(cat " + pids + "/{node})"}, drill...)...)
	if code != 0 {
		t.Fatalf("sbload --scenario drill: exit %d\n%s\n%s", code, errOut, out)
	}
	rep, loadFields := checkDrill(t, "sbload --scenario drill", out, users)
	if rep.Trigger != "kill" || byID[rep.Target] == nil || byID[rep.Target].running() {
		t.Fatalf("sbload killed %q (trigger %s), which must be gone", rep.Target, rep.Trigger)
	}
	var missing []string
	for name := range ctlFields {
		if _, ok := loadFields[name]; !ok {
			missing = append(missing, name)
		}
	}
	for name := range loadFields {
		if _, ok := ctlFields[name]; !ok {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("sbctl drill and sbload reports differ in fields %v", missing)
	}
}
