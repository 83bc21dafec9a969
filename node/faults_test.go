package node_test

import (
	"slices"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/internal/token"
)

// The fault tests run many users through one fault each, with publishers
// and subscribers going all along, and assert G1–G4 with the shared fault
// workload (internal/faultload, which the multi-process tests run too); a
// registry linearizability check (faultcheck_test.go) runs alongside.
// Three nodes, in zones r1/a, r1/b and r1/c.

const faultUsers = 30

// faultRoles starts a 3-node cluster and names its nodes by role: the
// Raft leader, and the two followers ("major", which the tests make the
// owner of most users, and "minor").
func faultRoles(t *testing.T, opts clustertest.Options) (c *clustertest.Cluster, leader, major, minor string) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault test")
	}
	if opts.Logger == nil {
		opts.Logger = clustertest.Verbose()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c = clustertest.Start(t, 3, opts)
	leader = c.WaitLeader()
	var followers []string
	for _, id := range c.IDs() {
		if id != leader {
			followers = append(followers, id)
		}
	}
	return c, leader, followers[0], followers[1]
}

// contract describes c to the fault workload as its clients and
// operators see it; publishers use the nodes still running.
func contract(c *clustertest.Cluster) faultload.Cluster {
	fc := faultload.Cluster{
		APIKey: clustertest.APIKey, AdminKey: clustertest.AdminKey, Live: c.Running, TLS: c.ClientTLS(),
		Token: func(user string) (string, error) {
			return token.MintChannels([]byte(clustertest.TokenSecret), user, time.Hour, []string{"*"})
		},
	}
	for _, id := range c.IDs() {
		fc.Nodes = append(fc.Nodes, faultload.Node{ID: id, BaseURL: c.URL(id), WSURL: c.ConnectURL(id)})
	}
	return fc
}

func without(ids []string, gone string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == gone })
}

// TestGuaranteesHoldWhenOwnerNodeIsKilled: the node owning most users
// (a follower) crashes while every user is being published to. Its
// streams are promoted at their backups or taken over by the resuming
// clients' nodes; every acknowledged message reaches its user once, in
// order, and the sessions continue.
func TestGuaranteesHoldWhenOwnerNodeIsKilled(t *testing.T) {
	ownerKilled(t, clustertest.Options{})
}

// TestGuaranteesHoldWhenOwnerNodeIsKilledWithGossipEncrypted is the same
// crash with gossip encrypted and authenticated (--gossip-key-file, two
// keys as in the middle of a rotation): failure detection, promotion and
// takeover run on encrypted gossip.
func TestGuaranteesHoldWhenOwnerNodeIsKilledWithGossipEncrypted(t *testing.T) {
	ownerKilled(t, clustertest.Options{Configure: withGossipKeys(gossipKey(1), gossipKey(2))})
}

func ownerKilled(t *testing.T, opts clustertest.Options) {
	c, leader, major, minor := faultRoles(t, opts)
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, major, major, leader, minor}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	victim, n := w.MostOwned()
	t.Logf("killing %s, owner of %d of %d users (leader %s)", victim, n, faultUsers, leader)
	w.MarkFault()
	c.Kill(victim)
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	w.CheckClientsLeft(victim)
	rc.check()
	w.Check(c.Running())
}

// TestGuaranteesHoldWhenOwnerNodeIsKilledSecured is the owner crash with
// the cluster secured: mutual TLS on the cluster port, HTTPS/WSS for the
// clients and encrypted gossip. Raft, replication, takeover and resume all
// run over TLS, failure detection over encrypted gossip.
func TestGuaranteesHoldWhenOwnerNodeIsKilledSecured(t *testing.T) {
	ownerKilled(t, clustertest.Options{ClusterTLS: true, PublicTLS: true, Configure: withGossipKeys(gossipKey(1))})
}

// TestGuaranteesHoldWhenBackupNodeIsKilled: a follower that owns no user
// but backs up about half of them crashes. Owners must pick a new backup
// (and copy the whole stream there) before acknowledging more, so a
// second failure later could not lose what was acknowledged.
func TestGuaranteesHoldWhenBackupNodeIsKilled(t *testing.T) {
	c, leader, major, minor := faultRoles(t, clustertest.Options{})
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, major, leader}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	owned, backed := w.Owners()
	if owned[minor] != 0 || backed[minor] == 0 {
		t.Fatalf("setup: %s owns %d users and backs up %d; want 0 and some", minor, owned[minor], backed[minor])
	}
	t.Logf("killing %s, backup of %d of %d users", minor, backed[minor], faultUsers)
	w.MarkFault()
	c.Kill(minor)
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	rc.check()
	w.Check(c.Running())
}

// TestGuaranteesHoldWhenLeaderIsKilled: the Raft leader, which also owns
// and backs up a third of the users, crashes. Until a new leader is
// elected no claim can commit, so its users wait; nobody loses anything.
func TestGuaranteesHoldWhenLeaderIsKilled(t *testing.T) {
	c, leader, major, minor := faultRoles(t, clustertest.Options{})
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, leader, minor}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	owned, _ := w.Owners()
	t.Logf("killing leader %s, owner of %d of %d users", leader, owned[leader], faultUsers)
	w.MarkFault()
	c.Kill(leader)
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	w.CheckClientsLeft(leader)
	if l := c.WaitLeader(); l == leader {
		t.Fatalf("killed leader %s still reported as leader", l)
	}
	rc.check()
	w.Check(c.Running())
}

// TestGuaranteesHoldWhenAZoneIsPartitionedAway cuts the zone of the node
// owning most users (one node per zone here) off from the others for 5 s,
// then heals it.
//
// What it proves, given that the harness cuts Raft and peer links but not
// gossip: membership keeps calling the cut-off node alive, so no
// node-failed command and no proactive promotion help. Publishes through
// the majority side find the owner unreachable and take its streams over
// from their backups (on the majority side); publishes through the
// cut-off node cannot be replicated and are retried elsewhere. The
// cut-off node's clients keep getting heartbeats and so stay connected,
// receiving nothing new; after the heal that node applies the claims,
// seals its stale streams and sends the clients (4010) to resume at the
// new owners. Every acknowledged message must still arrive exactly once,
// in order, and no message appended on the minority side may ever become
// visible under a seq the majority side reused.
func TestGuaranteesHoldWhenAZoneIsPartitionedAway(t *testing.T) {
	c, leader, major, minor := faultRoles(t, clustertest.Options{Faults: true})
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, major, major, leader, minor}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	victim, n := w.MostOwned()
	t.Logf("partitioning %s (zone %s/%s, owner of %d of %d users) away for 5s; leader %s",
		victim, c.Config(victim).Region, c.Config(victim).Zone, n, faultUsers, leader)
	w.MarkFault()
	c.Partition([]string{victim}, without(c.IDs(), victim))
	time.Sleep(5 * time.Second)
	c.Heal()
	t.Logf("healed")
	// Its clients need not reconnect: a stream nobody published to
	// through the majority side during the cut stays where it was.
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	rc.check()
	w.Check(c.Running())
}

// TestGuaranteesHoldThroughDrain drains the node owning most users while
// everything runs: its streams are handed over (backup first), its
// clients told to reconnect (4010) and resumed with replay.
func TestGuaranteesHoldThroughDrain(t *testing.T) {
	c, leader, major, minor := faultRoles(t, clustertest.Options{})
	w := faultload.Start(t, contract(c), faultload.Options{Users: faultUsers, Placement: []string{major, major, major, leader, minor}})
	rc := startRegistryCheck(t, c, 3)
	w.WaitAcked(20, 15*time.Second)
	w.Snapshot(leader)
	victim, n := w.MostOwned()
	t.Logf("draining %s, owner of %d of %d users", victim, n, faultUsers)
	w.MarkFault()
	start := time.Now()
	c.Drain(victim)
	t.Logf("drain took %v", time.Since(start))
	w.RunThrough(3*time.Second, 10, 15*time.Second)
	w.CheckClientsLeft(victim)
	rc.check()
	w.Check(c.Running())
}
