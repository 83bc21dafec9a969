package session

import (
	"encoding/binary"
	"fmt"

	"github.com/switchboard/switchboard/internal/wire"
)

// Message is one entry of a user's stream.
type Message struct {
	Seq  uint64
	ID   string // publish id (idempotency key)
	TS   int64  // publish time, unix ms
	Data []byte // JSON value
	// Frame is the message encoded for clients, made once at append by
	// StreamConfig.Frame and shared by every connection it is sent to.
	Frame []byte
}

// StreamConfig bounds a stream.
type StreamConfig struct {
	MaxMessages int   // ring capacity (count bound)
	Window      int64 // resume window, ms: older messages are dropped
	MaxIDs      int   // idempotency ids remembered (bound on memory)
	IDWindow    int64 // idempotency window, ms
	// Frame encodes a message for clients; nil leaves Message.Frame empty.
	Frame func(Message) []byte
}

// DefaultStreamConfig returns the contract defaults: 120 s resume and
// idempotency windows.
func DefaultStreamConfig() StreamConfig {
	return StreamConfig{MaxMessages: 4096, Window: 120_000, MaxIDs: 65536, IDWindow: 120_000}
}

// Validate reports the first bad field.
func (c StreamConfig) Validate() error {
	switch {
	case c.MaxMessages <= 0:
		return fmt.Errorf("stream: MaxMessages must be > 0, got %d", c.MaxMessages)
	case c.Window <= 0:
		return fmt.Errorf("stream: Window must be > 0, got %d", c.Window)
	case c.MaxIDs < 0:
		return fmt.Errorf("stream: MaxIDs must be >= 0, got %d", c.MaxIDs)
	case c.IDWindow < 0:
		return fmt.Errorf("stream: IDWindow must be >= 0, got %d", c.IDWindow)
	}
	return nil
}

type idRecord struct {
	id  string
	seq uint64
	ts  int64
}

// Stream is one user's ordered message log on the node that holds it: seq
// assignment, a ring buffer bounded by count and time, idempotency ids and
// the epoch fence. It is not safe for concurrent use.
type Stream struct {
	cfg     StreamConfig
	User    string
	Session string
	// Epoch is the registry epoch under which this node holds the stream.
	Epoch uint64
	fence uint64 // appends under an epoch below this are refused
	last  uint64 // highest seq ever assigned or received

	ring []Message // circular, len(ring) grows up to cfg.MaxMessages
	head int       // index of the oldest retained message
	n    int       // retained messages

	ids  map[string]uint64 // id → seq
	idq  []idRecord        // ids in append order, for expiry; circular
	idqH int
	idqN int
}

// NewStream returns an empty stream held under epoch.
func NewStream(user, session string, epoch uint64, cfg StreamConfig) *Stream {
	return &Stream{cfg: cfg, User: user, Session: session, Epoch: epoch, fence: epoch}
}

// Last returns the highest seq in the stream (0 if none yet).
func (s *Stream) Last() uint64 { return s.last }

// Len returns the number of retained messages.
func (s *Stream) Len() int { return s.n }

// Fence returns the lowest epoch still allowed to append.
func (s *Stream) Fence() uint64 { return s.fence }

// Seal fences the stream at epoch: from now on appends and replicated puts
// under an older epoch are refused with ErrStaleEpoch. A stream is sealed
// at its old owner and backup when a new owner takes over.
func (s *Stream) Seal(epoch uint64) {
	if epoch > s.fence {
		s.fence = epoch
	}
}

// Adopt moves the stream's owner to a newer epoch it was granted (a
// set-backup bumps the epoch of the owner's own entry). Older epochs are
// fenced from then on.
func (s *Stream) Adopt(epoch uint64) {
	if epoch > s.Epoch {
		s.Epoch = epoch
		s.Seal(epoch)
	}
}

// Sealed reports whether the stream's own epoch is fenced off.
func (s *Stream) Sealed() bool { return s.Epoch < s.fence }

// Append assigns the next seq to a new message under the stream's epoch.
// A message whose id was appended within the idempotency window is not
// stored again: Append returns the original seq with dup=true.
func (s *Stream) Append(id string, data []byte, now int64) (m Message, dup bool, err error) {
	if s.Epoch < s.fence {
		return Message{}, false, fmt.Errorf("%w: stream sealed at epoch %d (held at %d)", ErrStaleEpoch, s.fence, s.Epoch)
	}
	s.Trim(now)
	if id != "" {
		if seq, ok := s.ids[id]; ok {
			if old, ok := s.get(seq); ok {
				return old, true, nil
			}
			return Message{Seq: seq, ID: id}, true, nil
		}
	}
	m = Message{Seq: s.last + 1, ID: id, TS: now, Data: data}
	if s.cfg.Frame != nil {
		m.Frame = s.cfg.Frame(m)
	}
	s.push(m)
	return m, false, nil
}

// Put stores a message replicated from the owner under epoch. Messages
// must arrive in seq order; one already held is ignored (a retried
// replication), one beyond the next seq is ErrGap.
func (s *Stream) Put(epoch uint64, m Message, now int64) error {
	if epoch < s.fence {
		return fmt.Errorf("%w: replica sealed at epoch %d, put at %d", ErrStaleEpoch, s.fence, epoch)
	}
	if epoch > s.Epoch {
		s.Epoch = epoch
	}
	// A put under a newer epoch proves a newer owner exists: fence off the
	// older one even if its seal has not arrived yet, so two owners can
	// never interleave their messages here.
	s.Seal(epoch)
	if m.Seq <= s.last {
		return nil
	}
	if m.Seq != s.last+1 {
		return fmt.Errorf("%w: replica at seq %d got seq %d", ErrGap, s.last, m.Seq)
	}
	if s.cfg.Frame != nil && m.Frame == nil {
		m.Frame = s.cfg.Frame(m)
	}
	s.Trim(now)
	s.push(m)
	return nil
}

// Load fills an empty stream with the retained messages of a stream it
// takes over, whose highest seq is last: seq numbering continues from
// there. msgs must be contiguous and end at last (or be empty).
func (s *Stream) Load(last uint64, msgs []Message) error {
	if s.last != 0 || s.n != 0 {
		return fmt.Errorf("%w: load into a non-empty stream", ErrGap)
	}
	if len(msgs) > 0 && msgs[0].Seq == 0 {
		return fmt.Errorf("%w: handed-over tail starts at seq 0", ErrGap)
	}
	if len(msgs) > 0 && msgs[len(msgs)-1].Seq != last {
		return fmt.Errorf("%w: handed-over tail ends at %d, stream at %d", ErrGap, msgs[len(msgs)-1].Seq, last)
	}
	// Check the whole tail before storing any of it, so a refused load
	// leaves the stream empty and can be retried.
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Seq != msgs[i-1].Seq+1 {
			return fmt.Errorf("%w: handed-over tail not contiguous at %d", ErrGap, msgs[i].Seq)
		}
	}
	if len(msgs) > 0 {
		s.last = msgs[0].Seq - 1
	} else {
		s.last = last
	}
	for _, m := range msgs {
		if s.cfg.Frame != nil && m.Frame == nil {
			m.Frame = s.cfg.Frame(m)
		}
		s.push(m)
	}
	return nil
}

// Since returns the retained messages with seq > after, oldest first.
// It fails with ErrGap when some message after `after` is no longer (or
// was never) held here, so a resume can never silently skip messages.
func (s *Stream) Since(after uint64) ([]Message, error) {
	if after > s.last {
		return nil, fmt.Errorf("%w: resume seq %d is ahead of the stream (%d)", ErrGap, after, s.last)
	}
	if after == s.last {
		return nil, nil
	}
	first := s.last - uint64(s.n) + 1 // oldest retained seq
	if s.n == 0 || after+1 < first {
		return nil, fmt.Errorf("%w: messages %d..%d are gone", ErrGap, after+1, first-1)
	}
	out := make([]Message, 0, s.last-after)
	for seq := after + 1; seq <= s.last; seq++ {
		m, _ := s.get(seq)
		out = append(out, m)
	}
	return out, nil
}

// Range returns at most limit retained messages with after < seq <= upto,
// oldest first: what is still kept, whatever was trimmed before it.
func (s *Stream) Range(after, upto uint64, limit int) []Message {
	upto = min(upto, s.last)
	first := s.last - uint64(s.n) + 1
	if s.n == 0 || upto <= after {
		return nil
	}
	from := max(after+1, first)
	var out []Message
	for seq := from; seq <= upto && len(out) < limit; seq++ {
		m, _ := s.get(seq)
		out = append(out, m)
	}
	return out
}

// Trim drops messages older than the window and idempotency ids older
// than the id window, as of now (unix ms).
func (s *Stream) Trim(now int64) {
	for s.n > 0 && now-s.ring[s.head].TS > s.cfg.Window {
		s.ring[s.head] = Message{}
		s.head = (s.head + 1) % len(s.ring)
		s.n--
	}
	for s.idqN > 0 && now-s.idq[s.idqH].ts > s.cfg.IDWindow {
		s.popID()
	}
}

// Newest returns the publish time of the newest retained message, or 0.
func (s *Stream) Newest() int64 {
	if s.n == 0 {
		return 0
	}
	return s.ring[(s.head+s.n-1)%len(s.ring)].TS
}

func (s *Stream) get(seq uint64) (Message, bool) {
	first := s.last - uint64(s.n) + 1
	if s.n == 0 || seq < first || seq > s.last {
		return Message{}, false
	}
	return s.ring[(s.head+int(seq-first))%len(s.ring)], true
}

func (s *Stream) push(m Message) {
	if s.n == len(s.ring) {
		if len(s.ring) < s.cfg.MaxMessages {
			s.grow()
		} else { // full: drop the oldest
			s.ring[s.head] = Message{}
			s.head = (s.head + 1) % len(s.ring)
			s.n--
		}
	}
	s.ring[(s.head+s.n)%len(s.ring)] = m
	s.n++
	s.last = m.Seq
	if m.ID != "" && s.cfg.MaxIDs > 0 {
		s.pushID(idRecord{id: m.ID, seq: m.Seq, ts: m.TS})
	}
}

// grow doubles the ring (bounded by MaxMessages) so a quiet user's stream
// costs little memory.
func (s *Stream) grow() {
	size := max(8, 2*len(s.ring))
	size = min(size, s.cfg.MaxMessages)
	ring := make([]Message, size)
	for i := 0; i < s.n; i++ {
		ring[i] = s.ring[(s.head+i)%len(s.ring)]
	}
	s.ring, s.head = ring, 0
}

func (s *Stream) pushID(r idRecord) {
	if s.ids == nil {
		s.ids = make(map[string]uint64)
	}
	if s.idqN == s.cfg.MaxIDs {
		s.popID()
	}
	if s.idqN == len(s.idq) {
		size := min(max(8, 2*len(s.idq)), s.cfg.MaxIDs)
		q := make([]idRecord, size)
		for i := 0; i < s.idqN; i++ {
			q[i] = s.idq[(s.idqH+i)%len(s.idq)]
		}
		s.idq, s.idqH = q, 0
	}
	s.idq[(s.idqH+s.idqN)%len(s.idq)] = r
	s.idqN++
	s.ids[r.id] = r.seq
}

func (s *Stream) popID() {
	r := s.idq[s.idqH]
	if s.ids[r.id] == r.seq {
		delete(s.ids, r.id)
	}
	s.idq[s.idqH] = idRecord{}
	s.idqH = (s.idqH + 1) % len(s.idq)
	s.idqN--
}

// AppendMessages appends the binary encoding of msgs (without frames) to
// dst: the format peer links use to replicate and hand over streams.
func AppendMessages(dst []byte, msgs []Message) []byte {
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(msgs)))
	for _, m := range msgs {
		dst = binary.AppendUvarint(dst, m.Seq)
		dst = appendString(dst, m.ID)
		dst = binary.AppendVarint(dst, m.TS)
		dst = binary.AppendUvarint(dst, uint64(len(m.Data)))
		dst = append(dst, m.Data...)
	}
	return dst
}

// DecodeMessages decodes AppendMessages output. Data slices alias b.
func DecodeMessages(b []byte) ([]Message, error) {
	r := wire.NewReader(b)
	out, err := ReadMessages(r)
	if err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: messages: %d trailing bytes", ErrBadCommand, r.Len())
	}
	return out, nil
}

// ReadMessages decodes AppendMessages output at r's position and leaves r
// after it, for formats that carry more fields behind the messages. Data
// slices alias the input.
func ReadMessages(r *wire.Reader) ([]Message, error) {
	d := decoder{r}
	if v := d.Byte(); v != codecVersion {
		if d.Err() != nil {
			return nil, fmt.Errorf("%w: messages: %v", ErrBadCommand, d.Err())
		}
		return nil, fmt.Errorf("%w: messages version %d", ErrBadCommand, v)
	}
	n := d.Count(4) // a message takes at least 4 bytes
	out := make([]Message, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		var m Message
		m.Seq = d.Uvarint()
		m.ID = d.String()
		m.TS = d.Varint()
		m.Data = d.Bytes()
		out = append(out, m)
	}
	if d.Err() != nil {
		return nil, fmt.Errorf("%w: messages: %v", ErrBadCommand, d.Err())
	}
	return out, nil
}
