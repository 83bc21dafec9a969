package broker

import (
	"fmt"
	"slices"
	"testing"

	"github.com/switchboard/switchboard/session"
)

// endpointCluster is a Cluster that only lists endpoints.
type endpointCluster struct {
	Cluster
	eps []Endpoint
}

func (c endpointCluster) Endpoints() []Endpoint { return c.eps }

func TestEndpointsForUser(t *testing.T) {
	eps := []Endpoint{
		{Node: "n1", URL: "ws://n1", SameRegion: true},
		{Node: "n3", URL: "ws://n3", SameRegion: true},
		{Node: "n4", URL: "ws://n4", SameRegion: true},
		{Node: "n5", URL: "ws://n5"},
		{Node: "n6", URL: "ws://n6"},
	}
	b := &Broker{cluster: endpointCluster{eps: eps}}
	if got, want := b.endpoints(), []string{"ws://n1", "ws://n3", "ws://n4", "ws://n5", "ws://n6"}; !slices.Equal(got, want) {
		t.Fatalf("endpoints() = %v, want the cluster's order %v", got, want)
	}
	first := map[string]int{}
	for i := range 300 {
		user := session.UserKey(fmt.Sprintf("u%d", i))
		for _, backup := range []string{"", "n1", "n3", "n5"} {
			got := b.endpointsFor(user, backup)
			sorted := slices.Clone(got)
			slices.Sort(sorted)
			if !slices.Equal(sorted, b.endpoints()) {
				t.Fatalf("endpointsFor(%s, %q) = %v: not every other node once", user, backup, got)
			}
			// Same region first (DESIGN §3), other regions in cluster order.
			if !slices.Equal(got[3:], []string{"ws://n5", "ws://n6"}) {
				t.Fatalf("endpointsFor(%s, %q) = %v: other regions must follow the same region, in order", user, backup, got)
			}
			// A same-region backup comes last among its region.
			if backup == "n1" || backup == "n3" {
				if got[2] != "ws://"+backup {
					t.Fatalf("endpointsFor(%s, %q) = %v: the backup is not last of its region", user, backup, got)
				}
			}
			// The same user always gets the same order.
			if again := b.endpointsFor(user, backup); !slices.Equal(again, got) {
				t.Fatalf("endpointsFor(%s, %q) = %v, then %v", user, backup, got, again)
			}
		}
		first[b.endpointsFor(user, "n1")[0]]++
	}
	// Users of one dead node spread over the survivors.
	if len(first) != 2 || first["ws://n3"] < 100 || first["ws://n4"] < 100 {
		t.Fatalf("first endpoints of 300 users with backup n1: %v, want both n3 and n4 often", first)
	}
}
