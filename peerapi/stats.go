package peerapi

import (
	"errors"
	"math"

	"github.com/switchboard/switchboard/internal/wire"
	"github.com/switchboard/switchboard/transport/peer"
)

// NodeStats is a node's answer to Stats: its own counts, counters and the
// rates it computed from them over WindowMS.
type NodeStats struct {
	Connections, SessionsOwned, ChannelsOwned, Attached, Replicas uint64
	Published, Delivered                                          uint64
	PublishRate, DeliveryRate                                     float64
	WindowMS                                                      uint64
}

var nodeStatsCodec = peer.Codec[NodeStats]{
	Append: func(b []byte, s NodeStats) []byte {
		for _, v := range []uint64{s.Connections, s.SessionsOwned, s.ChannelsOwned, s.Attached, s.Replicas,
			s.Published, s.Delivered, math.Float64bits(s.PublishRate), math.Float64bits(s.DeliveryRate), s.WindowMS} {
			b = wire.AppendUvarint(b, v)
		}
		return b
	},
	Decode: func(p []byte) (NodeStats, error) {
		r := wire.NewReader(p)
		s := NodeStats{Connections: r.Uvarint(), SessionsOwned: r.Uvarint(), ChannelsOwned: r.Uvarint(),
			Attached: r.Uvarint(), Replicas: r.Uvarint(), Published: r.Uvarint(), Delivered: r.Uvarint(),
			PublishRate: math.Float64frombits(r.Uvarint()), DeliveryRate: math.Float64frombits(r.Uvarint()),
			WindowMS: r.Uvarint()}
		if r.Err() != nil {
			return NodeStats{}, badPayload("stats", r.Err())
		}
		// A rate that is not a finite, non-negative number is a bad peer,
		// not a figure to show.
		for _, v := range []float64{s.PublishRate, s.DeliveryRate} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return NodeStats{}, badPayload("stats", errBadRate)
			}
		}
		return s, nil
	},
}

var errBadRate = errors.New("rate is not a finite, non-negative number")
