package peerapi

import (
	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/session"
	"github.com/switchboard/switchboard/transport/peer"
)

// PresenceReport is a node's whole contribution to a channel's presence
// set: its users subscribed with presence, numbered by Gen (they only
// grow) so that the owner never takes an older report over a newer one.
type PresenceReport struct {
	Key     session.Key
	Node    string
	Gen     uint64
	Members []session.Member
}

func appendMembers(b []byte, ms []session.Member) []byte {
	b = wire.AppendUvarint(b, uint64(len(ms)))
	for _, m := range ms {
		b = wire.AppendString(b, m.User)
		b = wire.AppendUvarint(b, uint64(m.Conns))
	}
	return b
}

// maxConns bounds a member's connection count on the wire: more than any
// node can hold, small enough never to overflow a sum.
const maxConns = 1 << 30

func readMembers(r *wire.Reader) []session.Member {
	n := r.Count(2)
	ms := make([]session.Member, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		m := session.Member{User: r.String()}
		c := r.Uvarint()
		if c > maxConns && r.Err() == nil {
			r.Fail("member connection count out of range")
		}
		m.Conns = int(c)
		ms = append(ms, m)
	}
	return ms
}

func appendPresenceReport(b []byte, p PresenceReport) []byte {
	b = appendKey(b, p.Key)
	b = wire.AppendString(b, p.Node)
	b = wire.AppendUvarint(b, p.Gen)
	return appendMembers(b, p.Members)
}

func readPresenceReport(r *wire.Reader) PresenceReport {
	rep := PresenceReport{Key: readKey(r), Node: r.String(), Gen: r.Uvarint()}
	rep.Members = readMembers(r)
	return rep
}

var presenceReportCodec = peer.Codec[PresenceReport]{
	Append: appendPresenceReport,
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) (PresenceReport, error) {
		r := wire.NewReader(p)
		rep := readPresenceReport(r)
		if r.Err() != nil {
			return PresenceReport{}, badPayload("presence report", r.Err())
		}
		return rep, nil
	},
}

// PresenceReportSize is about the bytes rep takes on the wire, for
// bounding a batch of reports.
func PresenceReportSize(rep PresenceReport) int {
	n := len(rep.Key.Name) + len(rep.Node) + 24
	for _, m := range rep.Members {
		n += len(m.User) + 8
	}
	return n
}

var presenceReportsCodec = peer.Codec[[]PresenceReport]{
	Append: func(b []byte, reps []PresenceReport) []byte {
		b = wire.AppendUvarint(b, uint64(len(reps)))
		for _, rep := range reps {
			b = appendPresenceReport(b, rep)
		}
		return b
	},
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) ([]PresenceReport, error) {
		r := wire.NewReader(p)
		n := r.Count(4)
		reps := make([]PresenceReport, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			reps = append(reps, readPresenceReport(r))
		}
		if r.Err() != nil {
			return nil, badPayload("presence reports", r.Err())
		}
		return reps, nil
	},
}

var membersCodec = peer.Codec[[]session.Member]{
	Append: appendMembers,
	Decode: func(p []byte) ([]session.Member, error) {
		r := wire.NewReader(p)
		ms := readMembers(r)
		if r.Err() != nil {
			return nil, badPayload("members", r.Err())
		}
		return ms, nil
	},
}

// PresenceEvent is a join or leave on a channel, from its owner to the
// nodes with subscribers.
type PresenceEvent struct {
	Key  session.Key
	User string
	Join bool
}

var presenceEventsCodec = peer.Codec[[]PresenceEvent]{
	Append: func(b []byte, evs []PresenceEvent) []byte {
		b = wire.AppendUvarint(b, uint64(len(evs)))
		for _, e := range evs {
			b = appendKey(b, e.Key)
			b = wire.AppendString(b, e.User)
			b = wire.AppendBool(b, e.Join)
		}
		return b
	},
	// Trailing bytes are ignored, so that a later version may append.
	Decode: func(p []byte) ([]PresenceEvent, error) {
		r := wire.NewReader(p)
		n := r.Count(3)
		evs := make([]PresenceEvent, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			evs = append(evs, PresenceEvent{Key: readKey(r), User: r.String(), Join: r.Bool()})
		}
		if r.Err() != nil {
			return nil, badPayload("presence events", r.Err())
		}
		return evs, nil
	},
}

// HistoryRequest asks for at most Limit acknowledged messages after
// Since.
type HistoryRequest struct {
	Key   session.Key
	Since uint64
	Limit uint64
}

var historyRequestCodec = peer.Codec[HistoryRequest]{
	Append: func(b []byte, h HistoryRequest) []byte {
		b = appendKey(b, h.Key)
		b = wire.AppendUvarint(b, h.Since)
		return wire.AppendUvarint(b, h.Limit)
	},
	Decode: func(p []byte) (HistoryRequest, error) {
		r := wire.NewReader(p)
		h := HistoryRequest{Key: readKey(r), Since: r.Uvarint(), Limit: r.Uvarint()}
		if r.Err() != nil {
			return h, badPayload("history request", r.Err())
		}
		return h, nil
	},
}

// HistoryReply is the stream's highest acknowledged seq and the messages
// asked for, oldest first.
type HistoryReply struct {
	Last uint64
	Msgs []session.Message
}

var historyReplyCodec = peer.Codec[HistoryReply]{
	Append: func(b []byte, h HistoryReply) []byte {
		b = wire.AppendUvarint(b, h.Last)
		return session.AppendMessages(b, h.Msgs)
	},
	Decode: func(p []byte) (HistoryReply, error) {
		r := wire.NewReader(p)
		h := HistoryReply{Last: r.Uvarint()}
		if r.Err() != nil {
			return h, badPayload("history reply", r.Err())
		}
		msgs, err := session.DecodeMessages(p[len(p)-r.Len():])
		if err != nil {
			return h, badPayload("history reply", err)
		}
		h.Msgs = msgs
		return h, nil
	},
}
