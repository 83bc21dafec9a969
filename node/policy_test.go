package node

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/membership"
)

// The failure policy's rules, each as a table of scenarios. A scenario is
// the ticks one node sees ("a", started at policyStart) and, at each, the actions
// of the kinds the rule is about.

var policyStart = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// selfID is the node the policy runs on in these tests.
const selfID = "a"

type policyStep struct {
	at       time.Duration // since the policy started
	view     clusterView   // now is set from at
	want     []action      // of the test's kinds only
	saveFail bool          // the seeds file cannot be written
}

type policyScenario struct {
	name  string
	steps []policyStep
}

// playPolicy runs each scenario from a fresh policy, keeping only the
// actions of kinds (named by a zero value of each).
func playPolicy(t *testing.T, kinds []action, scenarios []policyScenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			p := newClusterPolicy(selfID, policyStart)
			for i, s := range sc.steps {
				s.view.now = policyStart.Add(s.at)
				acts := p.decide(s.view)
				for _, a := range acts {
					if a, ok := a.(saveSeeds); ok && !s.saveFail {
						p.seedsSaved(a.addrs)
					}
				}
				if got := onlyKinds(acts, kinds...); !reflect.DeepEqual(got, s.want) {
					t.Fatalf("step %d (at %v):\n got %#v\nwant %#v", i, s.at, got, s.want)
				}
			}
		})
	}
}

func onlyKinds(acts []action, kinds ...action) []action {
	var out []action
	for _, a := range acts {
		for _, k := range kinds {
			if reflect.TypeOf(a) == reflect.TypeOf(k) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

func gossipMember(id string, s membership.State) membership.Member {
	return membership.Member{Meta: membership.Meta{ID: id, ClusterAddr: id + ":7000"}, GossipAddr: id + ":7946", State: s}
}

// membersOf is this node, alive, and the others as "id=state".
func membersOf(others ...string) []membership.Member {
	out := []membership.Member{gossipMember(selfID, membership.StateAlive)}
	for _, o := range others {
		id, state, _ := strings.Cut(o, "=")
		out = append(out, gossipMember(id, membership.State(state)))
	}
	return out
}

// leaderView is a view from the Raft leader, followerView one from a
// follower of leader "c"; every member has proved itself.
func leaderView(ms []membership.Member) clusterView {
	return clusterView{members: ms, leading: true, leader: selfID, servers: []string{selfID}, proven: allProven(ms)}
}

func followerView(ms []membership.Member) clusterView {
	return clusterView{members: ms, leader: "c", servers: []string{selfID}, proven: allProven(ms)}
}

func allProven(ms []membership.Member) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		out[m.ID] = m.ClusterAddr
	}
	return out
}

// sec is d seconds, to the millisecond.
func sec(d float64) time.Duration { return time.Duration(math.Round(d*1000)) * time.Millisecond }

func TestPolicyMemberDownIsDownEverywhereFailedOnLeader(t *testing.T) {
	playPolicy(t, []action{nodeDown{}, nodeFailed{}}, []policyScenario{
		{"a follower marks a member that dies down, and does not fail it", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=alive"))},
			{at: sec(2), view: followerView(membersOf("b=dead")), want: []action{nodeDown{"b", membership.StateDead}}},
			{at: sec(3), view: followerView(membersOf("b=dead"))},
		}},
		{"the leader marks a member that dies down and fails it", []policyStep{
			{at: sec(1), view: leaderView(membersOf("b=alive"))},
			{at: sec(2), view: leaderView(membersOf("b=dead")), want: []action{nodeDown{"b", membership.StateDead}, nodeFailed{node: "b"}}},
			{at: sec(3), view: leaderView(membersOf("b=dead"))},
		}},
		{"a member that leaves is down too", []policyStep{
			{at: sec(1), view: leaderView(membersOf("b=alive"))},
			{at: sec(2), view: leaderView(membersOf("b=left")), want: []action{nodeDown{"b", membership.StateLeft}, nodeFailed{node: "b"}}},
		}},
		{"a member first seen dead is down", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=dead", "c=left")), want: []action{nodeDown{"b", membership.StateDead}, nodeDown{"c", membership.StateLeft}}},
		}},
		{"dead, then left, is down again", []policyStep{
			{at: sec(1), view: leaderView(membersOf("b=dead")), want: []action{nodeDown{"b", membership.StateDead}, nodeFailed{node: "b"}}},
			{at: sec(2), view: leaderView(membersOf("b=left")), want: []action{nodeDown{"b", membership.StateLeft}, nodeFailed{node: "b"}}},
		}},
		{"suspect and draining members are not down", []policyStep{
			{at: sec(1), view: leaderView(membersOf("b=suspect", "c=draining"))},
			{at: sec(2), view: leaderView(membersOf("b=alive", "c=alive"))},
		}},
		{"this node is never down", []policyStep{
			{at: sec(1), view: leaderView([]membership.Member{gossipMember(selfID, membership.StateDead)})},
			{at: sec(2), view: leaderView([]membership.Member{gossipMember(selfID, membership.StateLeft)})},
		}},
		{"a member that comes back and dies again is down again", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=dead")), want: []action{nodeDown{"b", membership.StateDead}}},
			{at: sec(2), view: followerView(membersOf("b=alive"))},
			{at: sec(3), view: followerView(membersOf("b=dead")), want: []action{nodeDown{"b", membership.StateDead}}},
		}},
	})
}

func TestPolicyLeaderRepeatsNodeFailedAndSweepsEvery10s(t *testing.T) {
	ownerless := func(v clusterView) clusterView { v.ownerless = true; return v }
	playPolicy(t, []action{nodeFailed{}, sweep{}}, []policyScenario{
		{"while a member is down", []policyStep{
			{at: sec(1), view: leaderView(membersOf("b=dead")), want: []action{nodeFailed{node: "b"}}},
			{at: sec(10), view: leaderView(membersOf("b=dead"))}, // not more than 10 s yet
			{at: sec(10.5), view: leaderView(membersOf("b=dead")), want: []action{nodeFailed{node: "b"}, sweep{dead: []string{"b"}}}},
			{at: sec(15), view: leaderView(membersOf("b=dead"))},
			{at: sec(20.4), view: leaderView(membersOf("b=dead"))},
			{at: sec(20.6), view: leaderView(membersOf("b=dead", "c=left")), want: []action{
				nodeFailed{node: "c"}, // c is new
				nodeFailed{node: "b"}, nodeFailed{node: "c"}, sweep{dead: []string{"b", "c"}},
			}},
		}},
		{"an ownerless entry with no member down is swept", []policyStep{
			{at: sec(11), view: ownerless(leaderView(membersOf("b=alive"))), want: []action{sweep{}}},
		}},
		{"nothing down and nothing ownerless is not swept, and the clock runs", []policyStep{
			{at: sec(11), view: leaderView(membersOf("b=alive"))},
			{at: sec(12), view: ownerless(leaderView(membersOf("b=alive")))},
			{at: sec(21.5), view: ownerless(leaderView(membersOf("b=alive"))), want: []action{sweep{}}},
		}},
		{"a follower neither repeats nor sweeps", []policyStep{
			{at: sec(11), view: ownerless(followerView(membersOf("b=dead")))},
			{at: sec(30), view: ownerless(followerView(membersOf("b=dead")))},
		}},
		{"a new leader repeats and sweeps at once", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=dead"))},
			{at: sec(20), view: followerView(membersOf("b=dead"))},
			{at: sec(21), view: leaderView(membersOf("b=dead")), want: []action{nodeFailed{node: "b"}, sweep{dead: []string{"b"}}}},
		}},
	})
}

func TestPolicyMemberAliveAgainIsUp(t *testing.T) {
	up := func(id string) action { return nodeUp{node: id} }
	playPolicy(t, []action{nodeUp{}}, []policyScenario{
		{"after dead", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=alive"))},
			{at: sec(2), view: followerView(membersOf("b=dead"))},
			{at: sec(3), view: followerView(membersOf("b=alive")), want: []action{up("b")}},
			{at: sec(4), view: followerView(membersOf("b=alive"))},
		}},
		{"after left, on the leader too", []policyStep{
			{at: sec(1), view: leaderView(membersOf("b=left"))},
			{at: sec(2), view: leaderView(membersOf("b=alive")), want: []action{up("b")}},
		}},
		{"after draining", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=draining"))},
			{at: sec(2), view: followerView(membersOf("b=alive")), want: []action{up("b")}},
		}},
		{"a member first seen alive is not up", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=alive"))},
		}},
		{"this node is never up", []policyStep{
			{at: sec(1), view: followerView([]membership.Member{gossipMember(selfID, membership.StateDead)})},
			{at: sec(2), view: followerView([]membership.Member{gossipMember(selfID, membership.StateAlive)})},
		}},
	})
}

func TestPolicyMemberDrainingIsRebackedUpOnce(t *testing.T) {
	playPolicy(t, []action{rebackup{}}, []policyScenario{
		{"alive, then draining", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=alive"))},
			{at: sec(2), view: followerView(membersOf("b=draining")), want: []action{rebackup{"b"}}},
			{at: sec(3), view: followerView(membersOf("b=draining"))},
			{at: sec(4), view: leaderView(membersOf("b=draining"))},
		}},
		{"first seen draining", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=draining")), want: []action{rebackup{"b"}}},
		}},
		{"draining again after alive", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=draining")), want: []action{rebackup{"b"}}},
			{at: sec(2), view: followerView(membersOf("b=alive"))},
			{at: sec(3), view: followerView(membersOf("b=draining")), want: []action{rebackup{"b"}}},
		}},
		{"this node draining is not rebacked up", []policyStep{
			{at: sec(1), view: followerView([]membership.Member{gossipMember(selfID, membership.StateDraining)})},
		}},
	})
}

func TestPolicyLeaderFailsStraysAfter5s(t *testing.T) {
	// b is alive; the registry names x, which gossip does not know.
	view := func(lead bool, servers ...string) clusterView {
		v := clusterView{members: membersOf("b=alive"), leading: lead, leader: "c", named: []string{"x"}, servers: servers}
		if lead {
			v.leader = selfID
		}
		return v
	}
	withX := []string{selfID, "b", "x"}
	withoutX := []string{selfID, "b"}
	failX := []action{nodeFailed{node: "x", stray: true}}
	playPolicy(t, []action{nodeFailed{}}, []policyScenario{
		{"a node removed from the configuration", []policyStep{
			{at: sec(1), view: view(true, withX...)},
			{at: sec(2), view: view(true, withoutX...)}, // a stray from now
			{at: sec(6.9), view: view(true, withoutX...)},
			{at: sec(7), view: view(true, withoutX...), want: failX},
			{at: sec(8), view: view(true, withoutX...), want: failX}, // until the registry stops naming it
			{at: sec(9), view: clusterView{members: membersOf("b=alive"), leading: true, leader: selfID, servers: withoutX}},
		}},
		{"a name never seen in the configuration is left alone", []policyStep{
			{at: sec(1), view: view(true, withoutX...)},
			{at: sec(20), view: view(true, withoutX...)},
		}},
		{"an empty configuration decides nothing, and forgets nothing", []policyStep{
			{at: sec(1), view: view(true, withX...)},
			{at: sec(2), view: view(true, withoutX...)},
			{at: sec(3), view: view(true)},
			{at: sec(8), view: view(false)},
			{at: sec(9), view: view(true, withoutX...), want: failX}, // a stray since 2 s
		}},
		{"a follower does not fail it; a new leader waits 5 s", []policyStep{
			{at: sec(1), view: view(false, withX...)},
			{at: sec(2), view: view(false, withoutX...)},
			{at: sec(10), view: view(false, withoutX...)},
			{at: sec(11), view: view(true, withoutX...)},
			{at: sec(15.9), view: view(true, withoutX...)},
			{at: sec(16), view: view(true, withoutX...), want: failX},
		}},
		{"losing the lead restarts the wait", []policyStep{
			{at: sec(1), view: view(true, withX...)},
			{at: sec(2), view: view(true, withoutX...)},
			{at: sec(4), view: view(false, withoutX...)},
			{at: sec(5), view: view(true, withoutX...)},
			{at: sec(9), view: view(true, withoutX...)},
			{at: sec(10), view: view(true, withoutX...), want: failX},
		}},
		{"a node gossip knows again is no stray", []policyStep{
			{at: sec(1), view: view(true, withX...)},
			{at: sec(2), view: view(true, withoutX...)},
			{at: sec(3), view: clusterView{members: membersOf("b=alive", "x=alive"), leading: true, leader: selfID, named: []string{"x"}, servers: withoutX}},
			{at: sec(4), view: view(true, withoutX...)}, // not seen in the configuration since
			{at: sec(20), view: view(true, withoutX...)},
		}},
		{"a name the registry dropped is forgotten", []policyStep{
			{at: sec(1), view: view(true, withX...)},
			{at: sec(2), view: clusterView{members: membersOf("b=alive"), leading: true, leader: selfID, servers: withoutX}},
			{at: sec(3), view: view(true, withoutX...)},
			{at: sec(20), view: view(true, withoutX...)},
		}},
		{"strays are failed in the registry's order", []policyStep{
			{at: sec(1), view: clusterView{members: membersOf("b=alive"), leading: true, leader: selfID, named: []string{"w", "x", "x", "y"}, servers: []string{selfID, "w", "x", "y"}}},
			{at: sec(2), view: clusterView{members: membersOf("b=alive"), leading: true, leader: selfID, named: []string{"w", "x", "x", "y"}, servers: withoutX}},
			{at: sec(7), view: clusterView{members: membersOf("b=alive"), leading: true, leader: selfID, named: []string{"w", "x", "x", "y"}, servers: withoutX}, want: []action{
				nodeFailed{node: "w", stray: true}, nodeFailed{node: "x", stray: true}, nodeFailed{node: "y", stray: true},
			}},
		}},
		{"this node and the members gossip knows are no strays", []policyStep{
			{at: sec(1), view: clusterView{members: membersOf("b=dead"), leading: true, leader: selfID, named: []string{selfID, "b"}, servers: []string{selfID, "b"}}, want: []action{nodeFailed{node: "b"}}},
			{at: sec(2), view: clusterView{members: membersOf("b=dead"), leading: true, leader: selfID, named: []string{selfID, "b"}, servers: []string{"c"}}},
			{at: sec(9), view: clusterView{members: membersOf("b=dead"), leading: true, leader: selfID, named: []string{selfID, "b"}, servers: []string{"c"}}},
		}},
	})
}

func TestPolicyShedsClientsOnceWhenNoLeaderFor3s(t *testing.T) {
	noLeader := clusterView{members: membersOf("b=alive")}
	withLeader := clusterView{members: membersOf("b=alive"), leader: "b"}
	drainingNoLeader := clusterView{members: membersOf("b=alive"), draining: true}
	playPolicy(t, []action{shedClients{}}, []policyScenario{
		{"once", []policyStep{
			{at: sec(1), view: noLeader},
			{at: sec(4), view: noLeader}, // not more than 3 s yet
			{at: sec(4.5), view: noLeader, want: []action{shedClients{sec(3.5)}}},
			{at: sec(10), view: noLeader},
		}},
		{"a known leader resets the wait", []policyStep{
			{at: sec(1), view: noLeader},
			{at: sec(3), view: withLeader},
			{at: sec(5), view: noLeader},
			{at: sec(8), view: noLeader},
			{at: sec(8.1), view: noLeader, want: []action{shedClients{sec(3.1)}}},
		}},
		{"again after a leader came and went", []policyStep{
			{at: sec(1), view: noLeader},
			{at: sec(5), view: noLeader, want: []action{shedClients{sec(4)}}},
			{at: sec(6), view: withLeader},
			{at: sec(7), view: noLeader},
			{at: sec(10.5), view: noLeader, want: []action{shedClients{sec(3.5)}}},
		}},
		{"not while draining", []policyStep{
			{at: sec(1), view: noLeader},
			{at: sec(5), view: drainingNoLeader},
			{at: sec(6), view: drainingNoLeader},
			{at: sec(7), view: noLeader, want: []action{shedClients{sec(6)}}},
		}},
		{"a leader known from the start sheds nothing", []policyStep{
			{at: sec(1), view: withLeader},
			{at: sec(30), view: withLeader},
		}},
	})
}

func TestPolicyRejoinsDeadMembersEvery5s(t *testing.T) {
	playPolicy(t, []action{rejoin{}}, []policyScenario{
		{"the dead, not those that left", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=dead", "c=left", "d=alive", "e=dead"))},
			{at: sec(5), view: followerView(membersOf("b=dead", "c=left", "d=alive", "e=dead"))}, // not more than 5 s yet
			{at: sec(5.5), view: followerView(membersOf("b=dead", "c=left", "d=alive", "e=dead")), want: []action{rejoin{[]string{"b:7946", "e:7946"}}}},
			{at: sec(10), view: followerView(membersOf("b=dead"))},
			{at: sec(10.6), view: leaderView(membersOf("b=dead")), want: []action{rejoin{[]string{"b:7946"}}}},
		}},
		{"the clock runs with nobody to rejoin", []policyStep{
			{at: sec(6), view: followerView(membersOf("b=alive"))},
			{at: sec(7), view: followerView(membersOf("b=dead"))},
			{at: sec(11), view: followerView(membersOf("b=dead"))},
			{at: sec(11.1), view: followerView(membersOf("b=dead")), want: []action{rejoin{[]string{"b:7946"}}}},
		}},
		{"not this node, nor a member without an address", []policyStep{
			{at: sec(6), view: followerView([]membership.Member{
				gossipMember(selfID, membership.StateDead),
				{Meta: membership.Meta{ID: "b"}, State: membership.StateDead},
			})},
		}},
	})
}

func TestPolicySavesSeedsWhenLivePeersChange(t *testing.T) {
	save := func(addrs ...string) []action { return []action{saveSeeds{addrs}} }
	playPolicy(t, []action{saveSeeds{}}, []policyScenario{
		{"the live peers' addresses, sorted, when they change", []policyStep{
			{at: sec(1), view: followerView(membersOf("c=alive", "b=alive")), want: save("b:7946", "c:7946")},
			{at: sec(2), view: followerView(membersOf("b=alive", "c=alive"))},
			{at: sec(3), view: followerView(membersOf("b=alive", "c=dead")), want: save("b:7946")},
			{at: sec(4), view: followerView(membersOf("b=alive", "c=draining")), want: save("b:7946", "c:7946")},
			{at: sec(5), view: followerView(membersOf("b=suspect", "c=draining"))},
			{at: sec(6), view: followerView(membersOf("b=dead", "c=left"))}, // none: keep the last
			{at: sec(7), view: followerView(membersOf("b=alive", "c=left")), want: save("b:7946")},
		}},
		{"a failed save is tried again", []policyStep{
			{at: sec(1), view: followerView(membersOf("b=alive")), want: save("b:7946"), saveFail: true},
			{at: sec(2), view: followerView(membersOf("b=alive")), want: save("b:7946")},
			{at: sec(3), view: followerView(membersOf("b=alive"))},
		}},
		{"not this node, nor a member without an address", []policyStep{
			{at: sec(1), view: followerView([]membership.Member{
				gossipMember(selfID, membership.StateAlive),
				{Meta: membership.Meta{ID: "b"}, State: membership.StateAlive},
			})},
		}},
	})
}

func TestPolicyLeaderReconcilesEveryTick(t *testing.T) {
	m := membersOf("b=alive", "c=dead")
	playPolicy(t, []action{reconcile{}}, []policyScenario{
		{"leader", []policyStep{
			{at: sec(1), view: leaderView(m), want: []action{reconcile{m}}},
			{at: sec(2), view: leaderView(m), want: []action{reconcile{m}}},
		}},
		{"follower", []policyStep{
			{at: sec(1), view: followerView(m)},
		}},
	})
}

// TestPolicyRaftGetsOnlyProvenPeers: the leader's placement sees a live
// peer only once it answered at the cluster address it gossips; every
// node asks the live peers that have not yet.
func TestPolicyRaftGetsOnlyProvenPeers(t *testing.T) {
	m := membersOf("b=alive", "c=alive", "d=dead", "e=suspect", "f=left")
	proven := map[string]string{selfID: "a:7000", "b": "b:7000", "e": "elsewhere:7000"}
	leader := clusterView{members: m, leading: true, leader: selfID, servers: []string{selfID}, proven: proven}
	follower := clusterView{members: m, leader: "b", servers: []string{selfID}, proven: proven}
	placed := []membership.Member{m[0], m[1], m[3], m[5]} // a, b, and d and f to be seen gone
	asks := []action{prove{"c", "c:7000"}, prove{"e", "e:7000"}}
	playPolicy(t, []action{reconcile{}, prove{}}, []policyScenario{
		{"leader", []policyStep{{at: sec(1), view: leader, want: append([]action{reconcile{placed}}, asks...)}}},
		{"follower", []policyStep{{at: sec(1), view: follower, want: asks}}},
	})
}

// TestPolicyActionOrder pins the order of one tick's actions, which the
// control loop performs one after the other.
func TestPolicyActionOrder(t *testing.T) {
	p := newClusterPolicy(selfID, policyStart)
	p.known = map[string]membership.State{selfID: membership.StateAlive, "b": membership.StateDead, "c": membership.StateAlive, "d": membership.StateAlive, "e": membership.StateLeft}
	p.wasServer["x"] = true
	p.straySince["x"] = policyStart.Add(sec(1))
	m := membersOf("b=alive", "c=draining", "d=dead", "e=left")
	v := leaderView(m)
	v.now, v.named = policyStart.Add(sec(20)), []string{"x"}
	want := []action{
		saveSeeds{[]string{"b:7946", "c:7946"}},
		rejoin{[]string{"d:7946"}},
		reconcile{m},
		nodeUp{"b"},
		rebackup{"c"},
		nodeDown{"d", membership.StateDead},
		nodeFailed{node: "d"},
		nodeFailed{node: "x", stray: true},
		nodeFailed{node: "d"}, nodeFailed{node: "e"},
		sweep{[]string{"d", "e"}},
	}
	if got := p.decide(v); !reflect.DeepEqual(got, want) {
		t.Fatalf("\n got %#v\nwant %#v", got, want)
	}
}

// TestPolicyInvariants drives the policy with random views and checks what
// must hold whatever it remembers: only the leader fails, sweeps or
// reconciles; no action is about this node; clients are shed only when no
// leader is known and this node is not draining.
func TestPolicyInvariants(t *testing.T) {
	states := []membership.State{membership.StateAlive, membership.StateSuspect, membership.StateDead, membership.StateLeft, membership.StateDraining}
	ids := []string{selfID, "b", "c", "d", "x"}
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 1))
		p := newClusterPolicy(selfID, policyStart)
		now := policyStart
		for range 200 {
			now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
			v := clusterView{now: now, leading: r.IntN(2) == 0, ownerless: r.IntN(3) == 0, draining: r.IntN(5) == 0}
			if r.IntN(3) > 0 {
				v.leader = ids[r.IntN(3)]
			}
			for _, id := range ids {
				if r.IntN(4) > 0 {
					v.members = append(v.members, gossipMember(id, states[r.IntN(len(states))]))
				}
				if r.IntN(3) == 0 {
					v.named = append(v.named, id)
				}
				if r.IntN(2) == 0 {
					v.servers = append(v.servers, id)
				}
			}
			for _, a := range p.decide(v) {
				var node string
				leaderOnly := false
				switch a := a.(type) {
				case nodeUp:
					node = a.node
				case prove:
					node = a.node
				case rebackup:
					node = a.node
				case nodeDown:
					node = a.node
				case nodeFailed:
					node, leaderOnly = a.node, true
				case sweep, reconcile:
					leaderOnly = true
				case shedClients:
					if v.leader != "" || v.draining || a.leaderless <= cutOffAfter {
						t.Fatalf("seed %d: %#v with leader %q, draining %v", seed, a, v.leader, v.draining)
					}
				case saveSeeds:
					p.seedsSaved(a.addrs)
				}
				if node == selfID || leaderOnly && !v.leading {
					t.Fatalf("seed %d: %#v (leading %v)", seed, a, v.leading)
				}
			}
		}
	}
}
