package node

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/switchboard/switchboard/protocol"
)

// The node's HTTP surface, by audience: clients and publishers on the
// public listener (publishapi.go, and the gateway at /v1/connect),
// operators on the admin API (adminapi.go; on its own listener when one
// is configured, with pprof, debug.go), and health and metrics for
// everyone (health.go). Errors are mapped to statuses here, once.

// publicHandler serves clients, the publish API, health and metrics, and
// the admin API unless a separate admin listener is configured.
func (n *Node) publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/connect", n.gateway)
	n.publishRoutes(mux)
	n.healthRoutes(mux)
	if n.adminLn == nil {
		n.adminRoutes(mux)
	}
	mux.HandleFunc("/", notFound)
	return mux
}

// adminHandler serves the admin listener: admin API, health, metrics and
// pprof (which is never on the public port).
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	n.healthRoutes(mux)
	n.adminRoutes(mux)
	n.debugRoutes(mux)
	mux.HandleFunc("/", notFound)
	return mux
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, protocol.Errorf(protocol.ErrNotFound, "no such endpoint: %s", r.URL.Path))
}

// only answers 405 to any method but m; it reports whether r may go on.
func only(m string, w http.ResponseWriter, r *http.Request) bool {
	if r.Method == m {
		return true
	}
	w.Header().Set("Allow", m)
	writeError(w, protocol.Errorf(protocol.ErrMethodNotAllowed, "use %s", m))
	return false
}

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, protocol.Errorf(protocol.ErrTooLarge, "body over the %d-byte limit", limit)
	}
	if err != nil {
		return nil, protocol.Errorf(protocol.ErrBadRequest, "reading body: %v", err)
	}
	return body, nil
}

// writeError answers err with the status the contract maps it to
// (protocol.StatusOf), and Retry-After on the answers that ask for a
// retry, as {"error": …}.
func writeError(w http.ResponseWriter, err error) {
	if protocol.Retryable(err) {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, protocol.StatusOf(err), protocol.Error{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
