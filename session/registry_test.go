package session

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testNodes is every node name the registry tests use; Owned is checked
// for all of them so a count left behind on an old owner is caught.
var testNodes = []string{"n1", "n2", "n3", "n4", "n9"}

func claim(user, node, sess string, epoch uint64, now int64) Command {
	return Command{Kind: KindClaim, User: user, Node: node, Session: sess, Epoch: epoch, Now: now}
}

// build returns a registry with setup applied, failing the test if any
// setup command is refused: setups describe valid histories.
func build(t testing.TB, setup []Command) *Registry {
	t.Helper()
	r := NewRegistry()
	for i, c := range setup {
		if res := r.Apply(c); res.Err != nil {
			t.Fatalf("setup[%d] %v %+v: %v", i, c.Kind, c, res.Err)
		}
	}
	return r
}

// checkResult compares a result against the expectation, matching errors
// with errors.Is.
func checkResult(t *testing.T, got, want Result) {
	t.Helper()
	if !errors.Is(got.Err, want.Err) || (want.Err == nil) != (got.Err == nil) {
		t.Errorf("err = %v, want %v", got.Err, want.Err)
	}
	if got.Entry != want.Entry {
		t.Errorf("entry = %+v\nwant    %+v", got.Entry, want.Entry)
	}
	if got.Count != want.Count {
		t.Errorf("count = %d, want %d", got.Count, want.Count)
	}
}

func checkOwned(t *testing.T, r *Registry, want map[string]int) {
	t.Helper()
	for _, n := range testNodes {
		if got := r.Owned(n); got != want[n] {
			t.Errorf("Owned(%s) = %d, want %d", n, got, want[n])
		}
	}
	checkOwnedConsistent(t, r)
}

// checkOwnedConsistent checks the owned and backed counters against a
// recount from Each, for every node that appears, that owned sums to Len,
// and what Named and Ownerless derive from them.
func checkOwnedConsistent(t testing.TB, r *Registry) {
	t.Helper()
	count := map[string]int{}
	backups := map[string]int{}
	named := map[string]bool{}
	orphans := 0 // entries whose owner failed count for no node
	r.Each(func(e Entry) bool {
		if e.Owner == "" {
			orphans++
		} else {
			count[e.Owner]++
			named[e.Owner] = true
		}
		if e.Backup != "" {
			backups[e.Backup]++
			named[e.Backup] = true
		}
		return true
	})
	if !maps.Equal(backups, r.backed) {
		t.Fatalf("backed = %v, Each counts %v", r.backed, backups)
	}
	want := slices.Sorted(maps.Keys(named))
	if got := r.Named(); !slices.Equal(got, want) {
		t.Fatalf("Named() = %v, Each names %v", got, want)
	}
	if got := r.Ownerless(); got != orphans {
		t.Fatalf("Ownerless() = %d, Each counts %d", got, orphans)
	}
	total := orphans
	for n, c := range count {
		if got := r.Owned(n); got != c {
			t.Fatalf("Owned(%q) = %d, Each counts %d", n, got, c)
		}
		total += c
	}
	for n, c := range r.owned {
		if count[n] != c {
			t.Fatalf("owned[%q] = %d left behind, Each counts %d", n, c, count[n])
		}
	}
	if total != r.Len() {
		t.Fatalf("owned sums to %d, Len = %d", total, r.Len())
	}
}

func TestClaim(t *testing.T) {
	first := claim("u", "n1", "s1", 0, 100)
	tests := []struct {
		name  string
		setup []Command
		cmd   Command
		want  Result
		owned map[string]int
	}{
		{
			name:  "absent entry with epoch 0 gets epoch 1",
			cmd:   first,
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, State: Detached, Since: 100}},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "absent entry with a live connection is attached",
			cmd:   Command{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Attach: true, Now: 7},
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, State: Attached, Since: 7}},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "absent entry with nonzero epoch is stale",
			cmd:   claim("u", "n1", "s1", 3, 100),
			want:  Result{Err: ErrStaleEpoch},
			owned: map[string]int{},
		},
		{
			name:  "takeover with the current epoch moves ownership",
			setup: []Command{first},
			cmd:   Command{Kind: KindClaim, User: "u", Node: "n2", Session: "s1", Epoch: 1, Attach: true, Now: 200},
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n2", Epoch: 2, State: Attached, Since: 200}},
			owned: map[string]int{"n2": 1},
		},
		{
			name:  "takeover with a new session id",
			setup: []Command{first},
			cmd:   claim("u", "n2", "s2", 1, 200),
			want:  Result{Entry: Entry{User: "u", Session: "s2", Owner: "n2", Epoch: 2, Since: 200}},
			owned: map[string]int{"n2": 1},
		},
		{
			name:  "stale epoch returns the current entry",
			setup: []Command{first, claim("u", "n2", "s1", 1, 200)},
			cmd:   claim("u", "n3", "s1", 1, 300),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n2", Epoch: 2, Since: 200}, Err: ErrStaleEpoch},
			owned: map[string]int{"n2": 1},
		},
		{
			name:  "epoch from the future is stale",
			setup: []Command{first},
			cmd:   claim("u", "n2", "s1", 5, 300),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, Since: 100}, Err: ErrStaleEpoch},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "retry of a claim that took effect succeeds unchanged",
			setup: []Command{first},
			cmd:   claim("u", "n1", "s1", 0, 999),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, Since: 100}},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "retry of a takeover that took effect succeeds unchanged",
			setup: []Command{first, claim("u", "n2", "s1", 1, 200)},
			cmd:   claim("u", "n2", "s1", 1, 999),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n2", Epoch: 2, Since: 200}},
			owned: map[string]int{"n2": 1},
		},
		{
			name:  "retry with another session is stale",
			setup: []Command{first},
			cmd:   claim("u", "n1", "s2", 0, 999),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, Since: 100}, Err: ErrStaleEpoch},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "same expected epoch from another node is stale",
			setup: []Command{first},
			cmd:   claim("u", "n2", "s1", 0, 999),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, Since: 100}, Err: ErrStaleEpoch},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "retry two epochs late is stale",
			setup: []Command{first, claim("u", "n2", "s1", 1, 200), claim("u", "n1", "s1", 2, 300)},
			cmd:   claim("u", "n1", "s1", 1, 999),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 3, Since: 300}, Err: ErrStaleEpoch},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "claim records the backup",
			cmd:   Command{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n2", Now: 1},
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Backup: "n2", Epoch: 1, Since: 1}},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "claimant is never its own backup",
			cmd:   Command{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n1", Now: 1},
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Epoch: 1, Since: 1}},
			owned: map[string]int{"n1": 1},
		},
		{
			name:  "backup taking over stops being the backup",
			setup: []Command{{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n2", Now: 1}},
			cmd:   claim("u", "n2", "s1", 1, 2),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n2", Epoch: 2, Since: 2}},
			owned: map[string]int{"n2": 1},
		},
		{
			name:  "takeover without a backup keeps the old one",
			setup: []Command{{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n2", Now: 1}},
			cmd:   claim("u", "n3", "s1", 1, 2),
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n3", Backup: "n2", Epoch: 2, Since: 2}},
			owned: map[string]int{"n3": 1},
		},
		{
			name:  "takeover with a backup replaces the old one",
			setup: []Command{{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n2", Now: 1}},
			cmd:   Command{Kind: KindClaim, User: "u", Node: "n3", Session: "s1", Backup: "n4", Epoch: 1, Now: 2},
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n3", Backup: "n4", Epoch: 2, Since: 2}},
			owned: map[string]int{"n3": 1},
		},
		{
			name:  "stale claim leaves the backup alone",
			setup: []Command{{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n2", Now: 1}},
			cmd:   Command{Kind: KindClaim, User: "u", Node: "n3", Session: "s1", Backup: "n4", Epoch: 0, Now: 2},
			want:  Result{Entry: Entry{User: "u", Session: "s1", Owner: "n1", Backup: "n2", Epoch: 1, Since: 1}, Err: ErrStaleEpoch},
			owned: map[string]int{"n1": 1},
		},
		{
			name: "owned counts move between nodes across users",
			setup: []Command{
				claim("a", "n1", "s", 0, 1), claim("b", "n1", "s", 0, 1), claim("c", "n2", "s", 0, 1),
			},
			cmd:   claim("b", "n2", "s", 1, 2),
			want:  Result{Entry: Entry{User: "b", Session: "s", Owner: "n2", Epoch: 2, Since: 2}},
			owned: map[string]int{"n1": 1, "n2": 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, tt.setup)
			got := r.Apply(tt.cmd)
			checkResult(t, got, tt.want)
			if tt.want.Entry.User != "" {
				if e, ok := r.Get(tt.want.Entry.User); !ok || e != tt.want.Entry {
					t.Errorf("Get = %+v, %v; want %+v", e, ok, tt.want.Entry)
				}
			} else if _, ok := r.Get(tt.cmd.User); ok {
				t.Errorf("refused claim created entry for %q", tt.cmd.User)
			}
			checkOwned(t, r, tt.owned)
		})
	}
}

// TestOwnerCommands covers attach, detach and set-backup: each is
// accepted only from the owner at the current epoch.
func TestOwnerCommands(t *testing.T) {
	setup := []Command{{Kind: KindClaim, User: "u", Node: "n1", Session: "s1", Backup: "n2", Now: 100}}
	base := Entry{User: "u", Session: "s1", Owner: "n1", Backup: "n2", Epoch: 1, State: Detached, Since: 100}
	with := func(f func(*Entry)) Entry {
		e := base
		f(&e)
		return e
	}
	attached := with(func(e *Entry) { e.State, e.Since = Attached, 200 })
	tests := []struct {
		name  string
		setup []Command
		cmd   Command
		want  Result
	}{
		{"attach", nil,
			Command{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 200},
			Result{Entry: attached}},
		{"attach twice keeps the first since", []Command{{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 200}},
			Command{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 300},
			Result{Entry: attached}},
		{"attach by another node", nil,
			Command{Kind: KindAttach, User: "u", Node: "n2", Epoch: 1, Now: 200},
			Result{Entry: base, Err: ErrNotOwner}},
		{"attach with an old epoch", nil,
			Command{Kind: KindAttach, User: "u", Node: "n1", Epoch: 0, Now: 200},
			Result{Entry: base, Err: ErrStaleEpoch}},
		{"attach with a future epoch", nil,
			Command{Kind: KindAttach, User: "u", Node: "n1", Epoch: 2, Now: 200},
			Result{Entry: base, Err: ErrStaleEpoch}},
		{"attach unknown user", nil,
			Command{Kind: KindAttach, User: "x", Node: "n1", Epoch: 1, Now: 200},
			Result{Err: ErrNotFound}},
		{"attach by the old owner after a takeover", []Command{claim("u", "n3", "s1", 1, 150)},
			Command{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 200},
			Result{Entry: Entry{User: "u", Session: "s1", Owner: "n3", Backup: "n2", Epoch: 2, Since: 150}, Err: ErrStaleEpoch}},
		{"detach", []Command{{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 200}},
			Command{Kind: KindDetach, User: "u", Node: "n1", Epoch: 1, Now: 300},
			Result{Entry: with(func(e *Entry) { e.Since = 300 })}},
		{"detach when detached keeps since", nil,
			Command{Kind: KindDetach, User: "u", Node: "n1", Epoch: 1, Now: 300},
			Result{Entry: base}},
		{"detach by another node", []Command{{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 200}},
			Command{Kind: KindDetach, User: "u", Node: "n3", Epoch: 1, Now: 300},
			Result{Entry: attached, Err: ErrNotOwner}},
		{"detach with an old epoch", []Command{{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 200}},
			Command{Kind: KindDetach, User: "u", Node: "n1", Epoch: 0, Now: 300},
			Result{Entry: attached, Err: ErrStaleEpoch}},
		{"detach unknown user", nil,
			Command{Kind: KindDetach, User: "x", Node: "n1", Epoch: 1, Now: 300},
			Result{Err: ErrNotFound}},
		// Moving the replica bumps the epoch: a claimant with the old view
		// must fail its compare-and-set.
		{"set backup", nil,
			Command{Kind: KindSetBackup, User: "u", Node: "n1", Backup: "n3", Epoch: 1},
			Result{Entry: with(func(e *Entry) { e.Backup, e.Epoch = "n3", 2 })}},
		{"clear backup", nil,
			Command{Kind: KindSetBackup, User: "u", Node: "n1", Epoch: 1},
			Result{Entry: with(func(e *Entry) { e.Backup, e.Epoch = "", 2 })}},
		{"same backup again changes nothing", nil,
			Command{Kind: KindSetBackup, User: "u", Node: "n1", Backup: "n2", Epoch: 1},
			Result{Entry: base}},
		{"owner as its own backup is ignored", nil,
			Command{Kind: KindSetBackup, User: "u", Node: "n1", Backup: "n1", Epoch: 1},
			Result{Entry: base}},
		{"set backup by another node", nil,
			Command{Kind: KindSetBackup, User: "u", Node: "n2", Backup: "n3", Epoch: 1},
			Result{Entry: base, Err: ErrNotOwner}},
		{"set backup with an old epoch", nil,
			Command{Kind: KindSetBackup, User: "u", Node: "n1", Backup: "n3", Epoch: 0},
			Result{Entry: base, Err: ErrStaleEpoch}},
		{"set backup unknown user", nil,
			Command{Kind: KindSetBackup, User: "x", Node: "n1", Backup: "n3", Epoch: 1},
			Result{Err: ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, append(slices.Clone(setup), tt.setup...))
			before := r.Snapshot().Entries
			got := r.Apply(tt.cmd)
			checkResult(t, got, tt.want)
			if tt.want.Err != nil {
				if after := r.Snapshot().Entries; !reflect.DeepEqual(sortedEntries(before), sortedEntries(after)) {
					t.Errorf("refused command changed state:\n%+v\n%+v", before, after)
				}
				return
			}
			if e, _ := r.Get("u"); e != tt.want.Entry {
				t.Errorf("Get = %+v, want %+v", e, tt.want.Entry)
			}
			checkOwned(t, r, map[string]int{tt.want.Entry.Owner: 1})
		})
	}
}

func TestNodeFailed(t *testing.T) {
	setup := []Command{
		{Kind: KindClaim, User: "u1", Node: "n1", Session: "s", Backup: "n2", Attach: true, Now: 10},
		{Kind: KindClaim, User: "u2", Node: "n1", Session: "s", Backup: "n3", Now: 10},
		{Kind: KindClaim, User: "u3", Node: "n2", Session: "s", Backup: "n1", Attach: true, Now: 10},
		{Kind: KindClaim, User: "u4", Node: "n3", Session: "s", Backup: "n2", Attach: true, Now: 10},
	}
	e := func(user, owner, backup string, st State, since int64) Entry {
		return Entry{User: user, Session: "s", Owner: owner, Backup: backup, Epoch: 1, State: st, Since: since}
	}
	// A failed owner is cleared and the epoch bumped: the fencing token
	// moves with ownership, and the backup is where the stream survives.
	orphan := func(user, backup string, st State, since int64) Entry {
		x := e(user, "", backup, st, since)
		x.Epoch = 2
		return x
	}
	tests := []struct {
		node  string
		count int
		want  []Entry
		owned map[string]int
	}{
		{"n1", 3, []Entry{
			orphan("u1", "n2", Detached, 500), // its connection is gone
			orphan("u2", "n3", Detached, 10),  // already detached
			e("u3", "n2", "", Attached, 10),   // n1 was its backup
			e("u4", "n3", "n2", Attached, 10),
		}, map[string]int{"n2": 1, "n3": 1}},
		{"n2", 3, []Entry{
			e("u1", "n1", "", Attached, 10),
			e("u2", "n1", "n3", Detached, 10),
			orphan("u3", "n1", Detached, 500),
			e("u4", "n3", "", Attached, 10),
		}, map[string]int{"n1": 2, "n3": 1}},
		{"n3", 2, []Entry{
			e("u1", "n1", "n2", Attached, 10),
			e("u2", "n1", "", Detached, 10),
			e("u3", "n2", "n1", Attached, 10),
			orphan("u4", "n2", Detached, 500),
		}, map[string]int{"n1": 2, "n2": 1}},
		{"n9", 0, []Entry{
			e("u1", "n1", "n2", Attached, 10),
			e("u2", "n1", "n3", Detached, 10),
			e("u3", "n2", "n1", Attached, 10),
			e("u4", "n3", "n2", Attached, 10),
		}, map[string]int{"n1": 2, "n2": 1, "n3": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			r := build(t, setup)
			got := r.Apply(Command{Kind: KindNodeFailed, Node: tt.node, Now: 500})
			checkResult(t, got, Result{Count: tt.count})
			if s := sortedEntries(r.Snapshot().Entries); !reflect.DeepEqual(s, tt.want) {
				t.Errorf("entries:\n%+v\nwant\n%+v", s, tt.want)
			}
			checkOwned(t, r, tt.owned)
			// Applying it again changes nothing more.
			if again := r.Apply(Command{Kind: KindNodeFailed, Node: tt.node, Now: 600}); again.Count != 0 {
				t.Errorf("second node-failed count = %d, want 0", again.Count)
			}
		})
	}
}

func TestExpireByOwner(t *testing.T) {
	const window = 1000
	setup := []Command{claim("u", "n1", "s", 0, 1000), claim("v", "n1", "s", 0, 1000)}
	cur := Entry{User: "u", Session: "s", Owner: "n1", Epoch: 1, State: Detached, Since: 1000}
	exp := func(node string, epoch uint64, now int64) Command {
		return Command{Kind: KindExpire, User: "u", Node: node, Epoch: epoch, Now: now, Window: window}
	}
	tests := []struct {
		name    string
		setup   []Command
		cmd     Command
		want    Result
		removed bool
	}{
		{"detached past the window", nil, exp("n1", 1, 1000+window+1), Result{Count: 1}, true},
		{"detached exactly the window", nil, exp("n1", 1, 1000+window), Result{Entry: cur}, false},
		{"detached within the window", nil, exp("n1", 1, 1500), Result{Entry: cur}, false},
		{"attached past the window",
			[]Command{{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 1000}},
			exp("n1", 1, 1000+10*window),
			Result{Entry: Entry{User: "u", Session: "s", Owner: "n1", Epoch: 1, State: Attached, Since: 1000}}, false},
		{"detach restarts the window",
			[]Command{
				{Kind: KindAttach, User: "u", Node: "n1", Epoch: 1, Now: 1100},
				{Kind: KindDetach, User: "u", Node: "n1", Epoch: 1, Now: 1900},
			},
			exp("n1", 1, 1000+window+1),
			Result{Entry: Entry{User: "u", Session: "s", Owner: "n1", Epoch: 1, State: Detached, Since: 1900}}, false},
		{"by another node", nil, exp("n2", 1, 1000+window+1), Result{Entry: cur, Err: ErrNotOwner}, false},
		{"with an old epoch", nil, exp("n1", 0, 1000+window+1), Result{Entry: cur, Err: ErrStaleEpoch}, false},
		{"unknown user", nil,
			Command{Kind: KindExpire, User: "x", Node: "n1", Epoch: 1, Now: 1000 + window + 1, Window: window},
			Result{Err: ErrNotFound}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, append(slices.Clone(setup), tt.setup...))
			checkResult(t, r.Apply(tt.cmd), tt.want)
			_, ok := r.Get("u")
			if ok == tt.removed {
				t.Errorf("entry present = %v, want %v", ok, !tt.removed)
			}
			if _, ok := r.Get("v"); !ok {
				t.Error("expire of u removed v")
			}
			want := 2
			if tt.removed {
				want = 1
			}
			checkOwned(t, r, map[string]int{"n1": want})
		})
	}
}

func TestExpireSweep(t *testing.T) {
	setup := []Command{
		claim("u1", "n1", "s", 0, 1000),
		{Kind: KindClaim, User: "u2", Node: "n1", Session: "s", Attach: true, Now: 0},
		claim("u3", "n2", "s", 0, 1000),
		claim("u4", "n3", "s", 0, 1000),
		claim("u5", "n1", "s", 0, 5000),
	}
	tests := []struct {
		name   string
		nodes  []string
		now    int64
		window int64
		count  int
		left   []string
		owned  map[string]int
	}{
		{"dead nodes past the window", []string{"n1", "n2"}, 3000, 1000, 2,
			[]string{"u2", "u4", "u5"}, map[string]int{"n1": 2, "n3": 1}},
		{"exactly the window is kept", []string{"n1", "n2"}, 2000, 1000, 0,
			[]string{"u1", "u2", "u3", "u4", "u5"}, map[string]int{"n1": 3, "n2": 1, "n3": 1}},
		{"later detach is kept", []string{"n1"}, 5500, 1000, 1,
			[]string{"u2", "u3", "u4", "u5"}, map[string]int{"n1": 2, "n2": 1, "n3": 1}},
		{"everything detached on all nodes", []string{"n1", "n2", "n3"}, 10000, 1000, 4,
			[]string{"u2"}, map[string]int{"n1": 1}},
		{"no dead nodes", nil, 10000, 1000, 0,
			[]string{"u1", "u2", "u3", "u4", "u5"}, map[string]int{"n1": 3, "n2": 1, "n3": 1}},
		{"unknown node", []string{"n9"}, 10000, 1000, 0,
			[]string{"u1", "u2", "u3", "u4", "u5"}, map[string]int{"n1": 3, "n2": 1, "n3": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, setup)
			got := r.Apply(Command{Kind: KindExpire, Nodes: tt.nodes, Now: tt.now, Window: tt.window})
			checkResult(t, got, Result{Count: tt.count})
			var left []string
			r.Each(func(e Entry) bool {
				left = append(left, e.User)
				return true
			})
			if !slices.Equal(left, tt.left) {
				t.Errorf("left %v, want %v", left, tt.left)
			}
			checkOwned(t, r, tt.owned)
		})
	}
}

func TestApplyUnknownKind(t *testing.T) {
	for _, k := range []Kind{0, KindExpire + 1, 255} {
		r := build(t, []Command{claim("u", "n1", "s", 0, 1)})
		got := r.Apply(Command{Kind: k, User: "u", Node: "n1", Epoch: 1})
		if !errors.Is(got.Err, ErrBadCommand) {
			t.Errorf("kind %v: err = %v, want ErrBadCommand", k, got.Err)
		}
		if e, _ := r.Get("u"); e.Epoch != 1 || r.Len() != 1 {
			t.Errorf("kind %v changed state: %+v", k, e)
		}
	}
}

func TestEachOrderAndStop(t *testing.T) {
	r := build(t, []Command{claim("c", "n1", "s", 0, 1), claim("a", "n1", "s", 0, 1), claim("b", "n2", "s", 0, 1)})
	var all []string
	r.Each(func(e Entry) bool { all = append(all, e.User); return true })
	if !slices.Equal(all, []string{"a", "b", "c"}) {
		t.Errorf("Each order = %v", all)
	}
	var some []string
	r.Each(func(e Entry) bool { some = append(some, e.User); return len(some) < 2 })
	if !slices.Equal(some, []string{"a", "b"}) {
		t.Errorf("Each after stop = %v", some)
	}
}

func TestStateAndKindStrings(t *testing.T) {
	tests := []struct{ got, want string }{
		{Attached.String(), "attached"},
		{Detached.String(), "detached"},
		{KindClaim.String(), "claim"},
		{KindAttach.String(), "attach"},
		{KindDetach.String(), "detach"},
		{KindSetBackup.String(), "set-backup"},
		{KindNodeFailed.String(), "node-failed"},
		{KindExpire.String(), "expire"},
		{Kind(42).String(), "kind(42)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
}

// cmdGen produces random but mostly meaningful command sequences: it
// tracks a registry so most commands carry the current epoch and owner and
// therefore succeed, while the rest exercise the refusal paths.
type cmdGen struct {
	rng   *rand.Rand
	model *Registry
	now   int64
	users []string
	nodes []string
}

func newCmdGen(seed int64, users, nodes int) *cmdGen {
	g := &cmdGen{rng: rand.New(rand.NewSource(seed)), model: NewRegistry(), now: 1_000}
	for i := range users {
		g.users = append(g.users, fmt.Sprintf("u%02d", i))
	}
	for i := range nodes {
		g.nodes = append(g.nodes, fmt.Sprintf("n%d", i+1))
	}
	return g
}

func (g *cmdGen) pick(s []string) string { return s[g.rng.Intn(len(s))] }

func (g *cmdGen) next() Command {
	g.now += int64(g.rng.Intn(500))
	user := g.pick(g.users)
	e, ok := g.model.Get(user)
	epoch := e.Epoch
	node := g.pick(g.nodes)
	if ok && g.rng.Intn(3) > 0 {
		node = e.Owner
	}
	if g.rng.Intn(8) == 0 { // a wrong epoch now and then
		epoch = uint64(g.rng.Intn(int(e.Epoch) + 3))
	}
	c := Command{User: user, Node: node, Epoch: epoch, Now: g.now}
	switch p := g.rng.Intn(100); {
	case p < 35:
		c.Kind = KindClaim
		c.Node = g.pick(g.nodes)
		c.Session = fmt.Sprintf("s%d", g.rng.Intn(3))
		c.Attach = g.rng.Intn(2) == 0
		if g.rng.Intn(2) == 0 {
			c.Backup = g.pick(g.nodes)
		}
		if ok && g.rng.Intn(6) == 0 { // a retry of the claim that made the entry
			c.Node, c.Session, c.Epoch = e.Owner, e.Session, e.Epoch-1
		}
	case p < 55:
		c.Kind = KindAttach
	case p < 75:
		c.Kind = KindDetach
	case p < 83:
		c.Kind = KindSetBackup
		if g.rng.Intn(4) > 0 {
			c.Backup = g.pick(g.nodes)
		}
	case p < 88:
		c = Command{Kind: KindNodeFailed, Node: g.pick(g.nodes), Now: g.now}
	case p < 95:
		c.Kind = KindExpire
		c.Window = int64(g.rng.Intn(3000))
	default:
		c = Command{Kind: KindExpire, Now: g.now, Window: int64(g.rng.Intn(3000))}
		for _, n := range g.nodes {
			if g.rng.Intn(3) == 0 {
				c.Nodes = append(c.Nodes, n)
			}
		}
	}
	g.model.Apply(c)
	return c
}

func sortedEntries(es []Entry) []Entry {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.User, b.User) })
	return es
}

// TestRegistryDeterministic applies one random command sequence to two
// registries, one directly and one through the encoded Machine path, and
// requires identical results at every step and identical final state.
func TestRegistryDeterministic(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		g := newCmdGen(seed, 30, 5)
		cmds := make([]Command, 2000)
		for i := range cmds {
			cmds[i] = g.next()
		}
		r1 := NewRegistry()
		m2 := NewMachine()
		stats := map[bool]int{}
		for i, c := range cmds {
			res1 := r1.Apply(c)
			res2, err := DecodeResult(m2.Apply(uint64(i+1), c.Encode(nil)))
			if err != nil {
				t.Fatalf("seed %d step %d: decode result: %v", seed, i, err)
			}
			if res1 != res2 {
				t.Fatalf("seed %d step %d %v: results differ\n%+v\n%+v", seed, i, c.Kind, res1, res2)
			}
			stats[res1.Err == nil]++
		}
		s1, s2 := sortedEntries(r1.Snapshot().Entries), sortedEntries(m2.Registry.Snapshot().Entries)
		if !reflect.DeepEqual(s1, s2) {
			t.Fatalf("seed %d: snapshots differ\n%+v\n%+v", seed, s1, s2)
		}
		if !reflect.DeepEqual(s1, sortedEntries(g.model.Snapshot().Entries)) {
			t.Fatalf("seed %d: generator model diverged", seed)
		}
		// The generator must exercise both outcomes or the test proves little.
		if stats[true] < 200 || stats[false] < 100 {
			t.Fatalf("seed %d: weak sequence: %d ok, %d refused", seed, stats[true], stats[false])
		}
	}
}

// TestRegistryInvariants checks after every random command that Owned
// matches a recount, that no owner is its own backup and that epochs only
// grow while an entry lives.
func TestRegistryInvariants(t *testing.T) {
	for seed := int64(100); seed < 110; seed++ {
		g := newCmdGen(seed, 20, 4)
		r := NewRegistry()
		epochs := map[string]uint64{}
		for i := 0; i < 3000; i++ {
			c := g.next()
			res := r.Apply(c)
			checkOwnedConsistent(t, r)
			if c.Kind == KindClaim && res.Err == nil && (res.Entry.Owner != c.Node || res.Entry.Session != c.Session) {
				t.Fatalf("seed %d step %d: successful claim %+v gave %+v", seed, i, c, res.Entry)
			}
			seen := map[string]bool{}
			r.Each(func(e Entry) bool {
				seen[e.User] = true
				if e.Backup != "" && e.Backup == e.Owner {
					t.Fatalf("seed %d step %d: %s owner is its own backup", seed, i, e.User)
				}
				if e.Epoch == 0 || e.Epoch < epochs[e.User] {
					t.Fatalf("seed %d step %d: %s epoch %d after %d", seed, i, e.User, e.Epoch, epochs[e.User])
				}
				epochs[e.User] = e.Epoch
				return true
			})
			for u := range epochs {
				if !seen[u] {
					delete(epochs, u) // expired: a new entry starts again at 1
				}
			}
		}
	}
}

// TestEpochsGrowAcrossExpiry: a user re-created after expiry gets an epoch
// above every epoch it had, so streams fenced before the expiry stay fenced.
func TestEpochsGrowAcrossExpiry(t *testing.T) {
	r := NewRegistry()
	for i := uint64(0); i < 3; i++ {
		if res := r.Apply(Command{Kind: KindClaim, User: "u", Node: "a", Session: "s", Epoch: i, Now: int64(i)}); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	r.Apply(Command{Kind: KindDetach, User: "u", Node: "a", Epoch: 3, Now: 10})
	if res := r.Apply(Command{Kind: KindExpire, User: "u", Node: "a", Epoch: 3, Now: 1000, Window: 100}); res.Count != 1 {
		t.Fatalf("expire: %+v", res)
	}
	res := r.Apply(Command{Kind: KindClaim, User: "u", Node: "b", Session: "s2", Epoch: 0, Now: 2000})
	if res.Err != nil || res.Entry.Epoch != 4 {
		t.Fatalf("claim after expiry: %+v, want epoch 4", res)
	}
	// A retry of that first claim is recognised and succeeds again.
	if again := r.Apply(Command{Kind: KindClaim, User: "u", Node: "b", Session: "s2", Epoch: 0, Now: 2000}); again.Err != nil || again.Entry.Epoch != 4 {
		t.Fatalf("retried claim: %+v", again)
	}
	// The floor survives a snapshot.
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, r.Snapshot()); err != nil {
		t.Fatal(err)
	}
	r2 := NewRegistry()
	if err := r2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	r2.Apply(Command{Kind: KindDetach, User: "u", Node: "b", Epoch: 4, Now: 2000})
	r2.Apply(Command{Kind: KindExpire, User: "u", Node: "b", Epoch: 4, Now: 5000, Window: 100})
	if res := r2.Apply(Command{Kind: KindClaim, User: "u", Node: "c", Session: "s3", Now: 6000}); res.Entry.Epoch != 5 {
		t.Fatalf("claim after restore+expiry: %+v, want epoch 5", res)
	}
}

// TestSetBackupRetryIsIdempotent: a set-backup whose outcome was unknown
// to its proposer may be sent again; the retry succeeds with the same entry.
func TestSetBackupRetryIsIdempotent(t *testing.T) {
	r := NewRegistry()
	r.Apply(Command{Kind: KindClaim, User: "u", Node: "n1", Session: "s", Now: 1})
	c := Command{Kind: KindSetBackup, User: "u", Node: "n1", Epoch: 1, Backup: "n2", Now: 2}
	first := r.Apply(c)
	again := r.Apply(c)
	if first.Err != nil || again.Err != nil || first.Entry != again.Entry || again.Entry.Epoch != 2 {
		t.Fatalf("first %+v, retry %+v", first, again)
	}
	// A different backup under the old epoch is still refused.
	if res := r.Apply(Command{Kind: KindSetBackup, User: "u", Node: "n1", Epoch: 1, Backup: "n3", Now: 3}); res.Err == nil {
		t.Fatalf("stale set-backup to another node accepted: %+v", res)
	}
}
