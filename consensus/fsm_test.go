package consensus

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"
)

func TestFSMAppliesBatchesAndPacksResults(t *testing.T) {
	f := newFSM(newKV(), slog.New(slog.DiscardHandler))
	logs := []*raft.Log{
		{Index: 3, Type: raft.LogCommand, Data: encodeFrames([][]byte{[]byte("set a 1"), []byte("incr n"), []byte("set a 2")})},
		{Index: 4, Type: raft.LogConfiguration},
		{Index: 5, Type: raft.LogCommand, Data: []byte{frameVersion, 9}},
		{Index: 6, Type: raft.LogCommand, Data: encodeFrames([][]byte{[]byte("incr n")})},
	}
	out := f.ApplyBatch(logs)
	tests := []struct {
		i       int
		results []string
		err     error
	}{
		{0, []string{"", "1", "1"}, nil},
		{1, nil, nil},
		{2, nil, ErrMalformed},
		{3, []string{"2"}, nil},
	}
	for _, tt := range tests {
		switch v := out[tt.i].(type) {
		case []byte:
			res, err := decodeFrames(v)
			if err != nil || len(res) != len(tt.results) {
				t.Fatalf("entry %d: results %q, %v", tt.i, res, err)
			}
			for j := range res {
				if string(res[j]) != tt.results[j] {
					t.Fatalf("entry %d result %d = %q, want %q", tt.i, j, res[j], tt.results[j])
				}
			}
		case error:
			if !errors.Is(v, tt.err) {
				t.Fatalf("entry %d: %v, want %v", tt.i, v, tt.err)
			}
		case nil:
			if tt.results != nil || tt.err != nil {
				t.Fatalf("entry %d: nil response", tt.i)
			}
		}
	}
	if got := f.lastApplied.Load(); got != 6 {
		t.Fatalf("lastApplied = %d, want 6", got)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func TestFSMSnapshotRestoreKeepsStateAndIndex(t *testing.T) {
	src := newFSM(newKV(), slog.New(slog.DiscardHandler))
	src.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: encodeFrames([][]byte{[]byte("set k v")})})
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply after the snapshot was taken must not leak into it.
	src.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: encodeFrames([][]byte{[]byte("set k later")})})
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v (closed %v)", err, sink.closed)
	}

	kv := newKV()
	dst := newFSM(kv, slog.New(slog.DiscardHandler))
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if kv.data["k"] != "v" || dst.lastApplied.Load() != 7 {
		t.Fatalf("restored k=%q lastApplied=%d, want v and 7", kv.data["k"], dst.lastApplied.Load())
	}
	if err := dst.Restore(io.NopCloser(bytes.NewReader([]byte{42}))); !errors.Is(err, ErrMalformed) {
		t.Fatalf("restore of a bad header: %v", err)
	}
}

type failingSM struct{ kvSM }

func (*failingSM) Snapshot() (func(io.Writer) error, error) {
	return func(io.Writer) error { return io.ErrShortWrite }, nil
}

func TestFSMSnapshotPersistFailureCancelsSink(t *testing.T) {
	f := newFSM(&failingSM{}, slog.New(slog.DiscardHandler))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); !errors.Is(err, io.ErrShortWrite) || !sink.cancelled || sink.closed {
		t.Fatalf("persist: %v, cancelled %v closed %v", err, sink.cancelled, sink.closed)
	}
}
