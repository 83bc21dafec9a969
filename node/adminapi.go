package node

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard/switchboard/dashboard"
	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// adminRoutes serves the admin API (DESIGN.md §5), for operators holding
// the admin key.
func (n *Node) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/cluster", n.adminOnly(n.handleCluster))
	mux.HandleFunc("/v1/sessions/{user}", n.adminOnly(n.handleSession))
	mux.HandleFunc("/v1/nodes/{id}/drain", n.adminOnly(n.handleDrain))
	mux.HandleFunc("/v1/nodes/{id}/faults", n.adminOnly(n.handleFaults))
	mux.HandleFunc("/v1/drills", n.adminOnly(n.handleDrills))
	mux.HandleFunc("/v1/drills/{id}", n.adminOnly(n.handleDrill))
	mux.HandleFunc("/v1/raft/transfer-leadership", n.adminOnly(n.handleTransfer))
	mux.HandleFunc("/v1/gossip/keys", n.adminOnly(n.handleGossipKeys))
	mux.HandleFunc("GET /v1/channels/{channel}", n.adminOnly(n.handleChannel))
	mux.HandleFunc("/v1/raft", n.adminOnly(n.handleRaft))
	mux.HandleFunc("/v1/stats", n.adminOnly(n.handleStats))
	// The dashboard's page and assets load without the key; the API
	// calls it makes carry it (DESIGN.md §5a).
	mux.Handle("/ui/", dashboard.Handler("/ui/"))
}

// adminOnly guards an endpoint with the admin key.
func (n *Node) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !bearer(r, n.adminKeys()) {
			writeError(w, protocol.Errorf(protocol.ErrUnauthorized, "missing or bad admin key"))
			return
		}
		h(w, r)
	}
}

func (n *Node) handleCluster(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodGet, w, r) {
		return
	}
	st := n.raft.Status()
	roles := raftRoles(st)
	members := n.pool.Members()
	nodes := make([]protocol.ClusterNode, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		nodes[i] = protocol.ClusterNode{ID: m.ID, Region: m.Region, Zone: m.Zone, PublicURL: m.PublicURL, State: string(m.State), Raft: roles.of(m.ID)}
		n.raft.Read(func() { nodes[i].SessionsOwned = n.machine.Registry.Owned(m.ID) })
		switch {
		case m.ID == n.cfg.NodeID:
			nodes[i].Connections = n.gateway.Connections()
		case usable(m.State):
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(r.Context(), time.Second)
				defer cancel()
				if c, err := peerapi.Connections.Call(ctx, n.peers, m.ID, peerapi.Empty{}); err == nil {
					nodes[i].Connections = int(c)
				}
			}()
		}
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, protocol.Cluster{
		Leader: st.Leader, Term: st.Term, CommitIndex: st.CommitIndex, Nodes: nodes,
		Durability: durability(members), ClusterTLS: n.cfg.ClusterTLS.Enabled(),
	})
}

// durability tells operators whether acknowledged messages survive a node
// loss: with one node they are only as safe as that process.
func durability(members []membership.Member) string {
	live := 0
	for _, m := range members {
		if usable(m.State) {
			live++
		}
	}
	if live < 2 {
		return "local"
	}
	return "replicated"
}

// handleRaft answers GET /v1/raft from this node's Raft state: the
// configuration it knows, with each server's place from gossip.
func (n *Node) handleRaft(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodGet, w, r) {
		return
	}
	st := n.raft.Status()
	out := protocol.Raft{Leader: st.Leader, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		Servers: make([]protocol.RaftServer, len(st.Servers))}
	for i, s := range st.Servers {
		out.Servers[i] = protocol.RaftServer{ID: s.ID, Address: s.Addr, Suffrage: s.Suffrage}
		if m, ok := n.pool.Member(s.ID); ok {
			out.Servers[i].Region, out.Servers[i].Zone = m.Region, m.Zone
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleSession(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodGet, w, r) {
		return
	}
	key := session.UserKey(r.PathValue("user"))
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	// Operators expect the truth, not this replica's lag: read after a
	// barrier (linearizable). Without a leader, say so rather than guess.
	if err := n.raft.ReadBarrier(ctx); err != nil {
		writeError(w, protocol.Errorf(protocol.ErrUnavailable, "registry unavailable: %v", err))
		return
	}
	e, ok := registry{n}.Get(key.String())
	if !ok {
		writeError(w, protocol.Errorf(protocol.ErrNotFound, "no session for user %s", strconv.Quote(key.Name)))
		return
	}
	seq, _ := n.streamSeq(ctx, e.Owner, key)
	writeJSON(w, http.StatusOK, protocol.Session{
		User: key.Name, Session: e.Session, Owner: e.Owner, Backup: e.Backup,
		Epoch: e.Epoch, State: e.State.String(), Seq: seq,
	})
}

func (n *Node) handleDrain(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodPost, w, r) {
		return
	}
	id := r.PathValue("id")
	if id == n.cfg.NodeID {
		n.startDrain()
		writeJSON(w, http.StatusAccepted, protocol.NodeState{Node: id, State: "draining"})
		return
	}
	m, ok := n.pool.Member(id)
	if !ok || !usable(m.State) {
		writeError(w, protocol.Errorf(protocol.ErrNotFound, "no live node %s", strconv.Quote(id)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := peerapi.Drain.Call(ctx, n.peers, id, peerapi.Empty{}); err != nil {
		writeError(w, protocol.Errorf(protocol.ErrUnavailable, "asking %s to drain: %v", id, err))
		return
	}
	writeJSON(w, http.StatusAccepted, protocol.NodeState{Node: id, State: "draining"})
}

// startDrain drains and stops this node in the background; Done closes
// when it is gone, so the process can exit. Shutdown waits for the node's
// own goroutines, so this one is not among them: it ends with the node.
func (n *Node) startDrain() {
	if n.draining.Load() {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			n.log.Warn("drain", "err", err)
		}
	}()
}

func (n *Node) handleTransfer(w http.ResponseWriter, r *http.Request) {
	if !only(http.MethodPost, w, r) {
		return
	}
	prev := n.raft.Status().Leader
	var err error
	if n.raft.IsLeader() {
		err = n.raft.TransferLeadership()
	} else if prev == "" {
		err = errors.New("no leader")
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		_, err = peerapi.TransferLeadership.Call(ctx, n.peers, prev, peerapi.Empty{})
		cancel()
	}
	if err != nil {
		writeError(w, protocol.Errorf(protocol.ErrUnavailable, "leadership transfer: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, protocol.LeadershipTransfer{Previous: prev, Leader: n.raft.Status().Leader})
}
