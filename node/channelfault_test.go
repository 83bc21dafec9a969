package node_test

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/protocol"
)

func channelInfo(t *testing.T, c *clustertest.Cluster, via, channel string) protocol.ChannelInfo {
	t.Helper()
	st, body := c.Get(via, "/v1/channels/"+channel, clustertest.AdminKey)
	var info protocol.ChannelInfo
	if st != http.StatusOK || json.Unmarshal(body, &info) != nil {
		t.Fatalf("channel info: %d %s", st, body)
	}
	return info
}

// G7 through faults: subscribers on all three nodes and a continuous
// publisher (the shared fault workload, internal/faultload); the
// channel's owner, its backup, or the Raft leader is killed (in process:
// the node stops dead, no drain), or the owner is cut off from the
// others. Every subscriber receives every acknowledged message exactly
// once, in seq order, resuming by seq on another node when its own is the
// one that failed.
func TestChannelGuaranteesThroughFaults(t *testing.T) {
	for _, fault := range []string{"owner", "backup", "leader", "partition"} {
		t.Run(fault, func(t *testing.T) {
			c := clustertest.Start(t, 3, clustertest.Options{Faults: fault == "partition"})
			ids := c.IDs()
			const ch = "orders:book"
			// Created through n2, the channel is owned there, away from
			// the leader (n1 bootstrapped).
			// Publishers use the nodes on the majority side: a cut-off
			// node is up, but its clients are the ones that fail over.
			var cut atomic.Pointer[string]
			fc := contract(c)
			fc.Live = func() []string {
				if v := cut.Load(); v != nil {
					return without(c.Running(), *v)
				}
				return c.Running()
			}
			w := faultload.StartChannel(t, fc, faultload.ChannelOptions{Channel: ch, CreateVia: ids[1], Placement: ids})
			w.WaitAcked(50, 15*time.Second)
			info := channelInfo(t, c, ids[0], ch)
			victim := map[string]string{"owner": info.Owner, "backup": info.Backup, "leader": c.WaitLeader(), "partition": info.Owner}[fault]
			t.Logf("channel owner %s backup %s; fault %s at %s", info.Owner, info.Backup, fault, victim)
			if fault == "partition" {
				cut.Store(&victim)
				c.Isolate(victim)
			} else {
				c.Kill(victim)
			}
			w.WaitAcked(50, 30*time.Second)
			if fault == "partition" {
				c.Heal()
			}
			top := w.Check()
			t.Logf("every subscriber has 1..%d once, in order", top)
		})
	}
}
