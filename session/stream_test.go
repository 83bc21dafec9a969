package session

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/switchboard/switchboard/internal/wire"
)

func testConfig(f func(*StreamConfig)) StreamConfig {
	c := DefaultStreamConfig()
	if f != nil {
		f(&c)
	}
	return c
}

func mustAppend(t testing.TB, s *Stream, id string, now int64) Message {
	t.Helper()
	m, dup, err := s.Append(id, []byte(`"`+id+`"`), now)
	if err != nil || dup {
		t.Fatalf("Append(%q, %d) = %+v, dup %v, %v", id, now, m, dup, err)
	}
	return m
}

func seqs(ms []Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	out := []uint64{}
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// checkSince asks for every resume point from 0 to beyond the end and
// requires exactly the retained messages first..last, or ErrGap.
func checkSince(t testing.TB, s *Stream, first, last uint64) {
	t.Helper()
	if s.Last() != last {
		t.Fatalf("Last = %d, want %d", s.Last(), last)
	}
	for after := uint64(0); after <= last+2; after++ {
		got, err := s.Since(after)
		switch {
		case after > last:
			if !errors.Is(err, ErrGap) {
				t.Fatalf("Since(%d) ahead of %d: %v, want ErrGap", after, last, err)
			}
		case after == last:
			if err != nil || len(got) != 0 {
				t.Fatalf("Since(last=%d) = %v, %v; want nothing", after, seqs(got), err)
			}
		case after+1 < first:
			if !errors.Is(err, ErrGap) {
				t.Fatalf("Since(%d) with first %d = %v, %v; want ErrGap", after, first, seqs(got), err)
			}
		default:
			if err != nil {
				t.Fatalf("Since(%d): %v", after, err)
			}
			if want := seqRange(after+1, last); !reflect.DeepEqual(seqs(got), want) {
				t.Fatalf("Since(%d) = %v, want %v", after, seqs(got), want)
			}
		}
	}
}

func TestStreamConfigValidate(t *testing.T) {
	if err := DefaultStreamConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	tests := []struct {
		name  string
		f     func(*StreamConfig)
		field string
	}{
		{"zero messages", func(c *StreamConfig) { c.MaxMessages = 0 }, "MaxMessages"},
		{"zero window", func(c *StreamConfig) { c.Window = 0 }, "Window"},
		{"negative ids", func(c *StreamConfig) { c.MaxIDs = -1 }, "MaxIDs"},
		{"negative id window", func(c *StreamConfig) { c.IDWindow = -1 }, "IDWindow"},
	}
	for _, tt := range tests {
		err := testConfig(tt.f).Validate()
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.field)) {
			t.Errorf("%s: Validate = %v, want an error naming %s", tt.name, err, tt.field)
		}
	}
	if err := testConfig(func(c *StreamConfig) { c.MaxIDs, c.IDWindow = 0, 0 }).Validate(); err != nil {
		t.Errorf("idempotency off should be valid: %v", err)
	}
}

func TestStreamSeqAndSince(t *testing.T) {
	s := NewStream("u", "s", 1, DefaultStreamConfig())
	checkSince(t, s, 1, 0)
	for i := 1; i <= 50; i++ {
		m := mustAppend(t, s, "id"+strconv.Itoa(i), int64(1000+i))
		if m.Seq != uint64(i) || m.TS != int64(1000+i) || m.ID != "id"+strconv.Itoa(i) {
			t.Fatalf("append %d = %+v", i, m)
		}
		if s.Last() != uint64(i) || s.Len() != i || s.Newest() != int64(1000+i) {
			t.Fatalf("after %d: Last %d Len %d Newest %d", i, s.Last(), s.Len(), s.Newest())
		}
	}
	checkSince(t, s, 1, 50)
	got, _ := s.Since(47)
	for _, m := range got {
		if string(m.Data) != `"id`+strconv.FormatUint(m.Seq, 10)+`"` {
			t.Fatalf("message %d carries %s", m.Seq, m.Data)
		}
	}
}

func TestStreamGap(t *testing.T) {
	tests := []struct {
		name   string
		cfg    StreamConfig
		times  []int64 // one append per entry
		trimAt int64   // 0: no trim
		first  uint64  // oldest retained seq afterwards
		length int
	}{
		{"dropped by count", testConfig(func(c *StreamConfig) { c.MaxMessages = 10 }),
			times(25, 0, 1), 0, 16, 10},
		{"dropped by count, odd capacity", testConfig(func(c *StreamConfig) { c.MaxMessages = 13 }),
			times(100, 0, 1), 0, 88, 13},
		{"dropped by window on append", testConfig(func(c *StreamConfig) { c.Window = 100 }),
			times(20, 0, 10), 0, 10, 11}, // at 190 the last kept is ts 90
		{"dropped by a later trim", testConfig(func(c *StreamConfig) { c.Window = 100 }),
			times(20, 0, 10), 250, 16, 5},
		{"trim at exactly the window keeps", testConfig(func(c *StreamConfig) { c.Window = 100 }),
			times(5, 0, 10), 100, 1, 5},
		{"everything trimmed", testConfig(func(c *StreamConfig) { c.Window = 100 }),
			times(5, 0, 10), 10_000, 6, 0},
		{"count then window", testConfig(func(c *StreamConfig) { c.MaxMessages = 4; c.Window = 100 }),
			times(10, 0, 10), 175, 9, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream("u", "s", 1, tt.cfg)
			for _, ts := range tt.times {
				mustAppend(t, s, "", ts)
			}
			if tt.trimAt != 0 {
				s.Trim(tt.trimAt)
			}
			if s.Len() != tt.length {
				t.Fatalf("Len = %d, want %d", s.Len(), tt.length)
			}
			checkSince(t, s, tt.first, uint64(len(tt.times)))
		})
	}
}

// times returns n timestamps from start, step apart.
func times(n int, start, step int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = start + int64(i)*step
	}
	return out
}

func TestStreamIdempotency(t *testing.T) {
	type op struct {
		id      string
		now     int64
		wantSeq uint64
		wantDup bool
	}
	tests := []struct {
		name    string
		cfg     StreamConfig
		ops     []op
		wantLen int
	}{
		{"same id returns the same seq", DefaultStreamConfig(), []op{
			{"a", 0, 1, false}, {"b", 1, 2, false}, {"a", 2, 1, true}, {"b", 3, 2, true}, {"c", 4, 3, false},
		}, 3},
		{"empty id is never deduplicated", DefaultStreamConfig(), []op{
			{"", 0, 1, false}, {"", 0, 2, false},
		}, 2},
		{"dedup after eviction by count, within the id window",
			testConfig(func(c *StreamConfig) { c.MaxMessages = 2 }), []op{
				{"a", 0, 1, false}, {"b", 1, 2, false}, {"c", 2, 3, false}, {"a", 3, 1, true}, {"d", 4, 4, false},
			}, 2},
		{"dedup at exactly the id window",
			testConfig(func(c *StreamConfig) { c.IDWindow = 1000 }), []op{
				{"a", 0, 1, false}, {"a", 1000, 1, true},
			}, 1},
		{"id forgotten after the id window",
			testConfig(func(c *StreamConfig) { c.IDWindow = 1000 }), []op{
				{"a", 0, 1, false}, {"b", 500, 2, false}, {"a", 1001, 3, false}, {"b", 1400, 2, true}, {"a", 1500, 3, true},
			}, 3},
		{"MaxIDs bounds the ids remembered",
			testConfig(func(c *StreamConfig) { c.MaxIDs = 3 }), []op{
				{"a", 0, 1, false}, {"b", 0, 2, false}, {"c", 0, 3, false}, {"d", 0, 4, false},
				{"b", 0, 2, true}, {"c", 0, 3, true}, {"d", 0, 4, true}, {"a", 0, 5, false},
			}, 5},
		{"MaxIDs 0 turns idempotency off",
			testConfig(func(c *StreamConfig) { c.MaxIDs = 0 }), []op{
				{"a", 0, 1, false}, {"a", 0, 2, false},
			}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream("u", "s", 1, tt.cfg)
			stored := map[uint64]string{}
			for i, o := range tt.ops {
				m, dup, err := s.Append(o.id, []byte(fmt.Sprintf(`%d`, i)), o.now)
				if err != nil {
					t.Fatalf("op %d: %v", i, err)
				}
				if m.Seq != o.wantSeq || dup != o.wantDup {
					t.Fatalf("op %d Append(%q, %d) = seq %d dup %v; want seq %d dup %v",
						i, o.id, o.now, m.Seq, dup, o.wantSeq, o.wantDup)
				}
				if !dup {
					stored[m.Seq] = string(m.Data)
					continue
				}
				if m.ID != o.id {
					t.Fatalf("op %d: dup reports id %q", i, m.ID)
				}
				// A duplicate answers with the original message while it is retained.
				if orig, ok := s.get(m.Seq); ok && string(m.Data) != string(orig.Data) {
					t.Fatalf("op %d: dup data %s, original %s", i, m.Data, orig.Data)
				}
			}
			if s.Len() != tt.wantLen {
				t.Fatalf("Len = %d, want %d", s.Len(), tt.wantLen)
			}
			all, err := s.Since(s.Last() - uint64(s.Len()))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range all {
				if stored[m.Seq] != string(m.Data) {
					t.Fatalf("seq %d holds %s, appended %s", m.Seq, m.Data, stored[m.Seq])
				}
			}
			if tt.cfg.MaxIDs > 0 && (len(s.ids) > tt.cfg.MaxIDs || s.idqN > tt.cfg.MaxIDs || len(s.idq) > tt.cfg.MaxIDs) {
				t.Fatalf("ids %d queue %d/%d exceed MaxIDs %d", len(s.ids), s.idqN, len(s.idq), tt.cfg.MaxIDs)
			}
		})
	}
}

func TestStreamIDMemoryBounded(t *testing.T) {
	cfg := testConfig(func(c *StreamConfig) { c.MaxIDs = 100; c.MaxMessages = 50 })
	s := NewStream("u", "s", 1, cfg)
	for i := range 10_000 {
		mustAppend(t, s, "id"+strconv.Itoa(i), int64(i))
		if len(s.ids) > 100 || s.idqN > 100 || len(s.idq) > 100 || len(s.ring) > 50 {
			t.Fatalf("after %d: ids %d queue %d/%d ring %d", i, len(s.ids), s.idqN, len(s.idq), len(s.ring))
		}
	}
}

func TestStreamSeal(t *testing.T) {
	t.Run("owner", func(t *testing.T) {
		s := NewStream("u", "s", 3, DefaultStreamConfig())
		mustAppend(t, s, "a", 1)
		s.Seal(3) // sealing at its own epoch changes nothing
		mustAppend(t, s, "b", 2)
		if s.Sealed() {
			t.Fatal("sealed at its own epoch")
		}
		s.Seal(4)
		if !s.Sealed() || s.Fence() != 4 {
			t.Fatalf("Sealed %v Fence %d", s.Sealed(), s.Fence())
		}
		for _, id := range []string{"c", "a", ""} { // new, duplicate, anonymous
			if _, _, err := s.Append(id, nil, 3); !errors.Is(err, ErrStaleEpoch) {
				t.Fatalf("Append(%q) after seal: %v, want ErrStaleEpoch", id, err)
			}
		}
		s.Seal(2) // a fence never moves back
		if s.Fence() != 4 {
			t.Fatalf("Fence moved back to %d", s.Fence())
		}
		if s.Last() != 2 || s.Len() != 2 {
			t.Fatalf("sealed stream changed: Last %d Len %d", s.Last(), s.Len())
		}
		checkSince(t, s, 1, 2) // a sealed stream still serves its tail for handoff
	})

	t.Run("replica", func(t *testing.T) {
		msg := func(seq uint64) Message {
			return Message{Seq: seq, ID: "id" + strconv.FormatUint(seq, 10), TS: int64(seq), Data: []byte("x")}
		}
		s := NewStream("u", "s", 1, DefaultStreamConfig())
		steps := []struct {
			name  string
			epoch uint64
			seq   uint64
			seal  uint64
			err   error
			last  uint64
		}{
			{"first in order", 1, 1, 0, nil, 1},
			{"second in order", 1, 2, 0, nil, 2},
			{"duplicate ignored", 1, 1, 0, nil, 2},
			{"latest again ignored", 1, 2, 0, nil, 2},
			{"gap", 1, 4, 0, ErrGap, 2},
			{"older epoch after seal", 1, 3, 2, ErrStaleEpoch, 2},
			{"duplicate under older epoch after seal", 1, 2, 0, ErrStaleEpoch, 2},
			{"new owner's epoch", 2, 3, 0, nil, 3},
			{"newer epoch without seal", 5, 4, 0, nil, 4},
			{"epoch between fence and newest put", 3, 5, 0, ErrStaleEpoch, 4},
			{"newest epoch continues", 5, 5, 0, nil, 5},
		}
		for _, st := range steps {
			if st.seal != 0 {
				s.Seal(st.seal)
			}
			err := s.Put(st.epoch, msg(st.seq), int64(st.seq))
			if (st.err == nil) != (err == nil) || !errors.Is(err, st.err) {
				t.Fatalf("%s: Put = %v, want %v", st.name, err, st.err)
			}
			if s.Last() != st.last || s.Len() != int(st.last) {
				t.Fatalf("%s: Last %d Len %d, want %d", st.name, s.Last(), s.Len(), st.last)
			}
		}
		if s.Epoch != 5 || s.Fence() != 5 {
			t.Fatalf("Epoch %d Fence %d, want 5 (highest put)", s.Epoch, s.Fence())
		}
		checkSince(t, s, 1, 5)
		// Replicated ids deduplicate on the replica once it takes over.
		if m, dup, err := s.Append("id3", nil, 10); err != nil || !dup || m.Seq != 3 {
			t.Fatalf("Append of a replicated id = %+v %v %v", m, dup, err)
		}
	})
}

func TestStreamLoad(t *testing.T) {
	tail := func(from, to uint64) []Message {
		var out []Message
		for seq := from; seq <= to; seq++ {
			out = append(out, Message{Seq: seq, ID: "id" + strconv.FormatUint(seq, 10), TS: 1000 + int64(seq), Data: []byte("d")})
		}
		return out
	}
	tests := []struct {
		name  string
		cfg   StreamConfig
		last  uint64
		msgs  []Message
		err   error
		first uint64 // oldest retained seq after a successful load
	}{
		{"tail after trimmed history", DefaultStreamConfig(), 40, tail(31, 40), nil, 31},
		{"whole history", DefaultStreamConfig(), 5, tail(1, 5), nil, 1},
		{"nothing retained", DefaultStreamConfig(), 17, nil, nil, 18},
		{"fresh stream", DefaultStreamConfig(), 0, nil, nil, 1},
		{"more than the ring holds", testConfig(func(c *StreamConfig) { c.MaxMessages = 4 }), 20, tail(1, 20), nil, 17},
		{"starts at seq 0", DefaultStreamConfig(), 3, tail(0, 3), ErrGap, 0},
		{"ends before last", DefaultStreamConfig(), 9, tail(1, 8), ErrGap, 0},
		{"not contiguous", DefaultStreamConfig(), 10, append(tail(1, 4), tail(6, 10)...), ErrGap, 0},
		{"out of order", DefaultStreamConfig(), 3, []Message{{Seq: 2}, {Seq: 1}, {Seq: 3}}, ErrGap, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream("u", "s2", 2, tt.cfg)
			err := s.Load(tt.last, tt.msgs)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Load = %v, want %v", err, tt.err)
				}
				// A refused load leaves the stream empty, ready for a retry.
				if s.Last() != 0 || s.Len() != 0 || len(s.ids) != 0 {
					t.Fatalf("refused load left Last %d Len %d ids %d", s.Last(), s.Len(), len(s.ids))
				}
				if err := s.Load(3, tail(1, 3)); err != nil {
					t.Fatalf("retry after refused load: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkSince(t, s, tt.first, tt.last)
			// Numbering continues, and the loaded ids still deduplicate.
			if m := mustAppend(t, s, "fresh", 2000); m.Seq != tt.last+1 {
				t.Fatalf("append after load got seq %d, want %d", m.Seq, tt.last+1)
			}
			if len(tt.msgs) > 0 {
				id := tt.msgs[len(tt.msgs)-1].ID
				if m, dup, err := s.Append(id, nil, 2000); err != nil || !dup || m.Seq != tt.last {
					t.Fatalf("loaded id %q: seq %d dup %v err %v", id, m.Seq, dup, err)
				}
			}
			if err := s.Load(tt.last, nil); !errors.Is(err, ErrGap) {
				t.Fatalf("second load = %v, want ErrGap", err)
			}
		})
	}
}

func TestStreamFrameHook(t *testing.T) {
	calls := map[uint64]int{}
	frame := func(m Message) []byte {
		calls[m.Seq]++
		return []byte(fmt.Sprintf("frame:%d:%s", m.Seq, m.Data))
	}
	cfg := testConfig(func(c *StreamConfig) { c.Frame = frame })
	s := NewStream("u", "s", 1, cfg)
	for i := range 10 {
		mustAppend(t, s, "id"+strconv.Itoa(i), int64(i))
	}
	for i := range 10 { // duplicates make no new frames
		if _, dup, _ := s.Append("id"+strconv.Itoa(i), nil, 20); !dup {
			t.Fatal("expected duplicate")
		}
	}
	got, err := s.Since(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		if want := fmt.Sprintf("frame:%d:%s", m.Seq, m.Data); string(m.Frame) != want {
			t.Fatalf("seq %d frame %q, want %q", m.Seq, m.Frame, want)
		}
	}

	checkCalls := func(t *testing.T, want int) {
		t.Helper()
		for seq, n := range calls {
			if n != 1 {
				t.Errorf("Frame called %d times for seq %d", n, seq)
			}
		}
		if len(calls) != want {
			t.Errorf("Frame called for %d seqs, want %d", len(calls), want)
		}
	}
	checkCalls(t, 10)

	// A replica frames what arrives without a frame, once; a message with a
	// frame keeps it, and ignored or refused puts make none.
	clear(calls)
	r := NewStream("u", "s", 1, cfg)
	if err := r.Put(1, Message{Seq: 1, Data: []byte("a")}, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(1, Message{Seq: 2, Data: []byte("b"), Frame: []byte("given")}, 0); err != nil {
		t.Fatal(err)
	}
	_ = r.Put(1, Message{Seq: 1, Data: []byte("a")}, 0)
	_ = r.Put(1, Message{Seq: 9, Data: []byte("z")}, 0)
	r.Seal(2)
	_ = r.Put(1, Message{Seq: 3, Data: []byte("c")}, 0)
	got, _ = r.Since(0)
	if string(got[0].Frame) != "frame:1:a" || string(got[1].Frame) != "given" {
		t.Fatalf("replica frames %q %q", got[0].Frame, got[1].Frame)
	}
	checkCalls(t, 1)

	// A handed-over tail is framed the same way.
	clear(calls)
	l := NewStream("u", "s", 2, cfg)
	if err := l.Load(6, []Message{{Seq: 5, Data: []byte("e")}, {Seq: 6, Data: []byte("f"), Frame: []byte("given")}}); err != nil {
		t.Fatal(err)
	}
	got, _ = l.Since(4)
	if string(got[0].Frame) != "frame:5:e" || string(got[1].Frame) != "given" {
		t.Fatalf("loaded frames %q %q", got[0].Frame, got[1].Frame)
	}
	checkCalls(t, 1)
}

// TestStreamReplicatedIDReuse: an id may legitimately come back under a
// new seq once the owner forgot it; a replica whose clock lags still holds
// the old record, and expiring that record must not forget the new one.
func TestStreamReplicatedIDReuse(t *testing.T) {
	s := NewStream("u", "s", 1, testConfig(func(c *StreamConfig) { c.IDWindow = 1000 }))
	if err := s.Put(1, Message{Seq: 1, ID: "a", TS: 0}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(1, Message{Seq: 2, ID: "a", TS: 1500}, 500); err != nil {
		t.Fatal(err)
	}
	s.Trim(1200) // expires the record of seq 1 only
	m, dup, err := s.Append("a", nil, 1200)
	if err != nil || !dup || m.Seq != 2 {
		t.Fatalf("Append(a) = seq %d dup %v err %v; want seq 2 dup", m.Seq, dup, err)
	}
}

func TestStreamNoFrameHook(t *testing.T) {
	s := NewStream("u", "s", 1, DefaultStreamConfig())
	if m := mustAppend(t, s, "a", 0); m.Frame != nil {
		t.Fatalf("Frame = %q without a hook", m.Frame)
	}
}

// streamModel is the obvious slice implementation of the stream's
// retention and idempotency rules.
type streamModel struct {
	cfg  StreamConfig
	msgs []Message
	ids  []idRecord
	last uint64
}

func (m *streamModel) trim(now int64) {
	for len(m.msgs) > 0 && now-m.msgs[0].TS > m.cfg.Window {
		m.msgs = m.msgs[1:]
	}
	for len(m.ids) > 0 && now-m.ids[0].ts > m.cfg.IDWindow {
		m.ids = m.ids[1:]
	}
}

func (m *streamModel) append(id string, data []byte, now int64) (uint64, bool) {
	m.trim(now)
	if id != "" {
		for _, r := range m.ids {
			if r.id == id {
				return r.seq, true
			}
		}
	}
	m.last++
	m.msgs = append(m.msgs, Message{Seq: m.last, ID: id, TS: now, Data: data})
	if len(m.msgs) > m.cfg.MaxMessages {
		m.msgs = m.msgs[1:]
	}
	if id != "" && m.cfg.MaxIDs > 0 {
		if len(m.ids) == m.cfg.MaxIDs {
			m.ids = m.ids[1:]
		}
		m.ids = append(m.ids, idRecord{id: id, seq: m.last, ts: now})
	}
	return m.last, false
}

// TestStreamMatchesModel drives random appends and trims, with the ring
// growing and wrapping around, and compares every observable with the model.
func TestStreamMatchesModel(t *testing.T) {
	for seed := int64(1); seed <= 150; seed++ {
		rng := rand.New(rand.NewSource(seed))
		cfg := StreamConfig{
			MaxMessages: 1 + rng.Intn(40),
			Window:      1 + int64(rng.Intn(2000)),
			MaxIDs:      rng.Intn(30),
			IDWindow:    int64(rng.Intn(3000)),
		}
		s := NewStream("u", "s", 1, cfg)
		model := &streamModel{cfg: cfg}
		now := int64(0)
		for step := range 400 {
			if rng.Intn(20) == 0 {
				now -= int64(rng.Intn(50)) // clocks step back now and then
			} else {
				now += int64(rng.Intn(100))
			}
			if rng.Intn(8) == 0 {
				s.Trim(now)
				model.trim(now)
			} else {
				id := ""
				if rng.Intn(4) > 0 {
					id = "id" + strconv.Itoa(rng.Intn(60))
				}
				data := []byte(strconv.Itoa(step))
				m, dup, err := s.Append(id, data, now)
				if err != nil {
					t.Fatalf("seed %d step %d: %v", seed, step, err)
				}
				wantSeq, wantDup := model.append(id, data, now)
				if m.Seq != wantSeq || dup != wantDup {
					t.Fatalf("seed %d step %d Append(%q) = %d/%v, model %d/%v", seed, step, id, m.Seq, dup, wantSeq, wantDup)
				}
			}
			if s.Len() != len(model.msgs) || s.Last() != model.last {
				t.Fatalf("seed %d step %d: Len %d Last %d, model %d %d", seed, step, s.Len(), s.Last(), len(model.msgs), model.last)
			}
			if len(s.ring) > cfg.MaxMessages {
				t.Fatalf("seed %d: ring grew to %d > %d", seed, len(s.ring), cfg.MaxMessages)
			}
			var newest int64
			if n := len(model.msgs); n > 0 {
				newest = model.msgs[n-1].TS
			}
			if s.Newest() != newest {
				t.Fatalf("seed %d step %d: Newest %d, model %d", seed, step, s.Newest(), newest)
			}
			first := model.last + 1
			if len(model.msgs) > 0 {
				first = model.msgs[0].Seq
				got, err := s.Since(first - 1)
				if err != nil || !reflect.DeepEqual(got, model.msgs) {
					t.Fatalf("seed %d step %d: Since(%d) = %v %v\nmodel %v", seed, step, first-1, got, err, model.msgs)
				}
			}
			if step%50 == 0 {
				checkSince(t, s, first, model.last)
			}
		}
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		msgs []Message
	}{
		{"none", nil},
		{"one without data", []Message{{Seq: 1}}},
		{"several", []Message{
			{Seq: 7, ID: "a", TS: 1_700_000_000_000, Data: []byte(`{"k":1}`)},
			{Seq: 8, TS: -1, Data: []byte(`[]`)},
			{Seq: math.MaxUint64, ID: "ユニ", TS: math.MinInt64, Data: bytes.Repeat([]byte("z"), 1000)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := make([]Message, len(tt.msgs))
			for i, m := range tt.msgs {
				m.Frame = []byte("not encoded")
				in[i] = m
			}
			b := AppendMessages([]byte("pre"), in)
			if string(b[:3]) != "pre" {
				t.Fatal("AppendMessages clobbered dst")
			}
			got, err := DecodeMessages(b[3:])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.msgs) {
				t.Fatalf("decoded %d messages, want %d", len(got), len(tt.msgs))
			}
			for i, m := range got {
				w := tt.msgs[i]
				if m.Seq != w.Seq || m.ID != w.ID || m.TS != w.TS || !bytes.Equal(m.Data, w.Data) || m.Frame != nil {
					t.Fatalf("message %d = %+v, want %+v", i, m, w)
				}
			}
		})
	}
}

func TestDecodeMessagesRejects(t *testing.T) {
	valid := AppendMessages(nil, []Message{{Seq: 1, ID: "a", TS: 5, Data: []byte("xy")}, {Seq: 300, ID: "bb", TS: 1 << 40, Data: []byte("z")}})
	tests := map[string][]byte{
		"nil":            nil,
		"version 0":      append([]byte{0}, valid[1:]...),
		"version 2":      append([]byte{2}, valid[1:]...),
		"huge count":     {codecVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"count too high": {codecVersion, 3, 1, 0, 0, 0},
		"data too long":  {codecVersion, 1, 1, 0, 0, 9, 'a'},
		"trailing bytes": append(bytes.Clone(valid), 0),
		"garbage":        []byte("garbage"),
	}
	for i := range len(valid) {
		tests[fmt.Sprintf("truncated to %d", i)] = valid[:i]
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if ms, err := DecodeMessages(in); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeMessages = %v, %v; want ErrBadCommand", ms, err)
			}
		})
	}
}

func FuzzDecodeMessages(f *testing.F) {
	f.Add(AppendMessages(nil, nil))
	f.Add(AppendMessages(nil, []Message{{Seq: 1, ID: "a", TS: 5, Data: []byte(`"x"`)}}))
	f.Add(AppendMessages(nil, []Message{{Seq: 1}, {Seq: 2, ID: "b"}, {Seq: 1 << 60, TS: -9, Data: []byte("{}")}}))
	f.Add([]byte{codecVersion, 0xff, 0xff, 0x03})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := DecodeMessages(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		if len(ms) > len(b)/4 {
			t.Fatalf("%d messages from %d bytes", len(ms), len(b))
		}
		b2 := AppendMessages(nil, ms)
		ms2, err := DecodeMessages(b2)
		if err != nil {
			t.Fatalf("re-encoded messages do not decode: %v", err)
		}
		if len(ms2) != len(ms) {
			t.Fatalf("round trip: %d messages, then %d", len(ms), len(ms2))
		}
		for i := range ms {
			a, c := ms[i], ms2[i]
			if a.Seq != c.Seq || a.ID != c.ID || a.TS != c.TS || !bytes.Equal(a.Data, c.Data) {
				t.Fatalf("message %d changed: %+v vs %+v", i, a, c)
			}
		}
		if b3 := AppendMessages(nil, ms2); !bytes.Equal(b2, b3) {
			t.Fatal("encoding is not stable")
		}
		// Whatever decodes can be fed to a replica without panicking.
		s := NewStream("u", "s", 1, testConfig(func(c *StreamConfig) { c.MaxMessages = 8 }))
		for _, m := range ms {
			_ = s.Put(1, m, m.TS)
		}
	})
}

func BenchmarkStreamAppend(b *testing.B) {
	for _, withID := range []bool{false, true} {
		b.Run(fmt.Sprintf("id=%v", withID), func(b *testing.B) {
			ids := make([]string, 1<<16)
			for i := range ids {
				if withID {
					ids[i] = "pub-" + strconv.Itoa(i)
				}
			}
			s := NewStream("u", "s", 1, DefaultStreamConfig())
			data := []byte(`{"order":12345,"px":"101.25","qty":3}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Two ms per append: an id comes round again only after the
				// 120 s id window, so every append stores a message.
				if _, dup, err := s.Append(ids[i&(len(ids)-1)], data, int64(2*i)); err != nil || dup {
					b.Fatalf("append %d: dup %v err %v", i, dup, err)
				}
			}
		})
	}
}

func TestReadMessagesLeavesTheRest(t *testing.T) {
	msgs := []Message{{Seq: 1, ID: "a", Data: []byte("1")}, {Seq: 2, Data: []byte("2")}}
	b := append(AppendMessages(nil, msgs), 0xAB, 0xCD)
	r := wire.NewReader(b)
	got, err := ReadMessages(r)
	if err != nil || len(got) != 2 || got[1].Seq != 2 {
		t.Fatalf("ReadMessages = %+v, %v", got, err)
	}
	if r.Len() != 2 || r.Byte() != 0xAB {
		t.Fatalf("reader left at %d bytes, want the 2 after the messages", r.Len())
	}
	if _, err := ReadMessages(wire.NewReader(b[:3])); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("truncated: err = %v, want ErrBadCommand", err)
	}
}

func TestStreamRangeReturnsWhatIsKept(t *testing.T) {
	cfg := DefaultStreamConfig()
	cfg.MaxMessages = 4
	s := NewStream("c", "s", 1, cfg)
	for i := 0; i < 6; i++ {
		if _, _, err := s.Append("", []byte("1"), 1); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(ms []Message) (out []uint64) {
		for _, m := range ms {
			out = append(out, m.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		after, upto uint64
		limit       int
		want        []uint64
	}{
		{0, 6, 100, []uint64{3, 4, 5, 6}}, // 1 and 2 fell out of the ring
		{4, 6, 100, []uint64{5, 6}},
		{0, 6, 2, []uint64{3, 4}},
		{0, 5, 100, []uint64{3, 4, 5}}, // not past what is acknowledged
		{6, 6, 100, nil},
		{9, 6, 100, nil},
	} {
		if got := seqs(s.Range(tc.after, tc.upto, tc.limit)); !slices.Equal(got, tc.want) {
			t.Errorf("Range(%d, %d, %d) = %v, want %v", tc.after, tc.upto, tc.limit, got, tc.want)
		}
	}
}
