package peerapi

import (
	"errors"
	"math"
	"testing"
)

func TestNodeStatsRoundTrip(t *testing.T) {
	for _, want := range []NodeStats{
		{},
		{Connections: 3, SessionsOwned: 2, ChannelsOwned: 1, Attached: 4, Replicas: 5,
			Published: 1 << 40, Delivered: 77, PublishRate: 12.5, DeliveryRate: 0.25, WindowMS: 5000},
	} {
		got, err := nodeStatsCodec.Decode(nodeStatsCodec.Append(nil, want))
		if err != nil || got != want {
			t.Fatalf("round trip of %+v = %+v, %v", want, got, err)
		}
	}
	b := nodeStatsCodec.Append(nil, NodeStats{Connections: 1, PublishRate: 3})
	if _, err := nodeStatsCodec.Decode(b[:len(b)-2]); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("truncated stats: err = %v, want ErrBadPayload", err)
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), -1} {
		if _, err := nodeStatsCodec.Decode(nodeStatsCodec.Append(nil, NodeStats{DeliveryRate: bad})); !errors.Is(err, ErrBadPayload) {
			t.Fatalf("rate %v: err = %v, want ErrBadPayload", bad, err)
		}
	}
}
