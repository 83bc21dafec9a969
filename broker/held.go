package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport"
)

// errSealed means a held stream was fenced while a request used it.
var errSealed = errors.New("stream sealed")

// held is a stream this node owns, with everyone it delivers to: local
// connections and other nodes that serve connections of the same user.
// Appends and deliveries happen under mu, which is what keeps every
// connection of the user in seq order (G1).
type held struct {
	user string
	b    *Broker

	mu      sync.Mutex
	stream  *session.Stream
	sinks   map[uint64]transport.Sink
	remotes map[string]bool // nodes with connections of this user attached here
	sealed  bool
	// idleSince is when the last connection (local or remote) went away;
	// zero while any is attached.
	idleSince time.Time
}

func (b *Broker) newHeld(user string, s *session.Stream) *held {
	return &held{
		user: user, b: b, stream: s,
		sinks:     make(map[uint64]transport.Sink),
		remotes:   make(map[string]bool),
		idleSince: b.cfg.Now(),
	}
}

// append stores one message and delivers it to every attached connection.
func (h *held) append(id string, data []byte) (session.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sealed {
		return session.Message{}, errSealed
	}
	m, dup, err := h.stream.Append(id, data, h.b.now())
	if err != nil {
		return session.Message{}, err
	}
	if !dup {
		h.deliverLocked([]session.Message{m})
	}
	return m, nil
}

// deliverLocked sends msgs to local sinks and attached nodes, in order.
func (h *held) deliverLocked(msgs []session.Message) {
	for _, s := range h.sinks {
		for _, m := range msgs {
			s.Send(m.Seq, m.Frame) // on overflow the gateway closes the sink (4008)
		}
	}
	if h.b.cfg.OnDeliver != nil && len(h.sinks) > 0 {
		h.b.cfg.OnDeliver(len(h.sinks) * len(msgs))
	}
	if len(h.remotes) == 0 {
		return
	}
	payload := encodeDeliver(deliver{User: h.user, Epoch: h.stream.Epoch, Msgs: msgs})
	for node := range h.remotes {
		ctx, cancel := context.WithTimeout(h.b.ctx, h.b.cfg.CallTimeout)
		err := h.b.peers.Send(ctx, node, methodDeliver, payload)
		cancel()
		if err != nil {
			// That node's connections will notice the gap (or their node's
			// death) and resume; keeping it would only slow every append.
			h.b.log.Warn("deliver to attached node failed; detaching it", "user", h.user, "node", node, "err", err)
			delete(h.remotes, node)
			h.touchLocked()
		}
	}
}

// attachLocked registers a local sink after sending it the welcome and the
// replay, all under mu so that no append can slip between them.
func (h *held) attach(sink transport.Sink, resume *transport.Resume) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sealed {
		return errSealed
	}
	resumed, replay := resumePoint(h.stream, resume)
	if !sink.Send(0, h.b.welcome(h.stream, resumed)) {
		return fmt.Errorf("%w: connection closed before welcome", ErrUnavailable)
	}
	for _, m := range replay {
		if !sink.Send(m.Seq, m.Frame) {
			return nil // the gateway closed it (4008); Gone will follow
		}
	}
	h.sinks[sink.ID()] = sink
	h.touchLocked()
	return nil
}

// resumePoint decides whether a hello continues the stream and what to
// replay. Continuity holds when the client names the current session (or
// none, asking for what was kept while it was offline) and every message
// after its seq is still here; otherwise resumed is false and the client
// must resync (G2: never a silent gap).
func resumePoint(s *session.Stream, r *transport.Resume) (bool, []session.Message) {
	if r == nil {
		return false, nil
	}
	if r.Session != "" && r.Session != s.Session {
		return false, nil
	}
	msgs, err := s.Since(r.Seq)
	if err != nil {
		return false, nil
	}
	return true, msgs
}

func (h *held) detachSink(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sinks, id)
	h.touchLocked()
}

func (h *held) attachRemote(node string, after uint64, session string) (attachReply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sealed {
		return attachReply{}, errSealed
	}
	resumed, replay := resumePoint(h.stream, &transport.Resume{Session: session, Seq: after})
	h.remotes[node] = true
	h.touchLocked()
	return attachReply{Session: h.stream.Session, Epoch: h.stream.Epoch, Last: h.stream.Last(), Resumed: resumed, Msgs: replay}, nil
}

func (h *held) detachRemote(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.remotes, node)
	h.touchLocked()
}

// touchLocked keeps idleSince and the registry's attached/detached state
// in step with whether anyone is connected.
func (h *held) touchLocked() {
	idle := len(h.sinks) == 0 && len(h.remotes) == 0
	switch {
	case idle && h.idleSince.IsZero():
		h.idleSince = h.b.cfg.Now()
		h.b.proposeState(h.user, h.stream.Epoch, session.KindDetach)
	case !idle && !h.idleSince.IsZero():
		h.idleSince = time.Time{}
		h.b.proposeState(h.user, h.stream.Epoch, session.KindAttach)
	}
}

// seal fences the stream for a newer owner at epoch and closes its local
// connections: they reconnect and resume at the new owner. An epoch not
// newer than the stream's own is stale news and changes nothing.
func (h *held) seal(epoch uint64, why string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if epoch <= h.stream.Epoch {
		return false
	}
	h.stream.Seal(epoch)
	if h.sealed {
		return true
	}
	h.sealed = true
	for id, s := range h.sinks {
		s.Close(transport.CloseDraining, transport.CodeDraining, why+": reconnect to resume", h.b.cluster.Endpoints())
		delete(h.sinks, id)
	}
	for node := range h.remotes {
		h.b.evict(node, h.user)
	}
	h.remotes = map[string]bool{}
	return true
}

// handoff seals the stream for a new owner at epoch and returns everything
// it holds, so the new owner continues exactly where this one stopped.
func (h *held) handoff(epoch uint64) (handoffReply, error) {
	if !h.seal(epoch, "session moved to another node") {
		return handoffReply{}, fmt.Errorf("%w: handoff at epoch %d is not newer than the stream's", session.ErrStaleEpoch, epoch)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	msgs, _ := h.stream.Since(h.stream.Last() - uint64(h.stream.Len()))
	return handoffReply{Session: h.stream.Session, Last: h.stream.Last(), Msgs: msgs}, nil
}

// proposeState records attach/detach in the registry in the background;
// it is advisory (it decides remote attach versus takeover, and starts
// the resume window), and fenced by epoch, so failures are only logged.
func (b *Broker) proposeState(user string, epoch uint64, kind session.Kind) {
	b.goSafe(func() {
		ctx, cancel := context.WithTimeout(b.ctx, 2*b.cfg.CallTimeout)
		defer cancel()
		_, err := b.reg.Propose(ctx, session.Command{Kind: kind, User: user, Node: b.cfg.NodeID, Epoch: epoch})
		if err != nil && !errors.Is(err, context.Canceled) {
			b.log.Debug("registry state update failed", "user", user, "kind", kind, "err", err)
		}
	})
}

// welcome encodes the welcome frame for a connection served from s.
func (b *Broker) welcome(s *session.Stream, resumed bool) []byte {
	return transport.EncodeWelcome(transport.Welcome{
		Session: s.Session, Node: b.cfg.NodeID, Region: b.cfg.Region, Zone: b.cfg.Zone,
		Resumed: resumed, Seq: s.Last(), HeartbeatMS: b.cfg.Heartbeat.Milliseconds(),
		Endpoints: b.cluster.Endpoints(),
	})
}
