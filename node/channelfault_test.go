package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/protocol"
)

// channelSubscriber is an SDK client subscribed to one channel, recording
// what its subscription delivers.
type channelSubscriber struct {
	name string
	cl   *client.Client
	sub  *client.Subscription

	mu   sync.Mutex
	seqs []uint64
	lost []error
	done chan struct{}
}

func newChannelSubscriber(t *testing.T, c *clustertest.Cluster, user, channel string, endpoints []string) *channelSubscriber {
	t.Helper()
	cl := subscribe(t, c, user, endpoints)
	from := uint64(0)
	sub, err := cl.Subscribe(channel, client.SubscribeOptions{From: &from, Presence: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &channelSubscriber{name: user, cl: cl, sub: sub, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for m := range sub.Messages() {
			s.mu.Lock()
			s.seqs = append(s.seqs, m.Seq)
			s.mu.Unlock()
		}
	}()
	go func() {
		for e := range sub.Events() {
			if e.Kind == client.SubContinuityLost || e.Kind == client.SubError && e.Code == "sequence_anomaly" {
				s.mu.Lock()
				s.lost = append(s.lost, fmt.Errorf("%d %s: %v", e.Kind, e.Code, e.Err))
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *channelSubscriber) received() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}

// channelPublisher publishes to a channel through the live nodes, with
// ids and retries, and records the acknowledged seqs.
type channelPublisher struct {
	c       *clustertest.Cluster
	channel string
	stop    chan struct{}
	done    chan struct{}

	mu    sync.Mutex
	acked []uint64
	avoid map[string]bool
}

func startChannelPublisher(t *testing.T, c *clustertest.Cluster, channel string) *channelPublisher {
	p := &channelPublisher{c: c, channel: channel, stop: make(chan struct{}), done: make(chan struct{}), avoid: map[string]bool{}}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			id := client.NewID()
			deadline := time.Now().Add(20 * time.Second)
			for {
				via := p.via(i)
				st, pr, body := c.PublishChannel(via, channel, map[string]int{"i": i}, id)
				if st == http.StatusOK {
					if pr.Channel != channel || pr.ID != id {
						t.Errorf("publish answered %s", body)
					}
					p.mu.Lock()
					p.acked = append(p.acked, pr.Seq)
					p.mu.Unlock()
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("publish %s still failing after 20s: %d %s", id, st, body)
					return
				}
				i++ // another node next time
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return p
}

// via picks a running node not to be avoided, round robin.
func (p *channelPublisher) via(i int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ok []string
	for _, id := range p.c.Running() {
		if !p.avoid[id] {
			ok = append(ok, id)
		}
	}
	return ok[i%len(ok)]
}

func (p *channelPublisher) avoidNode(id string) {
	p.mu.Lock()
	p.avoid[id] = true
	p.mu.Unlock()
}

func (p *channelPublisher) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func (p *channelPublisher) finish() []uint64 {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acked)
}

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
// publisher; the channel's owner, its backup, or the Raft leader is
// SIGKILLed (in process: the node stops dead, no drain), or a node is
// cut off from the others. Every subscriber receives every acknowledged
// message exactly once, in seq order, resuming by seq on another node
// when its own is the one that failed.
func TestChannelGuaranteesThroughFaults(t *testing.T) {
	for _, fault := range []string{"owner", "backup", "leader", "partition"} {
		t.Run(fault, func(t *testing.T) {
			c := clustertest.Start(t, 3, clustertest.Options{Faults: fault == "partition"})
			ids := c.IDs()
			const ch = "orders:book"
			// The channel exists (and has an owner) before anyone waits on
			// it; created through n2, it is owned there, away from the
			// leader (n1 bootstrapped).
			if st, _, body := c.PublishChannel(ids[1], ch, "first", ""); st != http.StatusOK {
				t.Fatalf("first publish: %d %s", st, body)
			}
			subs := make([]*channelSubscriber, len(ids))
			for i, id := range ids {
				eps := []string{c.ConnectURL(id)}
				for _, other := range ids {
					if other != id {
						eps = append(eps, c.ConnectURL(other))
					}
				}
				subs[i] = newChannelSubscriber(t, c, fmt.Sprintf("s%d", i), ch, eps)
			}
			pub := startChannelPublisher(t, c, ch)
			c.Eventually(15*time.Second, "50 publishes acknowledged", func() bool { return pub.ackedCount() >= 50 })

			info := channelInfo(t, c, ids[0], ch)
			victim := map[string]string{"owner": info.Owner, "backup": info.Backup, "leader": c.WaitLeader(), "partition": info.Owner}[fault]
			t.Logf("channel owner %s backup %s; fault %s at %s", info.Owner, info.Backup, fault, victim)
			pub.avoidNode(victim)
			before := pub.ackedCount()
			if fault == "partition" {
				c.Isolate(victim)
			} else {
				c.Kill(victim)
			}
			c.Eventually(30*time.Second, "50 more publishes acknowledged", func() bool { return pub.ackedCount() >= before+50 })
			if fault == "partition" {
				c.Heal()
			}
			acked := pub.finish()
			top := slices.Max(acked)

			for _, s := range subs {
				c.Eventually(30*time.Second, s.name+" received up to seq "+fmt.Sprint(top), func() bool {
					got := s.received()
					return len(got) > 0 && got[len(got)-1] >= top
				})
				got := s.received()
				for i, seq := range got {
					if seq != uint64(i)+1 {
						t.Fatalf("%s: message %d has seq %d: not every seq once in order (around %v)", s.name, i, seq, got[max(0, i-3):min(len(got), i+3)])
					}
				}
				s.mu.Lock()
				lost := slices.Clone(s.lost)
				s.mu.Unlock()
				if len(lost) > 0 {
					t.Fatalf("%s: subscription reported %v", s.name, lost)
				}
			}
			// Every acknowledged seq is one the subscribers had: they hold
			// 1..top without gaps, and every ack is at most top.
			t.Logf("%d publishes acknowledged, top seq %d, every subscriber has 1..%d once in order", len(acked), top, top)
			// Presence is answered again once the cluster settled: every
			// subscriber is in it (the victim's too, reconnected
			// elsewhere or healed).
			for _, s := range subs {
				c.Eventually(15*time.Second, s.name+" sees every subscriber present", func() bool {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					ms, err := s.sub.Presence(ctx)
					return err == nil && len(ms) == len(subs)
				})
			}
		})
	}
}
