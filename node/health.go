package node

import (
	"net/http"

	"github.com/switchboard/switchboard/protocol"
)

// healthRoutes serves the unauthenticated endpoints: liveness, readiness
// and metrics.
func (n *Node) healthRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, protocol.Health{Status: "ok", Node: n.cfg.NodeID})
	})
	mux.HandleFunc("GET /readyz", n.handleReady)
	mux.Handle("GET /metrics", n.metrics.handler())
}

func (n *Node) handleReady(w http.ResponseWriter, _ *http.Request) {
	if reason := n.notReady(); reason != "" {
		writeJSON(w, http.StatusServiceUnavailable, protocol.Health{Status: "not ready", Reason: reason, Node: n.cfg.NodeID})
		return
	}
	writeJSON(w, http.StatusOK, protocol.Health{Status: "ready", Node: n.cfg.NodeID})
}

// notReady says why the node is not ready, "" when it is (/readyz and
// switchboard_node_ready).
func (n *Node) notReady() string {
	switch {
	case n.draining.Load():
		return "draining"
	case !n.joined.Load():
		return "not joined to the cluster yet"
	case !n.raft.Ready():
		return "registry not caught up (no leader or replaying)"
	}
	return ""
}
