package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/internal/tracing"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// replica is this node's copy of a stream another node owns: the backup.
// The owner replicates every append here before it acknowledges the
// publish or delivers the message, so whatever a client or publisher has
// seen survives the owner's death (G2). A new owner seals the replica at
// its epoch before fetching it, after which the old owner's appends are
// refused (G4).
type replica struct {
	mu      sync.Mutex
	owner   string
	stream  *session.Stream
	updated time.Time
}

// replicas is the set of streams this node backs up.
type replicas struct {
	mu sync.Mutex
	m  map[session.Key]*replica
	// fences outlive dropped replicas: once this node took a stream over
	// (or saw it sealed) at an epoch, an old owner's full copy at an older
	// epoch must not recreate the replica and let it acknowledge again.
	fences map[session.Key]fence
}

type fence struct {
	epoch uint64
	at    time.Time
}

func (b *Broker) replicaFor(key session.Key) *replica {
	b.reps.mu.Lock()
	defer b.reps.mu.Unlock()
	return b.reps.m[key]
}

// serveReplicate stores messages the owner appended. A full replication
// replaces the replica (a new backup, or one that fell behind); otherwise
// messages must continue the replica's seq, or it answers ErrGap and the
// owner sends everything.
func (b *Broker) serveReplicate(from string, req session.Replication) error {
	now := b.now()
	b.reps.mu.Lock()
	if f, ok := b.reps.fences[req.Key]; ok && req.Epoch < f.epoch {
		b.reps.mu.Unlock()
		return fmt.Errorf("%w: %s was taken over at epoch %d, replication at %d", session.ErrStaleEpoch, req.Key, f.epoch, req.Epoch)
	}
	if e, ok := b.reg.Get(req.Key.String()); ok && req.Epoch < e.Epoch {
		b.reps.mu.Unlock()
		return fmt.Errorf("%w: registry is at epoch %d, replication at %d", session.ErrStaleEpoch, e.Epoch, req.Epoch)
	}
	r := b.reps.m[req.Key]
	if r == nil || req.Full {
		if r != nil {
			r.mu.Lock()
			fence := r.stream.Fence()
			r.mu.Unlock()
			if req.Epoch < fence {
				b.reps.mu.Unlock()
				return fmt.Errorf("%w: replica fenced at %d, full copy at %d", session.ErrStaleEpoch, fence, req.Epoch)
			}
		}
		if !req.Full {
			b.reps.mu.Unlock()
			return fmt.Errorf("%w: no replica of %s here", session.ErrGap, req.Key)
		}
		s := session.NewStream(req.Key.String(), req.Session, req.Epoch, b.streamConfig(req.Key))
		if err := s.Load(req.Last, req.Msgs); err != nil {
			b.reps.mu.Unlock()
			return err
		}
		b.reps.m[req.Key] = &replica{owner: from, stream: s, updated: b.cfg.Now()}
		b.reps.mu.Unlock()
		return nil
	}
	b.reps.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream.Session != req.Session {
		return fmt.Errorf("%w: replica holds session %s, owner sent %s", session.ErrGap, r.stream.Session, req.Session)
	}
	for _, m := range req.Msgs {
		if err := r.stream.Put(req.Epoch, m, now); err != nil {
			return err
		}
	}
	r.owner, r.updated = from, b.cfg.Now()
	return nil
}

// serveReplicateTraced is serveReplicate in the caller's trace: the
// backup's side of stream.replicate, when the owner's call was sampled.
func (b *Broker) serveReplicateTraced(ctx context.Context, from string, req session.Replication) error {
	_, span := b.cfg.Tracer.Child(ctx, tracing.SpanStreamReplicate, trace.SpanKindServer)
	if !span.IsRecording() {
		return b.serveReplicate(from, req)
	}
	span.SetAttributes(append(seqAttrs(req.Msgs), keyAttr(req.Key), tracing.AttrEpoch.Int64(int64(req.Epoch)),
		tracing.AttrOwner.String(from), tracing.AttrBackup.String(b.cfg.NodeID), attribute.Bool("switchboard.full", req.Full))...)
	err := b.serveReplicate(from, req)
	tracing.End(span, err)
	return err
}

// serveSeal fences the replica at a new owner's epoch and returns it.
// A node the registry names as backup may hold the stream itself rather
// than a replica (it was the owner before a claim whose fetch failed):
// then it hands that over.
//
// With Keep, the sealed replica becomes the copy of the caller (from), the
// new owner at req.Epoch: it holds exactly what is returned, so the new
// owner need not send it back in full before serving. Appends under an
// older epoch stay refused (the fence); the new owner's go on from here.
func (b *Broker) serveSeal(from string, req peerapi.HandoffRequest) (session.Tail, error) {
	r := b.replicaFor(req.Key)
	if r == nil {
		return b.serveHandoff(req)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Epoch < r.stream.Fence() {
		return session.Tail{}, fmt.Errorf("%w: replica sealed at %d, asked at %d", session.ErrStaleEpoch, r.stream.Fence(), req.Epoch)
	}
	r.stream.Seal(req.Epoch)
	rep := session.TailOf(r.stream)
	if req.Keep && from != "" && from != b.cfg.NodeID {
		r.stream.Adopt(req.Epoch)
		r.owner, r.updated = from, b.cfg.Now()
		rep.Kept = true
	}
	return rep, nil
}

// dropReplica forgets a replica because this node took the stream over at
// epoch, and remembers the epoch as a fence for the resume window.
func (b *Broker) dropReplica(key session.Key, epoch uint64) {
	b.reps.mu.Lock()
	delete(b.reps.m, key)
	if epoch > b.reps.fences[key].epoch {
		b.reps.fences[key] = fence{epoch: epoch, at: b.cfg.Now()}
	}
	b.reps.mu.Unlock()
}

// expireReplicas drops replicas nothing was replicated to for longer than
// the resume window and which hold no message younger than it: their
// owner has retired the user (or lost it, and the window has passed).
func (b *Broker) expireReplicas(now time.Time) {
	window := time.Duration(b.cfg.Stream.Window) * time.Millisecond
	b.reps.mu.Lock()
	defer b.reps.mu.Unlock()
	b.mu.Lock()
	for u, h := range b.retired {
		if now.UnixMilli()-h.retiredAt.Load() > b.cfg.Stream.Window {
			delete(b.retired, u)
		}
	}
	b.mu.Unlock()
	for u, f := range b.reps.fences {
		if now.Sub(f.at) > window {
			delete(b.reps.fences, u)
		}
	}
	for u, r := range b.reps.m {
		r.mu.Lock()
		r.stream.Trim(now.UnixMilli())
		stale := now.Sub(r.updated) > window && r.stream.Len() == 0
		r.mu.Unlock()
		// A quiet stream still exists while the registry names this node
		// as its backup: dropping the replica would turn its owner's crash
		// into a needless loss of continuity.
		if e, ok := b.reg.Get(u.String()); stale && ok && e.Backup == b.cfg.NodeID {
			continue
		}
		if stale {
			delete(b.reps.m, u)
		}
	}
}

// errNoBackup means no other live node can hold a replica: durability is
// local to the owner (a single-node cluster).
var errNoBackup = errors.New("no backup node available")

// errBackupsDown means other nodes exist but none can take a replica now:
// appends wait (and publishes fail with ErrUnavailable) rather than being
// acknowledged with a single copy.
var errBackupsDown = fmt.Errorf("%w: no reachable backup node", protocol.ErrUnavailable)
