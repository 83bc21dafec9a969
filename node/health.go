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
	reason := ""
	switch {
	case n.draining.Load():
		reason = "draining"
	case !n.joined.Load():
		reason = "not joined to the cluster yet"
	case !n.raft.Ready():
		reason = "registry not caught up (no leader or replaying)"
	}
	if reason != "" {
		writeJSON(w, http.StatusServiceUnavailable, protocol.Health{Status: "not ready", Reason: reason, Node: n.cfg.NodeID})
		return
	}
	writeJSON(w, http.StatusOK, protocol.Health{Status: "ready", Node: n.cfg.NodeID})
}
