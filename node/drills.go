package node

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/switchboard/switchboard/internal/load"
	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/protocol"
)

// The node's drill runner (POST /v1/drills, for the dashboard): the drill
// of `sbctl drill`, internal/load's engine, run in this node's process
// with its own token secret and keys against the cluster's public URLs as
// it sees them. One drill at a time; the last ten are kept.

// keptDrills is how many drills GET /v1/drills lists.
const keptDrills = 10

// drills is the runner's state.
type drills struct {
	mu      sync.Mutex
	list    []*drillRun // newest first
	running bool
}

// drillRun is one drill: its view, updated as it runs.
type drillRun struct {
	mu   sync.Mutex
	view protocol.Drill
}

func (d *drillRun) snapshot() protocol.Drill {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.view
}

// handleDrills serves GET and POST /v1/drills.
func (n *Node) handleDrills(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		n.drills.mu.Lock()
		out := protocol.Drills{Drills: make([]protocol.Drill, 0, len(n.drills.list))}
		for _, d := range n.drills.list {
			out.Drills = append(out.Drills, d.snapshot())
		}
		n.drills.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case http.MethodPost:
		n.startDrill(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, protocol.Errorf(protocol.ErrMethodNotAllowed, "use GET or POST"))
	}
}

// handleDrill serves GET /v1/drills/{id}.
func (n *Node) handleDrill(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodGet, w, r) {
		return
	}
	id := r.PathValue("id")
	n.drills.mu.Lock()
	i := slices.IndexFunc(n.drills.list, func(d *drillRun) bool { return d.view.ID == id })
	var d *drillRun
	if i >= 0 {
		d = n.drills.list[i]
	}
	n.drills.mu.Unlock()
	if d == nil {
		writeError(w, protocol.Errorf(protocol.ErrNotFound, "no drill %q on this node (drills are kept where they ran, the last %d)", id, keptDrills))
		return
	}
	writeJSON(w, http.StatusOK, d.snapshot())
}

func (n *Node) startDrill(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 4096)
	if err != nil {
		writeError(w, err)
		return
	}
	var req protocol.DrillRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "drill body: %v", err))
		return
	}
	cfg, err := n.drillConfig(req)
	if err != nil {
		writeError(w, err)
		return
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	d := &drillRun{view: protocol.Drill{
		ID: "drill-" + hex.EncodeToString(id[:]), Target: req.Target, Fault: req.Fault,
		Users: req.Users, Rate: req.Rate, DurationMS: req.DurationMS,
		State: protocol.DrillRunning, StartedAt: time.Now().UTC(),
		Progress: protocol.DrillProgress{Phase: "start"},
	}}
	cfg.Progress = func(p load.Progress) {
		d.mu.Lock()
		d.view.Progress = protocol.DrillProgress{
			Phase: p.Phase, ElapsedMS: p.Elapsed.Milliseconds(), Connected: p.Connected,
			Sent: p.Sent, Acked: p.Acked, Delivered: p.Delivered, Errors: p.Errors,
		}
		d.mu.Unlock()
	}
	n.drills.mu.Lock()
	if n.drills.running {
		n.drills.mu.Unlock()
		writeError(w, protocol.Errorf(protocol.ErrConflict, "a drill is already running on this node: wait for it (GET /v1/drills)"))
		return
	}
	n.drills.running = true
	n.drills.list = append([]*drillRun{d}, n.drills.list...)
	if len(n.drills.list) > keptDrills {
		n.drills.list = n.drills.list[:keptDrills]
	}
	n.drills.mu.Unlock()
	n.log.Info("drill started", "id", d.view.ID, "target", req.Target, "fault", req.Fault, "users", req.Users, "rate", req.Rate, "duration_ms", req.DurationMS)
	n.goOwned(func() { n.runDrill(d, cfg) })
	writeJSON(w, http.StatusAccepted, d.snapshot())
}

// runDrill runs the drill until it ends or the node stops (n.ctx).
func (n *Node) runDrill(d *drillRun, cfg load.Config) {
	defer func() {
		n.drills.mu.Lock()
		n.drills.running = false
		n.drills.mu.Unlock()
	}()
	rep, err := load.Drill(n.ctx, cfg)
	var raw []byte
	if err == nil {
		raw, err = json.Marshal(rep)
	}
	switch {
	case n.ctx.Err() != nil:
		err = errors.New("the node stopped during the drill")
	case err == nil && rep.TriggerError != "":
		err = fmt.Errorf("the fault was not injected, so nothing was drilled: %s", rep.TriggerError)
	}
	d.mu.Lock()
	d.view.Report = raw
	d.view.State = protocol.DrillDone
	if err != nil {
		d.view.State, d.view.Error = protocol.DrillFailed, err.Error()
	}
	d.view.Progress.Phase = d.view.State
	if raw != nil {
		// The last progress sample is up to a second old: the final
		// figures are the report's.
		pr := &d.view.Progress
		pr.Sent, pr.Acked, pr.Delivered = rep.Published, rep.Acked, rep.Delivered
	}
	d.mu.Unlock()
	n.log.Info("drill ended", "id", d.view.ID, "state", d.view.State, "err", err,
		"lost", rep.Lost, "duplicated", rep.Duplicated, "gaps", rep.Gaps, "out_of_order", rep.OutOfOrder)
}

// drillConfig checks a drill request against this node's view of the
// cluster and makes the engine's config.
func (n *Node) drillConfig(req protocol.DrillRequest) (load.Config, error) {
	bad := func(format string, args ...any) (load.Config, error) {
		return load.Config{}, protocol.Errorf(protocol.ErrBadRequest, "drill: %s", fmt.Sprintf(format, args...))
	}
	switch {
	case req.Fault != protocol.DrillCrash && req.Fault != protocol.DrillIsolate && req.Fault != protocol.DrillDrain:
		return bad("fault %q: want crash, isolate or drain", req.Fault)
	case req.Users < 1 || req.Users > protocol.MaxDrillUsers:
		return bad("users must be between 1 and %d, not %d", protocol.MaxDrillUsers, req.Users)
	case !(req.Rate > 0 && req.Rate <= protocol.MaxDrillRate):
		return bad("rate must be above 0 and at most %d messages/s, not %v", protocol.MaxDrillRate, req.Rate)
	case req.DurationMS < protocol.MinDrillDurationMS || req.DurationMS > protocol.MaxDrillDurationMS:
		return bad("duration_ms must be between %d and %d, not %d", protocol.MinDrillDurationMS, protocol.MaxDrillDurationMS, req.DurationMS)
	case req.Target == "":
		return bad("target is required")
	case req.Target == n.cfg.NodeID:
		return bad("target %s is this node, which runs the drill: the runner would go down with it; ask another node (POST /v1/drills there)", req.Target)
	}
	cfg := load.DefaultConfig()
	found := false
	for _, m := range n.pool.Members() {
		if m.State != membership.StateAlive || m.PublicURL == "" {
			continue
		}
		cfg.Endpoints = append(cfg.Endpoints, m.PublicURL)
		found = found || m.ID == req.Target
	}
	if !found {
		return bad("target %q is not a live node", req.Target)
	}
	if n.adminLn != nil {
		// Other nodes' admin listeners are not gossiped: this node's own
		// serves every admin call (it is never the target).
		for range cfg.Endpoints {
			cfg.AdminEndpoints = append(cfg.AdminEndpoints, n.AdminURL())
		}
	}
	var err error
	if cfg.TokenSecret, err = n.drillTokenSecret(); err != nil {
		return bad("%v", err)
	}
	if keys := n.apiKeys(); len(keys) > 0 {
		cfg.APIKey = keys[0]
	}
	if keys := n.adminKeys(); len(keys) > 0 {
		cfg.AdminKey = keys[0]
	}
	if cfg.TLS, err = n.drillTLS(); err != nil {
		return load.Config{}, protocol.Errorf(protocol.ErrInternal, "drill: %v", err)
	}
	d := time.Duration(req.DurationMS) * time.Millisecond
	cfg.Users, cfg.Rate, cfg.Duration = req.Users, req.Rate, d
	cfg.At = max(d/3, 500*time.Millisecond)
	cfg.Target, cfg.Fault = req.Target, req.Fault
	cfg.Logger = n.cfg.Logger.With("component", "drill")
	if err := load.CheckDrill(cfg); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

// drillTokenSecret is the HS256 secret the drill's users' tokens are
// signed with: the node's own, the first key of its file.
func (n *Node) drillTokenSecret() ([]byte, error) {
	t := n.cfg.Tokens
	switch {
	case t.SecretFile != "":
		s, err := secret.ReadFile(t.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("token secret file: %v", err)
		}
		return []byte(s), nil
	case len(t.Secret) > 0:
		return t.Secret, nil
	}
	return nil, errors.New("this node verifies tokens without an HS256 secret (--token-secret-file), so it cannot sign the drill users' tokens: run sbctl drill instead")
}

// drillTLS trusts the system's roots and, when configured, the cluster
// CA: the public listeners' certificates are usually of one or the other.
func (n *Node) drillTLS() (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if f := n.cfg.ClusterTLS.CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("cluster CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster CA file %s holds no PEM certificate", f)
		}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
