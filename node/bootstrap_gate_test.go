package node

import (
	"testing"
	"time"

	"github.com/switchboard/switchboard/membership"
)

func member(id string, st membership.State, clustered bool) membership.Member {
	return membership.Member{Meta: membership.Meta{ID: id, Clustered: clustered}, State: st}
}

// The --bootstrap-expect decision, one instant after another: only the
// lowest id of N live members bootstraps, after the view held for the
// settle time, and never beside a member that holds Raft state.
func TestBootstrapGate(t *testing.T) {
	const settle = 2 * time.Second
	alive, dead, draining := membership.StateAlive, membership.StateDead, membership.StateDraining
	three := []membership.Member{member("n1", alive, false), member("n2", alive, false), member("n3", alive, false)}
	type step struct {
		at        time.Duration
		members   []membership.Member
		bootstrap bool
		short     bool
	}
	tests := []struct {
		name  string
		self  string
		steps []step
	}{
		{"lowest of N bootstraps once the view settled", "n1", []step{
			{0, three[:2], false, true},
			{time.Second, three, false, false},
			{2 * time.Second, three, false, false},
			{3 * time.Second, three, true, false},
		}},
		{"not the lowest never bootstraps", "n2", []step{
			{0, three, false, false},
			{10 * time.Second, three, false, false},
		}},
		{"a member holding Raft state stops it, even dead", "n1", []step{
			{0, three, false, false},
			{3 * time.Second, []membership.Member{three[0], three[1], three[2], member("n4", dead, true)}, false, false},
			{10 * time.Second, []membership.Member{three[0], three[1], three[2], member("n4", dead, true)}, false, false},
		}},
		{"dead and draining members do not count", "n1", []step{
			{0, []membership.Member{three[0], member("n2", dead, false), member("n3", draining, false)}, false, true},
			{10 * time.Second, []membership.Member{three[0], member("n2", dead, false), member("n3", draining, false)}, false, true},
		}},
		{"a member lost while settling starts the settle again", "n1", []step{
			{0, three, false, false},
			{time.Second, three[:2], false, true},
			{2 * time.Second, three, false, false},
			{3 * time.Second, three, false, false},
			{4 * time.Second, three, true, false},
		}},
		{"a lower id appearing while settling takes over", "n2", []step{
			{0, three[1:], false, true},
			{time.Second, []membership.Member{three[1], three[2], member("n4", alive, false)}, false, false},
			{2 * time.Second, append([]membership.Member{member("n0", alive, false)}, three[1:]...), false, false},
			{10 * time.Second, append([]membership.Member{member("n0", alive, false)}, three[1:]...), false, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &bootstrapGate{self: tt.self, expect: 3, settle: settle}
			start := time.Unix(1000, 0)
			for i, s := range tt.steps {
				d := g.decide(start.Add(s.at), s.members)
				if d.bootstrap != s.bootstrap || d.short != s.short {
					t.Fatalf("step %d (at %v): bootstrap=%t short=%t (%s), want bootstrap=%t short=%t",
						i, s.at, d.bootstrap, d.short, d.why, s.bootstrap, s.short)
				}
				if !d.bootstrap && d.why == "" {
					t.Fatalf("step %d: no reason given for waiting", i)
				}
			}
		})
	}
}
