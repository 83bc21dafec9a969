package node_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/internal/faultload"
)

// TestNoAckedMessageLostWhenOwnerCrashes: a user's owner node is killed
// while publishers keep publishing to it (same id on retry); the client
// resumes elsewhere and receives every acknowledged message exactly once,
// in order, with no gaps, and the registry has moved the stream to a live
// node under a newer epoch (faultload's Check asserts all of it).
func TestNoAckedMessageLostWhenOwnerCrashes(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Logger: clustertest.Verbose()})
	w := faultload.Start(t, contract(c), faultload.Options{Users: 1, Placement: []string{"n2"}, Interval: 3 * time.Millisecond})
	w.WaitAcked(100, 30*time.Second)
	w.Snapshot("n1")
	owner, _ := w.MostOwned()
	t.Logf("killing %s, the owner", owner)
	w.MarkFault()
	c.Kill(owner)
	w.RunThrough(0, 200, 30*time.Second)
	w.Check(c.Running())
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
