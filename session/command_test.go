package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// normCmd makes an empty Nodes list nil: the encoding omits empty fields,
// so nil and empty are the same command.
func normCmd(c Command) Command {
	if len(c.Nodes) == 0 {
		c.Nodes = nil
	}
	return c
}

func allKinds() []Kind {
	return []Kind{KindClaim, KindAttach, KindDetach, KindSetBackup, KindNodeFailed, KindExpire}
}

// commandWithFields sets the fields selected by mask (bit i = field i of
// the list below) to non-zero values.
func commandWithFields(k Kind, mask int) Command {
	c := Command{Kind: k}
	set := []func(){
		func() { c.User = "user-1" },
		func() { c.Node = "node-1" },
		func() { c.Session = "sess-1" },
		func() { c.Backup = "node-2" },
		func() { c.Epoch = 42 },
		func() { c.Attach = true },
		func() { c.Now = 1_700_000_000_000 },
		func() { c.Window = 120_000 },
		func() { c.Nodes = []string{"node-3", "node-4"} },
	}
	for i, f := range set {
		if mask&(1<<i) != 0 {
			f()
		}
	}
	return c
}

const allFieldsMask = 1<<9 - 1

func TestCommandRoundTripAllFieldCombinations(t *testing.T) {
	for _, k := range allKinds() {
		for mask := 0; mask <= allFieldsMask; mask++ {
			c := commandWithFields(k, mask)
			b := c.Encode(nil)
			got, err := DecodeCommand(b)
			if err != nil {
				t.Fatalf("%v mask %#x: %v", k, mask, err)
			}
			if !reflect.DeepEqual(normCmd(got), normCmd(c)) {
				t.Fatalf("%v mask %#x:\n got %+v\nwant %+v", k, mask, got, c)
			}
		}
	}
}

func TestCommandRoundTripValues(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
	}{
		{"zero claim", Command{Kind: KindClaim}},
		{"negative now and window", Command{Kind: KindExpire, Now: -1, Window: math.MinInt64}},
		{"extreme numbers", Command{Kind: KindClaim, Epoch: math.MaxUint64, Now: math.MaxInt64, Window: math.MaxInt64}},
		{"unicode and binary strings", Command{Kind: KindClaim, User: "ユーザー\x00\xff", Node: "ñ", Session: strings.Repeat("s", 300), Backup: "\n"}},
		{"empty node names in a sweep", Command{Kind: KindExpire, Nodes: []string{"", "n1", ""}}},
		{"many nodes", Command{Kind: KindExpire, Nodes: strings.Split(strings.Repeat("node,", 200), ",")}},
		{"empty nodes list", Command{Kind: KindExpire, Nodes: []string{}}},
		{"full claim", Command{Kind: KindClaim, User: "u", Node: "n1", Session: "s", Backup: "n2", Epoch: 7, Attach: true, Now: 12345}},
		{"node failed", Command{Kind: KindNodeFailed, Node: "n3", Now: 99}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			b := tt.cmd.Encode(prefix)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("Encode clobbered dst")
			}
			got, err := DecodeCommand(b[len(prefix):])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normCmd(got), normCmd(tt.cmd)) {
				t.Fatalf("got %+v\nwant %+v", got, tt.cmd)
			}
		})
	}
}

// nodesHeader is an expire command header with only the Nodes flag set and
// Now = 0, ready for a node count.
func nodesHeader() []byte {
	b := []byte{codecVersion, byte(KindExpire)}
	b = binary.AppendUvarint(b, fNodes)
	return append(b, 0)
}

func TestDecodeCommandRejects(t *testing.T) {
	valid := commandWithFields(KindClaim, allFieldsMask).Encode(nil)
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"version 0", append([]byte{0}, valid[1:]...)},
		{"version 2", append([]byte{2}, valid[1:]...)},
		{"kind 0", append([]byte{codecVersion, 0}, valid[2:]...)},
		{"kind past the last", append([]byte{codecVersion, byte(KindExpire + 1)}, valid[2:]...)},
		{"kind 255", append([]byte{codecVersion, 255}, valid[2:]...)},
		{"trailing byte", append(bytes.Clone(valid), 0)},
		{"string longer than input", []byte{codecVersion, byte(KindClaim), fUser, 0, 10, 'a'}},
		{"huge string length", []byte{codecVersion, byte(KindClaim), fUser, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"huge node count", append(nodesHeader(), 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"node count beyond input", append(nodesHeader(), 3, 0, 0)},
		{"unterminated flags", []byte{codecVersion, byte(KindExpire), fNodes}},
		{"overlong uvarint", []byte{codecVersion, byte(KindClaim), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0}},
		{"garbage", []byte("GET / HTTP/1.1\r\n")},
	}
	for i := range len(valid) {
		tests = append(tests, struct {
			name string
			in   []byte
		}{fmt.Sprintf("truncated to %d", i), valid[:i]})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeCommand(tt.in)
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeCommand = %+v, %v; want ErrBadCommand", c, err)
			}
		})
	}
}

func TestResultRoundTrip(t *testing.T) {
	entry := Entry{User: "u", Session: "s", Owner: "n1", Backup: "n2", Epoch: 9, State: Attached, Since: 1234}
	tests := []struct {
		name string
		res  Result
	}{
		{"ok with entry", Result{Entry: entry}},
		{"zero", Result{}},
		{"count", Result{Count: 12345}},
		{"negative since and max epoch", Result{Entry: Entry{User: "x", Epoch: math.MaxUint64, Since: -5}}},
		{"stale epoch", Result{Entry: entry, Err: ErrStaleEpoch}},
		{"not owner", Result{Entry: entry, Err: ErrNotOwner}},
		{"not found", Result{Err: ErrNotFound}},
		{"bad command", Result{Err: ErrBadCommand}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeResult(tt.res.Encode(nil))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.res { // sentinels must come back as the same value
				t.Fatalf("got %+v\nwant %+v", got, tt.res)
			}
		})
	}
}

// TestResultUnknownError: errors outside the registry's set cannot travel;
// they must not come back as success.
func TestResultUnknownError(t *testing.T) {
	for _, e := range []error{ErrGap, ErrSessionExpired, errors.New("other"), fmt.Errorf("wrapped: %w", ErrStaleEpoch)} {
		got, err := DecodeResult(Result{Err: e, Count: 1}.Encode(nil))
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(got.Err, ErrBadCommand) || got.Count != 1 {
			t.Errorf("%v came back as %+v", e, got)
		}
	}
}

func TestDecodeResultRejects(t *testing.T) {
	valid := Result{Entry: Entry{User: "u", Session: "s", Owner: "n", Backup: "b", Epoch: 300, State: Attached, Since: 1 << 40}, Count: 300}.Encode(nil)
	badState := Result{Entry: Entry{User: "u"}}.Encode(nil)
	badState[len(badState)-2] = 2 // the state byte precedes the one-byte since
	tests := map[string][]byte{
		"nil":           nil,
		"version 0":     append([]byte{0}, valid[1:]...),
		"version 9":     append([]byte{9}, valid[1:]...),
		"bad state":     badState,
		"trailing byte": append(bytes.Clone(valid), 1),
	}
	for i := range len(valid) {
		tests[fmt.Sprintf("truncated to %d", i)] = valid[:i]
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if r, err := DecodeResult(in); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeResult = %+v, %v; want ErrBadCommand", r, err)
			}
		})
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, k := range allKinds() {
		f.Add(commandWithFields(k, allFieldsMask).Encode(nil))
		f.Add(commandWithFields(k, 0).Encode(nil))
		f.Add(commandWithFields(k, 0b100010011).Encode(nil))
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add(append(nodesHeader(), 0))
	f.Add(append(nodesHeader(), 2, 0, 1, 'x'))
	f.Add([]byte{codecVersion, byte(KindClaim), 0xff, 0xff, 0x03, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		b2 := c.Encode(nil)
		c2, err := DecodeCommand(b2)
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", c, err)
		}
		if !reflect.DeepEqual(normCmd(c), normCmd(c2)) {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
		}
		if b3 := c2.Encode(nil); !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not stable: %x vs %x", b2, b3)
		}
		// Whatever decodes must also apply without panicking.
		r := NewRegistry()
		r.Apply(Command{Kind: KindClaim, User: c.User, Node: c.Node, Session: c.Session, Now: c.Now})
		r.Apply(c)
		checkOwnedConsistent(t, r)
	})
}

func FuzzDecodeResult(f *testing.F) {
	f.Add(Result{Entry: Entry{User: "u", Owner: "n", Epoch: 3, State: Attached}, Err: ErrNotOwner}.Encode(nil))
	f.Add(Result{Count: 5}.Encode(nil))
	f.Add([]byte{codecVersion, 200, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResult(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		r2, err := DecodeResult(r.Encode(nil))
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", r, err)
		}
		if r.Entry != r2.Entry || r.Count != r2.Count || (r.Err == nil) != (r2.Err == nil) ||
			errors.Is(r.Err, ErrBadCommand) != errors.Is(r2.Err, ErrBadCommand) {
			t.Fatalf("round trip changed the result:\n%+v\n%+v", r, r2)
		}
	})
}

// BenchmarkRegistryApply measures claims over 100k users: the first pass
// creates entries, later passes are CAS takeovers moving them between nodes.
func BenchmarkRegistryApply(b *testing.B) {
	const users = 100_000
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("user-%06d", i)
	}
	nodes := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"}
	r := NewRegistry()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round := i / users
		u := i % users
		res := r.Apply(Command{
			Kind: KindClaim, User: names[u], Node: nodes[(u+round)%len(nodes)],
			Session: "s", Epoch: uint64(round), Attach: true, Now: int64(i),
		})
		if res.Err != nil {
			b.Fatalf("claim %d: %v", i, res.Err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

func BenchmarkCommandEncodeDecode(b *testing.B) {
	c := Command{Kind: KindClaim, User: "user-000123", Node: "node-a1", Session: "0123456789abcdef", Backup: "node-b2", Epoch: 17, Attach: true, Now: 1_700_000_000_000}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = c.Encode(buf[:0])
		if _, err := DecodeCommand(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "bytes/cmd")
}
