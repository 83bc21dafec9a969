package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/faultload"
	"github.com/switchboard/switchboard/protocol"
)

// G7 with the real binary, through the shared fault workload
// (internal/faultload): a channel owned by n2, Go SDK subscribers whose
// first node is n1, n2 and n3, and a publisher writing through the live
// nodes without pause. n2 is SIGKILLed. Every subscriber, the one whose
// node died included (it resumes by seq elsewhere), ends with every
// acknowledged seq exactly once, in order, and no continuity lost.
func TestChannelOwnerKilledProcesses(t *testing.T) {
	f := newFleet(t)
	n1, n2, n3 := f.startThree()
	nodes := []*member{n1, n2, n3}
	for _, n := range nodes {
		waitReady(t, n.base(), n.proc)
	}
	const ch = "orders:desk-7"
	// The channel is created through n2, its owner; the publisher writes
	// through n1 and n3 only once n2 is gone.
	var mu sync.Mutex
	dead := ""
	live := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		for _, n := range nodes {
			if n.id != dead {
				ids = append(ids, n.id)
			}
		}
		return ids
	}
	w := faultload.StartChannel(t, contract(live, nodes...), faultload.ChannelOptions{Channel: ch, CreateVia: "n2", Placement: []string{"n1", "n2", "n3"}})
	w.WaitAcked(30, 30*time.Second)
	st, _, body := request("GET", n1.base()+"/v1/channels/"+ch, procAdminKey, nil)
	var info protocol.ChannelInfo
	if st != http.StatusOK || json.Unmarshal(body, &info) != nil || info.Owner != "n2" {
		t.Fatalf("channel info: %d %s, want owner n2", st, body)
	}
	t.Log("killing n2, the channel's owner")
	mu.Lock()
	dead = "n2"
	mu.Unlock()
	n2.kill(t)
	w.WaitAcked(30, 60*time.Second)
	top := w.Check()
	t.Logf("every subscriber has 1..%d once, in order", top)
}
