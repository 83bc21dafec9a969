package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/protocol"
)

// presenceEvent is a join or leave frame a connection received, and when.
type presenceEvent struct {
	to, typ, channel, user string
	at                     time.Time
}

// eventLog collects the join and leave frames of connections that read
// on in the background.
type eventLog struct {
	mu  sync.Mutex
	evs []presenceEvent
}

// drain reads cc's frames until its connection closes (answering
// WebSocket pings on the way, so the node keeps it), logging its join and
// leave frames. cc must not be read from elsewhere afterwards.
func (l *eventLog) drain(cc *chanClient) {
	for _, f := range cc.events { // set aside before draining began
		l.add(presenceEvent{to: cc.user, typ: f.Type, channel: f.Channel, user: f.User, at: time.Now()})
	}
	cc.events = nil
	_ = cc.ws.SetReadDeadline(time.Time{})
	go func() {
		for {
			_, b, err := cc.ws.ReadMessage()
			if err != nil {
				return
			}
			var f chanFrame
			if json.Unmarshal(b, &f) == nil && (f.Type == "join" || f.Type == "leave") {
				l.add(presenceEvent{to: cc.user, typ: f.Type, channel: f.Channel, user: f.User, at: time.Now()})
			}
		}
	}()
}

func (l *eventLog) add(e presenceEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

// since returns the events logged from the i-th on.
func (l *eventLog) since(i int) []presenceEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]presenceEvent(nil), l.evs[min(i, len(l.evs)):]...)
}

func (l *eventLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.evs)
}

// presenceOf reads channel's presence set through node id's API.
func presenceOf(t *testing.T, c *clustertest.Cluster, id, channel string) protocol.Presence {
	t.Helper()
	st, body := c.Get(id, "/v1/channels/"+channel+"/presence", clustertest.APIKey)
	var p protocol.Presence
	if st != http.StatusOK || json.Unmarshal(body, &p) != nil {
		t.Fatalf("presence of %s via %s: %d %s", channel, id, st, body)
	}
	return p
}

// leaveMargin is what the dead-node test allows beyond 2.5 heartbeat
// intervals, for scheduling on a loaded machine (and -race): the timers
// involved fire late, never early.
const leaveMargin = 300 * time.Millisecond

// A node that dies takes its members with it within 2.5 heartbeat
// intervals of its death (DESIGN §3a), long before gossip declares it
// dead: the channel's owner, elsewhere, stops hearing its presence
// reports, their lease runs out, and the leaves reach a subscriber on a
// third node. A user also connected to a live node stays.
func TestChannelMembersOfADeadNodeLeaveWithin2_5Heartbeats(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Faults: true})
	ids := c.IDs()
	heartbeat := c.Config(ids[0]).Gateway.Heartbeat
	const ch = "room:lease"
	publishChannel(t, c, ids[0], ch, 1) // owned by n1
	if info := channelInfo(t, c, ids[0], ch); info.Owner != ids[0] {
		t.Fatalf("channel owned by %s, want %s", info.Owner, ids[0])
	}
	var evs eventLog
	watcher := dialChannels(t, c, ids[1], "watcher", protocol.Subscription{Channel: ch, JoinLeave: true, Presence: true})
	watcher.expect("subscribed", ch)
	member := func(id, user string) {
		cc := dialChannels(t, c, id, user, protocol.Subscription{Channel: ch, Presence: true})
		cc.expect("subscribed", ch)
		evs.drain(cc)
	}
	member(ids[1], "both")
	doomed := []string{"d1", "d2", "d3"}
	for _, u := range append(doomed, "both") {
		member(ids[2], u)
	}
	for seen := map[string]bool{}; len(seen) < 4; {
		if f := watcher.expect("join", ch); f.User != "watcher" {
			seen[f.User] = true
		}
	}
	evs.drain(watcher)
	from := evs.len()

	killed := time.Now()
	c.KillAbruptly(ids[2])
	left := map[string]time.Duration{}
	deadline := time.Now().Add(10 * time.Second)
	for len(left) < len(doomed) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s only %v left", left)
		}
		for _, e := range evs.since(from) {
			from++
			if e.to != "watcher" {
				continue
			}
			if e.typ != "leave" || e.user == "both" || e.user == "watcher" {
				t.Fatalf("after the kill, watcher got %s of %s", e.typ, e.user)
			}
			left[e.user] = e.at.Sub(killed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	limit := heartbeat*5/2 + leaveMargin
	for _, u := range doomed {
		t.Logf("%s left %v after the kill (heartbeat %v)", u, left[u].Round(time.Millisecond), heartbeat)
		if left[u] > limit {
			t.Errorf("%s left %v after the kill, want within 2.5 heartbeat intervals (%v, with %v for scheduling)", u, left[u], heartbeat*5/2, leaveMargin)
		}
	}
	p := presenceOf(t, c, ids[0], ch)
	if p.Count != 2 || p.Members[0] != (protocol.Member{User: "both", Conns: 1}) || p.Members[1].User != "watcher" {
		t.Fatalf("presence after the kill: %+v", p)
	}
}

// On a live cluster, presence does not flap: with members on every node
// of two channels owned by different nodes, and messages flowing, no
// join or leave is sent for ten seconds (twenty report rounds of each
// node) once everyone has joined.
func TestChannelPresenceDoesNotFlapOnALiveCluster(t *testing.T) {
	c := clustertest.Start(t, 3)
	ids := c.IDs()
	channels := []string{"room:a", "room:b"}
	publishChannel(t, c, ids[0], channels[0], 1) // owned by n1
	publishChannel(t, c, ids[1], channels[1], 1) // owned by n2
	var evs eventLog
	var users []string
	for _, id := range ids {
		for i := range 3 {
			user := fmt.Sprintf("%s-u%d", id, i)
			users = append(users, user)
			var subs []protocol.Subscription
			for _, ch := range channels {
				subs = append(subs, protocol.Subscription{Channel: ch, Presence: true, JoinLeave: true})
			}
			cc := dialChannels(t, c, id, user, subs...)
			for _, ch := range channels {
				cc.expect("subscribed", ch)
			}
			evs.drain(cc)
		}
	}
	for _, ch := range channels {
		c.Eventually(10*time.Second, "everyone present in "+ch, func() bool {
			return presenceOf(t, c, ids[2], ch).Count == len(users)
		})
	}
	time.Sleep(time.Second) // the last joins' events on their way
	from := evs.len()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // light traffic, published on the node that owns neither
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			c.PublishChannel(ids[2], channels[i%2], map[string]int{"i": i}, "")
		}
	}()
	time.Sleep(10 * time.Second)
	close(stop)
	wg.Wait()
	for _, e := range evs.since(from) {
		t.Errorf("%s got a spurious %s of %s on %s", e.to, e.typ, e.user, e.channel)
	}
	for _, ch := range channels {
		if p := presenceOf(t, c, ids[0], ch); p.Count != len(users) {
			t.Errorf("presence of %s after 10s: %+v", ch, p)
		}
	}
}
