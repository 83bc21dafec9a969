package consensus

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestPlan(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	const grace = 30 * time.Second
	voter := func(id string) raft.Server {
		return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":7701"), Suffrage: raft.Voter}
	}
	nonvoter := func(id string) raft.Server {
		return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":7701"), Suffrage: raft.Nonvoter}
	}
	member := func(id, region, zone, state string) Member {
		return Member{ID: id, Addr: id + ":7701", Region: region, Zone: zone, State: state}
	}
	tests := []struct {
		name      string
		servers   []raft.Server
		members   []Member
		deadSince map[string]time.Duration // how long ago
		want      action
	}{
		{
			name:    "second voter prefers a new region over a new zone",
			servers: []raft.Server{voter("n1")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "b", MemberAlive), member("n3", "r2", "a", MemberAlive)},
			want:    action{kind: actAddVoter, id: "n3", addr: "n3:7701"},
		},
		{
			name:    "then a new zone over a taken one",
			servers: []raft.Server{voter("n1"), voter("n3")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r2", "a", MemberAlive), member("n4", "r1", "b", MemberAlive)},
			want:    action{kind: actAddVoter, id: "n4", addr: "n4:7701"},
		},
		{
			name:    "caught-up nonvoter preferred on a tie",
			servers: []raft.Server{voter("n1"), voter("n2"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberAlive)},
			want:    action{kind: actAddVoter, id: "n4", addr: "n4:7701"},
		},
		{
			name:    "fourth member joins as nonvoter",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberAlive)},
			want:    action{kind: actAddNonvoter, id: "n4", addr: "n4:7701"},
		},
		{
			name:    "draining and suspect members are not added",
			servers: []raft.Server{voter("n1")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r2", "a", MemberDraining), member("n3", "r3", "a", MemberSuspect)},
			want:    action{},
		},
		{
			name:    "left nonvoter removed at once",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberLeft)},
			want:    action{kind: actRemove, id: "n4"},
		},
		{
			name:      "dead voter kept within its grace",
			servers:   []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members:   []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberDead), member("n4", "r1", "a", MemberAlive)},
			deadSince: map[string]time.Duration{"n3": grace - time.Second},
			want:      action{},
		},
		{
			name:      "dead voter removed after its grace",
			servers:   []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members:   []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberDead), member("n4", "r1", "a", MemberAlive)},
			deadSince: map[string]time.Duration{"n3": grace},
			want:      action{kind: actRemove, id: "n3"},
		},
		{
			name:    "nonvoter promoted when a voter is gone",
			servers: []raft.Server{voter("n1"), voter("n2"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberAlive)},
			want:    action{kind: actAddVoter, id: "n4", addr: "n4:7701"},
		},
		{
			name:      "server missing from gossip removed after grace",
			servers:   []raft.Server{voter("n1"), voter("n2"), voter("n3")},
			members:   []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive)},
			deadSince: map[string]time.Duration{"n3": 2 * grace},
			want:      action{kind: actRemove, id: "n3"},
		},
		{
			name:      "removal that would lose quorum is refused",
			servers:   []raft.Server{voter("n1"), voter("n2"), voter("n3")},
			members:   []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberSuspect), member("n3", "r1", "a", MemberDead)},
			deadSince: map[string]time.Duration{"n3": 2 * grace},
			want:      action{},
		},
		{
			name:    "left voter removed even with a suspect peer when quorum holds",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), voter("n4"), voter("n5")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberSuspect), member("n5", "r1", "a", MemberLeft)},
			want:    action{kind: actRemove, id: "n5"},
		},
		{
			name:    "leader whose member left transfers instead of removing itself",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3")},
			members: []Member{member("n1", "r1", "a", MemberLeft), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberAlive)},
			want:    action{kind: actTransfer, id: "n1"},
		},
		{
			name:    "draining voter swapped: promote first",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberDraining), member("n3", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberAlive)},
			want:    action{kind: actAddVoter, id: "n4", addr: "n4:7701"},
		},
		{
			name:    "draining voter swapped: then demote",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), voter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberDraining), member("n3", "r1", "a", MemberAlive), member("n4", "r1", "a", MemberAlive)},
			want:    action{kind: actDemote, id: "n2"},
		},
		{
			name:    "draining nonvoter never promoted",
			servers: []raft.Server{voter("n1"), voter("n2"), nonvoter("n3")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r2", "a", MemberDraining)},
			want:    action{},
		},
		{
			name:    "voters in one region swapped for a nonvoter in another",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberAlive), member("n4", "r2", "a", MemberAlive)},
			want:    action{kind: actAddVoter, id: "n4", addr: "n4:7701"},
		},
		{
			name:    "no swap that does not improve the spread",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r2", "a", MemberAlive), member("n3", "r3", "a", MemberAlive), member("n4", "r2", "b", MemberAlive)},
			want:    action{},
		},
		{
			name:      "no swap while a voter is dead within its grace",
			servers:   []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members:   []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r1", "a", MemberAlive), member("n3", "r1", "a", MemberDead), member("n4", "r2", "a", MemberAlive)},
			deadSince: map[string]time.Duration{"n3": time.Second},
			want:      action{},
		},
		{
			name:    "changed address re-added with its suffrage",
			servers: []raft.Server{voter("n1"), voter("n2")},
			members: []Member{member("n1", "r1", "a", MemberAlive), {ID: "n2", Addr: "10.0.0.2:7701", Region: "r1", Zone: "a", State: MemberAlive}},
			want:    action{kind: actAddVoter, id: "n2", addr: "10.0.0.2:7701"},
		},
		{
			name:    "converged",
			servers: []raft.Server{voter("n1"), voter("n2"), voter("n3"), nonvoter("n4")},
			members: []Member{member("n1", "r1", "a", MemberAlive), member("n2", "r2", "a", MemberAlive), member("n3", "r3", "a", MemberAlive), member("n4", "r1", "a", MemberAlive)},
			want:    action{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			members := make(map[string]Member)
			for _, m := range tt.members {
				members[m.ID] = m
			}
			dead := make(map[string]time.Time)
			for id, ago := range tt.deadSince {
				dead[id] = now.Add(-ago)
			}
			got := plan(planInput{self: "n1", servers: tt.servers, members: members, deadSince: dead, now: now, grace: grace, maxVoters: 3})
			got.reason = ""
			if got != tt.want {
				t.Fatalf("plan = %+v (%s), want %+v (%s)", got, got.kind, tt.want, tt.want.kind)
			}
		})
	}
}

func TestPlacementTrackCountsDeadAndMissingFromFirstSight(t *testing.T) {
	p := placementState{deadSince: make(map[string]time.Time)}
	servers := []raft.Server{{ID: "n1"}, {ID: "n2"}, {ID: "n3"}}
	t0 := time.Unix(100, 0)
	members := map[string]Member{"n1": {ID: "n1", State: MemberAlive}, "n2": {ID: "n2", State: MemberDead}}
	p.track(t0, "n1", servers, members)
	p.track(t0.Add(time.Second), "n1", servers, members)
	if got := p.deadSince["n2"]; !got.Equal(t0) {
		t.Fatalf("n2 dead since %v, want first sight %v", got, t0)
	}
	if got := p.deadSince["n3"]; !got.Equal(t0) {
		t.Fatalf("n3 (missing from gossip) since %v, want %v", got, t0)
	}
	members["n2"] = Member{ID: "n2", State: MemberAlive}
	p.track(t0.Add(2*time.Second), "n1", servers[:2], members)
	if len(p.deadSince) != 0 {
		t.Fatalf("recovered or removed servers still tracked: %v", p.deadSince)
	}
}
