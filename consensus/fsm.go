package consensus

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// StateMachine is the replicated, deterministic state (the session registry
// implements it). Apply is never called concurrently with itself, Snapshot
// or Restore.
type StateMachine interface {
	// Apply applies one command and returns its result; the result encoding
	// is the state machine's business. index is the Raft index of the log
	// entry carrying the command; the commands of one batch share it. cmd
	// aliases the log entry: it must not be modified, and must be copied to
	// be kept.
	Apply(index uint64, cmd []byte) []byte
	// Snapshot takes a point-in-time copy under the FSM lock and returns the
	// function that writes it out; persist runs later, concurrently with Apply.
	Snapshot() (persist func(w io.Writer) error, err error)
	// Restore replaces the whole state with a snapshot written by persist.
	Restore(r io.Reader) error
}

// fsm adapts a StateMachine to raft.BatchingFSM. Each command log entry is
// a batch of commands: [version][uvarint n]([uvarint len][cmd])*n; its
// response is the results in the same framing.
type fsm struct {
	mu  sync.RWMutex // Apply and Restore hold it for writing, Read and Snapshot for reading
	sm  StateMachine
	log *slog.Logger

	// lastApplied is the index of the last command or configuration entry
	// applied. Raft never hands no-op entries to the FSM, so it can trail
	// raft's own applied index; it is always an index every replica's FSM
	// sees, which is what makes it usable as a catch-up target.
	lastApplied atomic.Uint64
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(sm StateMachine, log *slog.Logger) *fsm {
	return &fsm{sm: sm, log: log}
}

// Apply applies one log entry.
func (f *fsm) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyLocked(l)
}

// ApplyBatch applies consecutive committed entries under one lock.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		out[i] = f.applyLocked(l)
	}
	return out
}

func (f *fsm) applyLocked(l *raft.Log) any {
	defer f.lastApplied.Store(l.Index)
	if l.Type != raft.LogCommand {
		return nil
	}
	cmds, err := decodeFrames(l.Data)
	if err != nil {
		// Every replica decodes the same bytes and skips the entry alike,
		// so state stays identical; only a bug or corruption gets here.
		f.log.Error("skipping undecodable log entry", "index", l.Index, "error", err)
		return fmt.Errorf("consensus: log entry %d: %w", l.Index, err)
	}
	results := make([][]byte, len(cmds))
	size := 0
	for i, cmd := range cmds {
		results[i] = f.sm.Apply(l.Index, cmd)
		size += len(results[i])
	}
	e := newFrameEncoder(nil, len(results), size)
	for _, r := range results {
		e.add(r)
	}
	return e.buf
}

// Snapshot captures the state machine under the read lock, which excludes
// Apply; the index recorded is the last entry that state includes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	persist, err := f.sm.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("consensus: snapshot state machine: %w", err)
	}
	return &fsmSnapshot{index: f.lastApplied.Load(), persist: persist}, nil
}

// Restore replaces the state with a snapshot: a header [version][uvarint
// lastApplied] followed by the state machine's own bytes.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReader(rc)
	index, err := readIndexHeader(br)
	if err != nil {
		return fmt.Errorf("consensus: restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.sm.Restore(br); err != nil {
		return fmt.Errorf("consensus: restore state machine: %w", err)
	}
	f.lastApplied.Store(index)
	return nil
}

func readIndexHeader(br *bufio.Reader) (uint64, error) {
	v, err := br.ReadByte()
	if err != nil {
		return 0, fmt.Errorf("%w: snapshot header: %w", ErrMalformed, err)
	}
	if v != frameVersion {
		return 0, fmt.Errorf("%w: snapshot version %d", ErrMalformed, v)
	}
	index, err := binary.ReadUvarint(br)
	if err != nil {
		return 0, fmt.Errorf("%w: snapshot index: %w", ErrMalformed, err)
	}
	return index, nil
}

// read runs fn under the read lock.
func (f *fsm) read(fn func()) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn()
}

type fsmSnapshot struct {
	index   uint64
	persist func(w io.Writer) error
}

// Persist writes the header and the state machine's copy to the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := func() error {
		if _, err := sink.Write(encodeIndex(s.index)); err != nil {
			return err
		}
		return s.persist(sink)
	}()
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("consensus: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release has nothing to free: the copy is garbage-collected.
func (s *fsmSnapshot) Release() {}
