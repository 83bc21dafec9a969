package consensus

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// Server is one member of the Raft configuration.
type Server struct {
	ID, Addr string
	Suffrage string // "voter" or "nonvoter"
}

// Status is a point-in-time view of this node's Raft state.
type Status struct {
	Leader       string // leader's server ID, "" when unknown
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64 // Raft's applied index: entries of every kind, no-ops included
	Servers      []Server
}

// Suffrage values of Server.
const (
	SuffrageVoter    = "voter"
	SuffrageNonvoter = "nonvoter"
)

// Leader returns the leader's server ID and address, empty when unknown.
func (r *Raft) Leader() (id, addr string) {
	a, i := r.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (r *Raft) IsLeader() bool {
	return r.raft.State() == raft.Leader
}

// LastApplied returns the index of the last command or configuration entry
// applied to the state machine (Raft's internal no-op entries are not
// applied, so it can trail Status().CommitIndex while idle).
func (r *Raft) LastApplied() uint64 {
	return r.fsm.lastApplied.Load()
}

// OnlyServer reports whether id is the only server of the Raft
// configuration; cheaper than Status, for hot paths.
func (r *Raft) OnlyServer(id string) bool {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	s := f.Configuration().Servers
	return len(s) == 1 && string(s[0].ID) == id
}

// Status returns the current leader, term, indexes and configuration.
func (r *Raft) Status() Status {
	st := Status{
		Term:        r.raft.CurrentTerm(),
		CommitIndex: r.raft.CommitIndex(),
		// Raft's own applied index counts its no-op and configuration
		// entries too, so an idle node shows applied = commit, as
		// operators read the pair; LastApplied (the state machine's)
		// trails it and stays the catch-up measure of Ready.
		AppliedIndex: max(r.raft.AppliedIndex(), r.LastApplied()),
	}
	st.Leader, _ = r.Leader()
	if f := r.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Servers = append(st.Servers, Server{ID: string(s.ID), Addr: string(s.Address), Suffrage: suffrage(s.Suffrage)})
		}
	}
	return st
}

func suffrage(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return SuffrageVoter
	}
	return SuffrageNonvoter
}

// Ready reports whether a leader is known and this replica has applied
// everything the leader had applied when this node first asked after
// start: the catch-up condition behind /readyz.
func (r *Raft) Ready() bool {
	if id, _ := r.Leader(); id == "" {
		return false
	}
	r.leaderMu.Lock()
	target, ok := r.readyTarget, r.readyTargetOK
	r.leaderMu.Unlock()
	return ok && r.LastApplied() >= target
}

// monitorReady learns the catch-up target once: from its own barrier when
// this node leads, else by asking the leader over Forward.
func (r *Raft) monitorReady() {
	defer r.wg.Done()
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		if index, ok := r.learnReadIndex(); ok {
			r.leaderMu.Lock()
			r.readyTarget, r.readyTargetOK = index, true
			r.leaderMu.Unlock()
			r.log.Info("catch-up target learned", "index", index)
			return
		}
		select {
		case <-t.C:
		case <-r.ctx.Done():
			return
		}
	}
}

func (r *Raft) learnReadIndex() (uint64, bool) {
	_, addr := r.Leader()
	if addr == "" {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(r.ctx, readIndexTimeout)
	defer cancel()
	var index uint64
	var err error
	if r.IsLeader() {
		index, err = r.readIndex(ctx)
	} else {
		index, err = r.queryReadIndex(ctx, addr)
	}
	if err != nil {
		r.log.Debug("learning catch-up target", "leader", addr, "error", err)
		return 0, false
	}
	return index, true
}
