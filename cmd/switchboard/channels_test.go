package main

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
	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/protocol"
)

// G7 with the real binary: a channel owned by n2, Go SDK subscribers
// whose first node is n1, n2 and n3, and a publisher writing through n1
// and n3 without pause. n2 is SIGKILLed. Every subscriber, the one whose
// node died included (it resumes by seq elsewhere), ends with every
// acknowledged seq exactly once, in order, and no continuity lost.
func TestChannelOwnerKilledProcesses(t *testing.T) {
	f := newFleet(t)
	ports := freePorts(t, 9)
	n1 := f.startNode("n1", "r1", "a", ports[0:3], nil)
	n2 := f.startNode("n2", "r1", "b", ports[3:6], n1)
	n3 := f.startNode("n3", "r2", "a", ports[6:9], n1)
	nodes := []*member{n1, n2, n3}
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
	}
	const ch = "orders:desk-7"
	raw, _ := json.Marshal(protocol.NewChannelPublish(ch, json.RawMessage(`"open"`), "open"))
	var first protocol.PublishResult
	eventually(t, 30*time.Second, "the channel created through n2", []*proc{n1.proc, n2.proc, n3.proc}, func() bool {
		st, _, body := request("POST", n2.base()+"/v1/publish", procAPIKey, raw)
		return st == http.StatusOK && json.Unmarshal(body, &first) == nil
	})
	if first.Node != "n2" || first.Seq != 1 {
		t.Fatalf("channel created as %+v, want seq 1 owned by n2", first)
	}

	type sub struct {
		name string
		c    *client.Client
		mu   sync.Mutex
		seqs []uint64
		lost int
	}
	subs := make([]*sub, len(nodes))
	for i, n := range nodes {
		eps := []string{n.wsURL()}
		for _, o := range nodes {
			if o != n {
				eps = append(eps, o.wsURL())
			}
		}
		s := &sub{name: fmt.Sprintf("watcher-%d", i)}
		tok, err := token.MintChannels([]byte(procTokenSecret), s.name, time.Hour, []string{"orders:*"})
		if err != nil {
			t.Fatal(err)
		}
		cfg := client.DefaultConfig()
		cfg.Endpoints, cfg.Token = eps, client.StaticToken(tok)
		cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		s.c, err = client.Dial(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.c.Close() })
		from := uint64(0)
		sb, err := s.c.Subscribe(ch, client.SubscribeOptions{From: &from})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for m := range sb.Messages() {
				s.mu.Lock()
				s.seqs = append(s.seqs, m.Seq)
				s.mu.Unlock()
			}
		}()
		go func() {
			for e := range sb.Events() {
				if e.Kind == client.SubContinuityLost {
					s.mu.Lock()
					s.lost++
					s.mu.Unlock()
				}
			}
		}()
		subs[i] = s
	}

	var (
		mu    sync.Mutex
		acked []uint64
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	go func() {
		defer close(done)
		via := []*member{n1, n3}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			body, _ := json.Marshal(protocol.NewChannelPublish(ch, json.RawMessage(fmt.Sprint(i)), fmt.Sprintf("p%d", i)))
			deadline := time.Now().Add(30 * time.Second)
			for try := 0; ; try++ {
				st, _, out := request("POST", via[(i+try)%2].base()+"/v1/publish", procAPIKey, body)
				var a protocol.PublishResult
				if st == http.StatusOK && json.Unmarshal(out, &a) == nil {
					mu.Lock()
					acked = append(acked, a.Seq)
					mu.Unlock()
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("publish p%d: still %d %s after 30s", i, st, out)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	procs := []*proc{n1.proc, n3.proc}
	eventually(t, 30*time.Second, "30 publishes acknowledged", procs, func() bool { return count() >= 30 })
	t.Log("killing n2, the channel's owner")
	n2.kill(t)
	before := count()
	eventually(t, 60*time.Second, "30 more publishes acknowledged", procs, func() bool { return count() >= before+30 })
	close(stop)
	<-done
	mu.Lock()
	top := slices.Max(acked)
	mu.Unlock()
	for _, s := range subs {
		eventually(t, 30*time.Second, s.name+" has every acknowledged message", procs, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return len(s.seqs) > 0 && s.seqs[len(s.seqs)-1] >= top
		})
		s.mu.Lock()
		for i, seq := range s.seqs {
			if seq != uint64(i)+1 {
				t.Fatalf("%s: message %d has seq %d: not 1..%d once in order", s.name, i, seq, top)
			}
		}
		if s.lost > 0 {
			t.Fatalf("%s: continuity lost %d times", s.name, s.lost)
		}
		s.mu.Unlock()
	}
	t.Logf("%d publishes acknowledged around the kill; every subscriber has 1..%d once, in order", len(acked), top)
}
