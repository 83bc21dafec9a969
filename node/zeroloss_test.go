package node_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/clustertest"
)

// TestNoAckedMessageLostWhenOwnerCrashes: a user's owner node is killed
// while a publisher keeps publishing (same id on retry); the client
// resumes elsewhere and receives every acknowledged message exactly once,
// in order, with no gaps.
func TestNoAckedMessageLostWhenOwnerCrashes(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Logger: clustertest.Verbose()})
	cfg := client.DefaultConfig()
	cfg.Logger = clustertest.Verbose()
	cfg.Endpoints = []string{c.ConnectURL("n2"), c.ConnectURL("n1"), c.ConnectURL("n3")}
	cfg.Token = client.StaticToken(c.Token("trader"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	go func() {
		for e := range cl.Events() {
			t.Logf("%s event %v node=%s err=%v", time.Now().Format("15:04:05.000"), e.Kind, cl.Node(), e.Err)
		}
	}()

	var mu sync.Mutex
	acked := map[uint64]string{} // seq → id
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("m%d", i)
			deadline := time.Now().Add(20 * time.Second)
			for {
				st, pr, body := c.Publish("n1", "trader", map[string]int{"i": i}, id)
				if st == http.StatusOK {
					mu.Lock()
					if prev, ok := acked[pr.Seq]; ok && prev != id {
						t.Errorf("seq %d acked for %s and %s", pr.Seq, prev, id)
					}
					acked[pr.Seq] = id
					mu.Unlock()
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("publish %s never accepted: %d %s", id, st, body)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	got := []client.Message{}
	recv := func(n int) {
		for len(got) < n {
			select {
			case m := <-cl.Messages():
				got = append(got, m)
			case <-ctx.Done():
				t.Fatalf("received %d of %d", len(got), n)
			}
		}
	}
	recv(100)
	si, _ := c.Session("n1", "trader")
	t.Logf("before kill: %+v", si)
	t.Logf("%s kill", time.Now().Format("15:04:05.000"))
	c.Kill(si.Owner)
	killed := time.Now()
	t.Logf("%s killed", time.Now().Format("15:04:05.000"))
	recv(len(got) + 1)
	t.Logf("first message after kill in %v", time.Since(killed))
	recv(300)
	close(stop)
	wg.Wait()
	mu.Lock()
	maxAcked := uint64(0)
	for s := range acked {
		maxAcked = max(maxAcked, s)
	}
	mu.Unlock()
	recv(int(maxAcked))
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d (gap or dup)", i, m.Seq)
		}
		if id, ok := acked[m.Seq]; ok && id != m.ID {
			t.Fatalf("seq %d: got id %s, acked id %s", m.Seq, m.ID, id)
		}
	}
	for s := uint64(1); s <= maxAcked; s++ {
		if _, ok := acked[s]; !ok {
			t.Logf("seq %d was never acked (publisher retried onto another seq?)", s)
		}
	}
	si2, _ := c.Session("n1", "trader")
	t.Logf("after: %+v; received %d, acked %d", si2, len(got), len(acked))
	if si2.Epoch <= si.Epoch || si2.Owner == si.Owner {
		t.Fatalf("registry did not move: before %+v after %+v", si, si2)
	}
}

// TestDrainHandsStreamsOverWithoutLoss: draining the owner moves its
// streams to other nodes; the client is told 4010, resumes elsewhere with
// replay, and receives every acknowledged message exactly once, in order.
func TestDrainHandsStreamsOverWithoutLoss(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Logger: clustertest.Verbose()})
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{c.ConnectURL("n2"), c.ConnectURL("n1"), c.ConnectURL("n3")}
	cfg.Token = client.StaticToken(c.Token("trader"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 1; i <= 50; i++ {
		if st, _, body := c.Publish("n1", "trader", i, fmt.Sprintf("d%d", i)); st != http.StatusOK {
			t.Fatalf("publish: %d %s", st, body)
		}
	}
	si, _ := c.Session("n1", "trader")
	c.Drain(si.Owner)
	for i := 51; i <= 100; i++ {
		if st, _, body := c.Publish("n1", "trader", i, fmt.Sprintf("d%d", i)); st != http.StatusOK {
			t.Fatalf("publish after drain: %d %s", st, body)
		}
	}
	for want := uint64(1); want <= 100; want++ {
		select {
		case m := <-cl.Messages():
			if m.Seq != want {
				t.Fatalf("got seq %d, want %d", m.Seq, want)
			}
		case <-ctx.Done():
			t.Fatalf("timed out waiting for seq %d", want)
		}
	}
	si2, _ := c.Session("n1", "trader")
	if si2.Owner == si.Owner || si2.Session != si.Session || si2.Epoch <= si.Epoch {
		t.Fatalf("drain did not hand over the session: before %+v after %+v", si, si2)
	}
}
