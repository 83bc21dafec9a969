package node

import (
	"net/http"
	"net/http/pprof"
)

// debugRoutes serves pprof, for operators only: on the admin listener,
// behind the admin key.
func (n *Node) debugRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", n.adminOnly(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", n.adminOnly(pprof.Profile))
	mux.HandleFunc("/debug/pprof/trace", n.adminOnly(pprof.Trace))
}
