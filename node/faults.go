package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/transport/netfault"
)

// Fault injection (DESIGN.md §5, POST /v1/nodes/{id}/faults), for
// failover drills: any node accepts the request and forwards it to the
// target, whose Config.FaultInjection decides. The faults themselves live
// where the traffic is: netfault.Gate holds them, the cluster port's
// dials and listeners and gossip's transport pass through it (isolate),
// and the peer links' writer asks it for latency (slow).

// faultGrace is how long a fault waits after it was accepted, so that
// the answer (an HTTP 202, or the peer call's reply on a link that is
// about to be cut) is out before the fault strikes.
const faultGrace = 50 * time.Millisecond

// errFaultsOff answers a fault sent to a node without fault injection.
func errFaultsOff(id string) error {
	return protocol.Errorf(protocol.ErrForbidden,
		"fault injection is disabled on node %s: start it with --enable-fault-injection (staging and drills only)", id)
}

// crashProcess is the default Config.Crash: the process dies as SIGKILL
// kills it, with no drain, no gossip leave, no goodbye to anyone.
func crashProcess() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }

// newGate is the node's fault gate: nil (always open, no cost) unless
// fault injection is enabled.
func newGate(cfg Config) *netfault.Gate {
	if !cfg.FaultInjection {
		return nil
	}
	return netfault.NewGate()
}

// handleFaults serves POST /v1/nodes/{id}/faults.
func (n *Node) handleFaults(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodPost, w, r) {
		return
	}
	body, err := readBody(w, r, 4096)
	if err != nil {
		writeError(w, err)
		return
	}
	var f protocol.Fault
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "fault body: %v", err))
		return
	}
	f.Node = ""
	id := r.PathValue("id")
	// The target's flag decides first (DESIGN.md §5): a node without
	// fault injection answers 403 whatever the fault's fields hold.
	if id == n.cfg.NodeID && !n.cfg.FaultInjection {
		writeError(w, errFaultsOff(id))
		return
	}
	if err := f.Validate(); err != nil {
		writeError(w, err)
		return
	}
	f = f.Clean()
	if id == n.cfg.NodeID {
		err = n.injectFault(f)
	} else if m, ok := n.pool.Member(id); !ok || !usable(m.State) {
		err = protocol.Errorf(protocol.ErrNotFound, "no live node %s", strconv.Quote(id))
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		_, err = peerapi.InjectFault.Call(ctx, n.peers, id, f)
		cancel()
		switch {
		case errors.Is(err, protocol.ErrForbidden):
			err = errFaultsOff(id)
		case errors.Is(err, protocol.ErrBadRequest):
		case err != nil:
			err = protocol.Errorf(protocol.ErrUnavailable, "asking %s to inject %s: %v", id, f.Kind, err)
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	f.Node = id
	writeJSON(w, http.StatusAccepted, f)
}

// injectFault injects f into this node, if its config allows: the fault
// strikes faultGrace later, once the answer is out.
func (n *Node) injectFault(f protocol.Fault) error {
	if !n.cfg.FaultInjection {
		return errFaultsOff(n.cfg.NodeID)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	d := time.Duration(f.DurationMS) * time.Millisecond
	n.log.Warn("fault injected", "kind", f.Kind, "duration", d, "latency_ms", f.LatencyMS)
	switch f.Kind {
	case protocol.FaultCrash:
		// Not a goroutine of the node's: the crash may stop the node
		// (in-process tests), which waits for those.
		crash := n.cfg.Crash
		if crash == nil {
			crash = crashProcess
		}
		time.AfterFunc(faultGrace, crash)
	case protocol.FaultIsolate:
		n.goOwned(func() {
			if n.sleep(faultGrace) {
				n.gate.Isolate(d)
			}
		})
	case protocol.FaultSlow:
		n.gate.Slow(time.Duration(f.LatencyMS)*time.Millisecond, d)
	}
	return nil
}

// sleep waits d, or less if the node stops; it reports whether the node
// is still running.
func (n *Node) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-n.ctx.Done():
		return false
	}
}
