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
			joins, leaves = p.Report(s.node, s.gen, s.members)
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
