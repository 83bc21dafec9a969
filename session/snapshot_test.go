package session

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

func randomRegistry(t testing.TB, seed int64, steps int) *Registry {
	t.Helper()
	g := newCmdGen(seed, 50, 5)
	for range steps {
		g.next()
	}
	return g.model
}

// bigRegistry holds enough entries that WriteSnapshot flushes its buffer
// several times.
func bigRegistry(t testing.TB) *Registry {
	t.Helper()
	r := NewRegistry()
	long := strings.Repeat("x", 100)
	for i := range 3000 {
		c := Command{Kind: KindClaim, User: fmt.Sprintf("user-%05d-%s", i, long), Node: fmt.Sprintf("n%d", i%7),
			Session: long, Backup: "n9", Attach: i%2 == 0, Now: int64(i)}
		if res := r.Apply(c); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	return r
}

func snapshotBytes(t testing.TB, r *Registry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, r.Snapshot()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func requireSameRegistry(t *testing.T, got, want *Registry) {
	t.Helper()
	g, w := sortedEntries(got.Snapshot().Entries), sortedEntries(want.Snapshot().Entries)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("entries differ: got %d, want %d", len(g), len(w))
	}
	if !reflect.DeepEqual(got.owned, want.owned) {
		t.Fatalf("owned = %v, want %v", got.owned, want.owned)
	}
	checkOwnedConsistent(t, got)
}

func TestSnapshotRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		reg  *Registry
	}{
		{"empty", NewRegistry()},
		{"one", build(t, []Command{{Kind: KindClaim, User: "u", Node: "n1", Session: "s", Backup: "n2", Attach: true, Now: -3}})},
		{"random", randomRegistry(t, 7, 3000)},
		{"large, several buffer flushes", bigRegistry(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := snapshotBytes(t, tt.reg)

			fresh := NewRegistry()
			if err := fresh.Restore(bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			requireSameRegistry(t, fresh, tt.reg)

			// Restore replaces: nothing of the previous content survives.
			used := randomRegistry(t, 99, 500)
			if err := used.Restore(bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			requireSameRegistry(t, used, tt.reg)

			// The restored registry keeps working like the original.
			g := newCmdGen(5, 50, 5)
			for range 300 {
				c := g.next()
				if a, b := tt.reg.Apply(c), used.Apply(c); a != b {
					t.Fatalf("after restore %+v: %+v vs %+v", c, a, b)
				}
			}
		})
	}
}

func TestMachineSnapshotRestore(t *testing.T) {
	m := NewMachine()
	m.Registry = randomRegistry(t, 11, 2000)
	persist, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := sortedEntries(m.Registry.Snapshot().Entries)
	// The snapshot is point-in-time: later commands do not leak into it.
	g := newCmdGen(12, 50, 5)
	for i := range 500 {
		m.Apply(uint64(i), g.next().Encode(nil))
	}
	var buf bytes.Buffer
	if err := persist(&buf); err != nil {
		t.Fatal(err)
	}
	m2 := NewMachine()
	if err := m2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := sortedEntries(m2.Registry.Snapshot().Entries); !reflect.DeepEqual(got, want) {
		t.Fatal("restored machine differs from the snapshot point")
	}
	checkOwnedConsistent(t, m2.Registry)
}

type failingIO struct{ err error }

func (f failingIO) Read([]byte) (int, error)  { return 0, f.err }
func (f failingIO) Write([]byte) (int, error) { return 0, f.err }

func TestRestoreRejects(t *testing.T) {
	valid := snapshotBytes(t, build(t, []Command{claim("a", "n1", "s", 0, 1), claim("b", "n2", "s", 0, 2)}))
	dupe := append([]byte(snapshotMagic), codecVersion, 2)
	dupe = appendEntry(dupe, Entry{User: "a", Owner: "n1", Epoch: 1})
	dupe = appendEntry(dupe, Entry{User: "a", Owner: "n2", Epoch: 2})
	badState := append([]byte(snapshotMagic), codecVersion, 1)
	badState = appendEntry(badState, Entry{User: "a", Owner: "n1", Epoch: 1, State: 7})

	tests := map[string][]byte{
		"empty":           {},
		"garbage":         []byte("definitely not a snapshot"),
		"wrong magic":     append([]byte("SBRXG"), valid[len(snapshotMagic):]...),
		"wrong version":   append([]byte(snapshotMagic+"\x02"), valid[len(snapshotMagic)+1:]...),
		"huge count":      append([]byte(snapshotMagic), codecVersion, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"count too large": append([]byte(snapshotMagic), codecVersion, 3, 1, 'a', 0, 0, 0, 1, 0, 0),
		"bad state":       badState,
		"duplicate user":  dupe,
		"trailing bytes":  append(bytes.Clone(valid), 0),
	}
	for i := range len(valid) {
		tests[fmt.Sprintf("truncated to %d", i)] = valid[:i]
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			r := build(t, []Command{claim("keep", "n1", "s", 0, 1)})
			err := r.Restore(bytes.NewReader(in))
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("Restore = %v, want ErrBadCommand", err)
			}
			if e, ok := r.Get("keep"); !ok || r.Len() != 1 || r.Owned("n1") != 1 {
				t.Fatalf("failed restore changed the registry: %+v %v len %d", e, ok, r.Len())
			}
		})
	}

	t.Run("read error", func(t *testing.T) {
		boom := errors.New("disk on fire")
		r := build(t, []Command{claim("keep", "n1", "s", 0, 1)})
		if err := r.Restore(io.MultiReader(bytes.NewReader(valid), failingIO{boom})); !errors.Is(err, boom) {
			t.Fatalf("Restore = %v, want %v", err, boom)
		}
		if r.Len() != 1 {
			t.Fatal("failed restore changed the registry")
		}
	})
}

func TestWriteSnapshotError(t *testing.T) {
	boom := errors.New("sink closed")
	for _, r := range []*Registry{NewRegistry(), bigRegistry(t)} {
		if err := WriteSnapshot(failingIO{boom}, r.Snapshot()); !errors.Is(err, boom) {
			t.Errorf("%d entries: WriteSnapshot = %v, want %v", r.Len(), err, boom)
		}
	}
}

func TestMachineApplyGarbage(t *testing.T) {
	valid := claim("z", "n3", "s", 0, 5).Encode(nil)
	inputs := map[string][]byte{
		"nil":          nil,
		"garbage":      []byte("\x00\x01\x02 garbage"),
		"unknown kind": {codecVersion, 99, 0, 0},
		"truncated":    valid[:len(valid)-1],
		"trailing":     append(bytes.Clone(valid), 7),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			m := NewMachine()
			m.Registry = randomRegistry(t, 3, 500)
			before := sortedEntries(m.Registry.Snapshot().Entries)
			called := false
			m.OnApply = func(Command, Result) { called = true }
			res, err := DecodeResult(m.Apply(1, in))
			if err != nil {
				t.Fatalf("result does not decode: %v", err)
			}
			if !errors.Is(res.Err, ErrBadCommand) {
				t.Fatalf("result err = %v, want ErrBadCommand", res.Err)
			}
			if called {
				t.Error("OnApply saw a command that did not decode")
			}
			if after := sortedEntries(m.Registry.Snapshot().Entries); !reflect.DeepEqual(before, after) {
				t.Error("garbage changed the registry")
			}
			checkOwnedConsistent(t, m.Registry)
		})
	}
}

func TestMachineOnApplyInOrder(t *testing.T) {
	type seen struct {
		cmd Command
		res Result
	}
	var got []seen
	m := NewMachine()
	m.OnApply = func(c Command, r Result) { got = append(got, seen{c, r}) }
	g := newCmdGen(21, 10, 3)
	var want []Command
	var results []Result
	for i := range 400 {
		c := g.next()
		want = append(want, c)
		res, err := DecodeResult(m.Apply(uint64(i+1), c.Encode(nil)))
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
		if i%10 == 0 { // garbage in the log is skipped, not reported
			m.Apply(uint64(i+1), []byte{0xde, 0xad})
		}
	}
	if len(got) != len(want) {
		t.Fatalf("OnApply called %d times, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(normCmd(got[i].cmd), normCmd(want[i])) {
			t.Fatalf("call %d: command %+v, want %+v", i, got[i].cmd, want[i])
		}
		if got[i].res != results[i] {
			t.Fatalf("call %d: OnApply result %+v, Apply returned %+v", i, got[i].res, results[i])
		}
	}
}

// FuzzRestore feeds the snapshot decoder arbitrary bytes (a snapshot can
// arrive from the leader, InstallSnapshot): it must never panic, a refusal
// must leave the registry as it was, and what it accepts must snapshot
// back to a registry that restores to the same entries.
func FuzzRestore(f *testing.F) {
	r := NewRegistry()
	r.Apply(Command{Kind: KindClaim, User: "alice", Node: "n1", Session: "s1", Backup: "n2", Attach: true, Now: 5})
	r.Apply(Command{Kind: KindClaim, User: "bob", Node: "n2", Session: "s2", Now: 6})
	var good bytes.Buffer
	if err := WriteSnapshot(&good, r.Snapshot()); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte(snapshotMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		reg := NewRegistry()
		reg.Apply(Command{Kind: KindClaim, User: "carol", Node: "n3", Session: "s3", Now: 7})
		before := reg.Len()
		if err := reg.Restore(bytes.NewReader(b)); err != nil {
			if reg.Len() != before {
				t.Fatalf("a refused snapshot changed the registry: %d entries, had %d", reg.Len(), before)
			}
			return
		}
		var again bytes.Buffer
		if err := WriteSnapshot(&again, reg.Snapshot()); err != nil {
			t.Fatal(err)
		}
		other := NewRegistry()
		if err := other.Restore(&again); err != nil || other.Len() != reg.Len() {
			t.Fatalf("accepted snapshot does not survive a round trip: %v (%d vs %d entries)", err, other.Len(), reg.Len())
		}
	})
}
