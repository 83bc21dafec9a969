package session

import (
	"slices"
	"testing"
)

func TestPresenceJoinsAndLeaves(t *testing.T) {
	p := NewPresence()
	type step struct {
		node          string
		gen           uint64
		members       map[string]int
		drop          bool
		joins, leaves []string
		want          []Member
	}
	for i, s := range []step{
		{node: "n1", gen: 1, members: map[string]int{"a": 1}, joins: []string{"a"}, want: []Member{{"a", 1}}},
		// A second node's connection of a present user is no join.
		{node: "n2", gen: 1, members: map[string]int{"a": 2, "b": 1}, joins: []string{"b"}, want: []Member{{"a", 3}, {"b", 1}}},
		// An older report from n1 changes nothing.
		{node: "n1", gen: 0, members: map[string]int{}, want: []Member{{"a", 3}, {"b", 1}}},
		// a leaves n1 but is still on n2: no leave.
		{node: "n1", gen: 2, members: map[string]int{}, want: []Member{{"a", 2}, {"b", 1}}},
		{node: "n1", gen: 3, members: map[string]int{"c": 1, "zero": 0}, joins: []string{"c"}, want: []Member{{"a", 2}, {"b", 1}, {"c", 1}}},
		// n2 dies: its members that nobody else has leave.
		{node: "n2", drop: true, leaves: []string{"a", "b"}, want: []Member{{"c", 1}}},
		{node: "n2", drop: true, want: []Member{{"c", 1}}},
		// It comes back (a new process): its reports count again.
		{node: "n2", gen: 1, members: map[string]int{"c": 1}, want: []Member{{"c", 2}}},
		{node: "n1", gen: 4, members: nil, want: []Member{{"c", 1}}},
		{node: "n2", gen: 2, members: nil, leaves: []string{"c"}, want: []Member{}},
	} {
		var joins, leaves []string
		if s.drop {
			leaves = p.Drop(s.node)
		} else {
			joins, leaves = p.Report(s.node, s.gen, 0, s.members)
		}
		if !slices.Equal(joins, s.joins) || !slices.Equal(leaves, s.leaves) {
			t.Fatalf("step %d: joins %v leaves %v, want %v %v", i, joins, leaves, s.joins, s.leaves)
		}
		if got := p.Members(); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: members %v, want %v", i, got, s.want)
		}
	}
	if !p.Empty() {
		t.Fatal("not empty at the end")
	}
}

// A report is a lease: a node that stops reporting loses its members one
// lease after its last report, not before, and an older report does not
// renew it. Times are milliseconds; the lease is 2000.
func TestPresenceLeaseExpires(t *testing.T) {
	const lease = 2000
	type step struct {
		at      int64
		node    string // report from node; "" expires at at
		gen     uint64
		members map[string]int
		joins   []string
		leaves  []string
		want    []Member
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"a silent node's members leave one lease after its last report", []step{
			{at: 0, node: "n1", gen: 1, members: map[string]int{"a": 1, "b": 1}, joins: []string{"a", "b"}, want: []Member{{"a", 1}, {"b", 1}}},
			{at: 0, node: "n2", gen: 1, members: map[string]int{"b": 1, "c": 1}, joins: []string{"c"}, want: []Member{{"a", 1}, {"b", 2}, {"c", 1}}},
			{at: 1000, node: "n2", gen: 2, members: map[string]int{"b": 1, "c": 1}, want: []Member{{"a", 1}, {"b", 2}, {"c", 1}}},
			{at: 1999, want: []Member{{"a", 1}, {"b", 2}, {"c", 1}}},
			// n1's lease ran out; b is still on n2.
			{at: 2000, leaves: []string{"a"}, want: []Member{{"b", 1}, {"c", 1}}},
			{at: 2999, want: []Member{{"b", 1}, {"c", 1}}},
			{at: 3000, leaves: []string{"b", "c"}, want: []Member{}},
		}},
		{"reports every half lease keep a node present however long", []step{
			{at: 0, node: "n1", gen: 1, members: map[string]int{"a": 1}, joins: []string{"a"}, want: []Member{{"a", 1}}},
			{at: 500, node: "n1", gen: 2, members: map[string]int{"a": 1}, want: []Member{{"a", 1}}},
			{at: 1900, want: []Member{{"a", 1}}},
			// Two reports lost or late: 1.9 s of silence is still inside.
			{at: 2400, node: "n1", gen: 5, members: map[string]int{"a": 1}, want: []Member{{"a", 1}}},
			{at: 4399, want: []Member{{"a", 1}}},
			{at: 4400, leaves: []string{"a"}, want: []Member{}},
		}},
		{"an older report neither changes nor renews", []step{
			{at: 0, node: "n1", gen: 5, members: map[string]int{"a": 1}, joins: []string{"a"}, want: []Member{{"a", 1}}},
			{at: 1500, node: "n1", gen: 4, members: map[string]int{"a": 1}, want: []Member{{"a", 1}}},
			{at: 2000, leaves: []string{"a"}, want: []Member{}},
		}},
		{"a node that comes back after its lease ran out joins again", []step{
			{at: 0, node: "n1", gen: 1, members: map[string]int{"a": 2}, joins: []string{"a"}, want: []Member{{"a", 2}}},
			{at: 2500, leaves: []string{"a"}, want: []Member{}},
			{at: 2600, node: "n1", gen: 2, members: map[string]int{"a": 2}, joins: []string{"a"}, want: []Member{{"a", 2}}},
			{at: 4599, want: []Member{{"a", 2}}},
		}},
		// A new owner starts with no leases: each node's runs from its
		// first report to it, so a takeover expires nobody who reports.
		{"leases start at each node's first report", []step{
			{at: 10_000, node: "n2", gen: 7, members: map[string]int{"b": 1}, joins: []string{"b"}, want: []Member{{"b", 1}}},
			{at: 11_900, node: "n3", gen: 3, members: map[string]int{"c": 1}, joins: []string{"c"}, want: []Member{{"b", 1}, {"c", 1}}},
			{at: 11_999, want: []Member{{"b", 1}, {"c", 1}}},
			{at: 12_000, leaves: []string{"b"}, want: []Member{{"c", 1}}},
		}},
		{"an empty report ends a node's lease with its members", []step{
			{at: 0, node: "n1", gen: 1, members: map[string]int{"a": 1}, joins: []string{"a"}, want: []Member{{"a", 1}}},
			{at: 100, node: "n1", gen: 2, leaves: []string{"a"}, want: []Member{}},
			{at: 5000, want: []Member{}},
		}},
		{"one user on two silent nodes leaves once", []step{
			{at: 0, node: "n1", gen: 1, members: map[string]int{"a": 1}, joins: []string{"a"}, want: []Member{{"a", 1}}},
			{at: 10, node: "n2", gen: 1, members: map[string]int{"a": 1}, want: []Member{{"a", 2}}},
			{at: 2010, leaves: []string{"a"}, want: []Member{}},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPresence()
			for i, s := range tt.steps {
				var joins, leaves []string
				if s.node == "" {
					leaves = p.Expire(s.at, lease)
				} else {
					joins, leaves = p.Report(s.node, s.gen, s.at, s.members)
				}
				if !slices.Equal(joins, s.joins) || !slices.Equal(leaves, s.leaves) {
					t.Fatalf("step %d (t=%d): joins %v leaves %v, want %v %v", i, s.at, joins, leaves, s.joins, s.leaves)
				}
				if got := p.Members(); !slices.Equal(got, s.want) {
					t.Fatalf("step %d (t=%d): members %v, want %v", i, s.at, got, s.want)
				}
			}
		})
	}
}
