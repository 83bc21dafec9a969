package membership

import (
	"fmt"
	"testing"
	"time"
)

// step is one memberlist observation fed to the table.
type step struct {
	id      string
	gone    bool // NotifyLeave; otherwise NotifyJoin/NotifyUpdate
	addr    string
	meta    Meta
	leaving bool
	at      time.Duration // offset from t0
}

func TestTableTransitions(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		steps       []step
		wantState   State
		wantSince   time.Duration
		wantAddr    string
		wantChanged []bool
	}{
		{
			name:        "join is alive",
			steps:       []step{{id: "n2", addr: "a:1", meta: Meta{Region: "r1"}}},
			wantState:   StateAlive,
			wantAddr:    "a:1",
			wantChanged: []bool{true},
		},
		{
			name: "failure without leaving flag is dead",
			steps: []step{
				{id: "n2", addr: "a:1"},
				{id: "n2", gone: true, addr: "a:1", at: 5 * time.Second},
			},
			wantState: StateDead, wantSince: 5 * time.Second, wantAddr: "a:1",
			wantChanged: []bool{true, true},
		},
		{
			name: "leave after leaving flag is left",
			steps: []step{
				{id: "n2", addr: "a:1"},
				{id: "n2", addr: "a:1", leaving: true, at: time.Second},
				{id: "n2", gone: true, addr: "a:1", at: 2 * time.Second},
			},
			wantState: StateLeft, wantSince: 2 * time.Second, wantAddr: "a:1",
			wantChanged: []bool{true, true, true},
		},
		{
			name: "leaving but still alive reports draining",
			steps: []step{
				{id: "n2", addr: "a:1"},
				{id: "n2", addr: "a:1", leaving: true, at: time.Second},
			},
			wantState: StateDraining, wantSince: time.Second, wantAddr: "a:1",
			wantChanged: []bool{true, true},
		},
		{
			name: "draining meta reports draining, undrain back to alive",
			steps: []step{
				{id: "n2", addr: "a:1"},
				{id: "n2", addr: "a:1", meta: Meta{Draining: true}, at: time.Second},
				{id: "n2", addr: "a:1", at: 3 * time.Second},
			},
			wantState: StateAlive, wantSince: 3 * time.Second, wantAddr: "a:1",
			wantChanged: []bool{true, true, true},
		},
		{
			name: "rejoin after dead with new address is alive",
			steps: []step{
				{id: "n2", addr: "a:1"},
				{id: "n2", gone: true, addr: "a:1", at: time.Second},
				{id: "n2", addr: "a:2", at: 4 * time.Second},
			},
			wantState: StateAlive, wantSince: 4 * time.Second, wantAddr: "a:2",
			wantChanged: []bool{true, true, true},
		},
		{
			name: "rejoin after left clears leaving flag",
			steps: []step{
				{id: "n2", addr: "a:1", leaving: true},
				{id: "n2", gone: true, addr: "a:1", at: time.Second},
				{id: "n2", addr: "a:1", at: 2 * time.Second},
				{id: "n2", gone: true, addr: "a:1", at: 3 * time.Second},
			},
			wantState: StateDead, wantSince: 3 * time.Second, wantAddr: "a:1",
			wantChanged: []bool{true, true, true, true},
		},
		{
			name: "meta-only update keeps Since",
			steps: []step{
				{id: "n2", addr: "a:1", meta: Meta{PublicURL: "http://x"}},
				{id: "n2", addr: "a:1", meta: Meta{PublicURL: "http://y"}, at: time.Second},
			},
			wantState: StateAlive, wantSince: 0, wantAddr: "a:1",
			wantChanged: []bool{true, true},
		},
		{
			name: "repeated identical observation is no change",
			steps: []step{
				{id: "n2", addr: "a:1"},
				{id: "n2", addr: "a:1", at: time.Second},
				{id: "n2", gone: true, addr: "a:1", at: 2 * time.Second},
				{id: "n2", gone: true, addr: "a:1", at: 3 * time.Second},
			},
			wantState: StateDead, wantSince: 2 * time.Second, wantAddr: "a:1",
			wantChanged: []bool{true, false, true, false},
		},
		{
			name:        "leave of unknown node is remembered dead",
			steps:       []step{{id: "n2", gone: true, addr: "a:1"}},
			wantState:   StateDead,
			wantAddr:    "a:1",
			wantChanged: []bool{true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable("n1")
			for i, s := range tt.steps {
				var changed bool
				if s.gone {
					changed = tb.gone(s.id, s.addr, t0.Add(s.at))
				} else {
					changed = tb.alive(s.id, s.addr, s.meta, s.leaving, t0.Add(s.at))
				}
				if changed != tt.wantChanged[i] {
					t.Fatalf("step %d changed = %t, want %t", i, changed, tt.wantChanged[i])
				}
			}
			m, ok := tb.get("n2")
			if !ok {
				t.Fatal("n2 missing")
			}
			if m.State != tt.wantState || !m.Since.Equal(t0.Add(tt.wantSince)) || m.GossipAddr != tt.wantAddr || m.ID != "n2" {
				t.Fatalf("got %+v, want state %s since +%v addr %s", m, tt.wantState, tt.wantSince, tt.wantAddr)
			}
		})
	}
}

func TestTableNodeNameIsAuthoritativeID(t *testing.T) {
	tb := newTable("n1")
	tb.alive("n2", "a:1", Meta{ID: "spoofed"}, false, time.Now())
	if _, ok := tb.get("spoofed"); ok {
		t.Fatal("meta ID used as key")
	}
	if m, _ := tb.get("n2"); m.ID != "n2" {
		t.Fatalf("ID = %q, want n2", m.ID)
	}
}

func TestTablePrunesGoneMembers(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		retention time.Duration
		maxGone   int
		nGone     int           // n0..n{nGone-1} die one second apart
		checkAt   time.Duration // time of a final unrelated event that triggers pruning
		wantIDs   []string
	}{
		{"within retention all kept", time.Hour, 10, 3, time.Minute, []string{"alive", "g0", "g1", "g2", "self"}},
		{"past retention forgotten", time.Hour, 10, 3, time.Hour + 1500*time.Millisecond, []string{"alive", "g2", "self"}},
		{"bound keeps newest", time.Hour, 2, 4, time.Minute, []string{"alive", "g2", "g3", "self"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable("self")
			tb.retention, tb.maxGone = tt.retention, tt.maxGone
			tb.alive("self", "s:1", Meta{}, true, t0)
			tb.gone("self", "s:1", t0) // local node left long ago: never pruned
			tb.alive("alive", "a:1", Meta{}, false, t0)
			for i := range tt.nGone {
				id := fmt.Sprintf("g%d", i)
				tb.alive(id, "g:1", Meta{}, false, t0)
				tb.gone(id, "g:1", t0.Add(time.Duration(i)*time.Second))
			}
			tb.alive("alive", "a:2", Meta{}, false, t0.Add(tt.checkAt))
			var got []string
			for _, m := range tb.list() {
				got = append(got, m.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantIDs) {
				t.Fatalf("members = %v, want %v", got, tt.wantIDs)
			}
		})
	}
}
