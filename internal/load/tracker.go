package load

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/client"
)

// payload is the data of every published message: intended send time,
// user index and message number. It is what makes latency open-loop and
// lets every delivery be matched to its publish.
type payload struct {
	T int64  `json:"t"` // intended send time, UnixNano
	U int    `json:"u"` // user index
	K uint64 `json:"k"` // message number, unique in the run
}

// appendPayload encodes p without reflection (it is on the hot path).
func appendPayload(dst []byte, p payload) []byte {
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, p.T, 10)
	dst = append(dst, `,"u":`...)
	dst = strconv.AppendInt(dst, int64(p.U), 10)
	dst = append(dst, `,"k":`...)
	dst = strconv.AppendUint(dst, p.K, 10)
	return append(dst, '}')
}

// parsePayload reads a payload in exactly the form appendPayload writes
// (the server keeps compact JSON as it is); anything else is !ok and goes
// to encoding/json. Decoding 20,000 payloads a second by reflection was a
// tenth of the load generator's CPU.
func parsePayload(b []byte) (p payload, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"t":`))
	if !ok {
		return p, false
	}
	var t, u, k int64
	if t, rest, ok = cutInt(rest, ','); !ok {
		return p, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`"u":`)); !ok {
		return p, false
	}
	if u, rest, ok = cutInt(rest, ','); !ok {
		return p, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`"k":`)); !ok {
		return p, false
	}
	if k, rest, ok = cutInt(rest, '}'); !ok || len(rest) != 0 || u < 0 || k < 0 {
		return p, false
	}
	return payload{T: t, U: int(u), K: uint64(k)}, true
}

// cutInt reads a decimal integer up to the byte end.
func cutInt(b []byte, end byte) (int64, []byte, bool) {
	i := bytes.IndexByte(b, end)
	if i <= 0 {
		return 0, nil, false
	}
	v, err := strconv.ParseInt(string(b[:i]), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	return v, b[i+1:], true
}

// msgState is what the run knows about one message.
type msgState struct {
	user      int32
	acked     bool
	delivered uint16 // times delivered to the application
	seq       uint64 // acknowledged seq
	dseq      uint64 // seq of the first delivery
}

// tracker matches acknowledgements with deliveries. Message numbers are
// dense from 0, so the states live in a slice.
type tracker struct {
	mu   sync.Mutex
	msgs []msgState

	latency    Histogram // delivery − intended send time
	ackLatency Histogram // acknowledgement − intended send time

	acked, delivered                  atomic.Int64
	duplicates, seqMismatch           atomic.Int64
	seqConflict, misrouted, undecoded atomic.Int64
}

// add registers the messages 0..k-1 as published to users[i].
func (t *tracker) add(k uint64, user int) {
	t.mu.Lock()
	for uint64(len(t.msgs)) <= k {
		t.msgs = append(t.msgs, msgState{user: -1})
	}
	t.msgs[k].user = int32(user)
	t.mu.Unlock()
}

// ack records the answer for message k.
func (t *tracker) ack(k, seq uint64, intended int64, now time.Time) {
	t.mu.Lock()
	m := &t.msgs[k]
	first := !m.acked
	if m.acked && m.seq != seq {
		t.seqConflict.Add(1) // the same id answered with two seqs: G3
	}
	m.acked, m.seq = true, seq
	if first && m.delivered > 0 && m.dseq != seq {
		t.seqMismatch.Add(1)
	}
	t.mu.Unlock()
	if first {
		t.acked.Add(1)
		t.ackLatency.Record(now.UnixNano() - intended)
	}
}

// deliver records one message delivered to user u.
func (t *tracker) deliver(u int, m client.Message, now time.Time) {
	p, ok := parsePayload(m.Data)
	if !ok {
		if err := json.Unmarshal(m.Data, &p); err != nil {
			t.undecoded.Add(1)
			return
		}
	}
	t.mu.Lock()
	if p.K >= uint64(len(t.msgs)) || t.msgs[p.K].user != int32(u) || p.U != u {
		t.mu.Unlock()
		t.misrouted.Add(1)
		return
	}
	s := &t.msgs[p.K]
	s.delivered++
	first := s.delivered == 1
	if first {
		s.dseq = m.Seq
		if s.acked && s.seq != m.Seq {
			t.seqMismatch.Add(1)
		}
	}
	t.mu.Unlock()
	if !first {
		t.duplicates.Add(1)
		return
	}
	t.delivered.Add(1)
	t.latency.Record(now.UnixNano() - p.T)
}

// undelivered counts acknowledged messages not delivered yet.
func (t *tracker) undelivered() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for i := range t.msgs {
		if t.msgs[i].acked && t.msgs[i].delivered == 0 {
			n++
		}
	}
	return n
}

// Accounting is the end-of-run account of every published message.
type Accounting struct {
	Published int64 `json:"published"`
	Acked     int64 `json:"acked"`
	// Unacked gave up after RetryFor without a 200 answer.
	Unacked   int64 `json:"unacked"`
	Delivered int64 `json:"delivered"`
	// Lost were acknowledged but never delivered (G2).
	Lost int64 `json:"lost"`
	// Duplicated were delivered to the application more than once (G3).
	Duplicated int64 `json:"duplicated"`
	// Gaps are seqs missing between delivered seqs of a user whose
	// continuity was never lost (G1), plus the SDK's gap reports.
	Gaps int64 `json:"gaps"`
	// OutOfOrder are deliveries whose seq is not above the user's
	// previous delivery (G1), plus the SDK's regression reports.
	OutOfOrder int64 `json:"out_of_order"`
	// SeqMismatch were delivered with a seq other than the acknowledged
	// one; SeqConflict were acknowledged twice with different seqs.
	SeqMismatch int64 `json:"seq_mismatch"`
	SeqConflict int64 `json:"seq_conflict"`
	// Misrouted arrived at another user or carried an unknown number.
	Misrouted int64 `json:"misrouted"`
	// LostSample names up to 10 lost messages (user/id@seq), for digging.
	LostSample []string `json:"lost_sample,omitempty"`
	// DeliveredUnacked were delivered though their publish never got a
	// 200 (allowed: the publish may have been stored before a failure).
	DeliveredUnacked int64 `json:"delivered_unacked"`
}

// maxLostSample bounds Accounting.LostSample.
const maxLostSample = 10

// account computes the final numbers. skipGaps tells, per user index,
// whether continuity was lost (its seq line legitimately restarts).
func (t *tracker) account(users int, name func(u int) string, lostContinuity func(u int) bool) Accounting {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := Accounting{
		Published:   int64(len(t.msgs)),
		Duplicated:  t.duplicates.Load(),
		SeqMismatch: t.seqMismatch.Load(),
		SeqConflict: t.seqConflict.Load(),
		Misrouted:   t.misrouted.Load() + t.undecoded.Load(),
	}
	perUser := make([][]uint64, users)
	for i := range t.msgs {
		m := &t.msgs[i]
		if m.acked {
			a.Acked++
		}
		if m.delivered > 0 {
			a.Delivered++
			if !m.acked {
				a.DeliveredUnacked++
			}
			if m.user >= 0 && int(m.user) < users {
				perUser[m.user] = append(perUser[m.user], m.dseq)
			}
		}
		if m.acked && m.delivered == 0 {
			a.Lost++
			if len(a.LostSample) < maxLostSample {
				a.LostSample = append(a.LostSample, fmt.Sprintf("%s/m%d@%d", name(int(m.user)), i, m.seq))
			}
		}
		if !m.acked && m.user >= 0 {
			a.Unacked++
		}
	}
	for u, seqs := range perUser {
		if lostContinuity(u) {
			continue
		}
		holes, dups := seqHoles(seqs)
		a.Gaps += holes
		a.OutOfOrder += dups
	}
	return a
}

// seqHoles sorts seqs and counts the seqs missing between the lowest and
// the highest, and the seqs that occur more than once (two messages
// delivered under one seq: an order violation).
func seqHoles(seqs []uint64) (holes, repeats int64) {
	slices.Sort(seqs)
	for i := 1; i < len(seqs); i++ {
		switch d := seqs[i] - seqs[i-1]; {
		case d == 0:
			repeats++
		case d > 1:
			holes += int64(d - 1)
		}
	}
	return holes, repeats
}
