package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboard/switchboard/internal/clustertest"
)

func TestSmokeThreeNodes(t *testing.T) {
	c := clustertest.Start(t, 3)
	ws, _, err := websocket.DefaultDialer.Dial(c.ConnectURL("n2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	hello, _ := json.Marshal(map[string]any{"type": "hello", "token": c.Token("alice"), "resume": map[string]any{"seq": 0}})
	if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, w, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("welcome: %s", w)
	for i := 1; i <= 20; i++ {
		st, pr, body := c.Publish("n1", "alice", map[string]int{"i": i}, fmt.Sprintf("m%d", i))
		if st != 200 || pr.Seq != uint64(i) {
			t.Fatalf("publish %d: %d %s", i, st, body)
		}
	}
	for i := 1; i <= 20; i++ {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Type string
			Seq  uint64
		}
		json.Unmarshal(m, &f)
		if f.Type != "message" || f.Seq != uint64(i) {
			t.Fatalf("frame %d: %s", i, m)
		}
	}
	for _, id := range c.IDs() {
		si, st := c.Session(id, "alice")
		if st != 200 || si.Owner != "n2" {
			t.Fatalf("session on %s: %d %+v", id, st, si)
		}
	}
	ci, err := c.Cluster("n3")
	t.Logf("cluster: %+v %v", ci, err)
}

// The only server of a cluster acknowledges a batch with its own copy
// (no backup exists): every user's messages get consecutive seqs in
// request order, a repeated id is stored once, and each connection
// receives exactly its user's messages in order.
func TestSingleServerBatchPublish(t *testing.T) {
	c := clustertest.Start(t, 1)
	users := []string{"ann", "bob", "cy"}
	conns := map[string]*websocket.Conn{}
	for _, u := range users {
		ws, _, err := websocket.DefaultDialer.Dial(c.ConnectURL("n1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		hello, _ := json.Marshal(map[string]any{"type": "hello", "token": c.Token(u)})
		if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, w, err := ws.ReadMessage(); err != nil || !json.Valid(w) {
			t.Fatalf("welcome for %s: %v %s", u, err, w)
		}
		conns[u] = ws
	}
	const rounds = 3
	for r := range rounds {
		var msgs []map[string]any
		for i := range 10 {
			u := users[i%len(users)]
			msgs = append(msgs, map[string]any{"user": u, "id": fmt.Sprintf("%s-%d-%d", u, r, i), "data": i})
		}
		msgs = append(msgs, msgs[0]) // the same id again: stored once
		body, _ := json.Marshal(map[string]any{"messages": msgs})
		st, out := c.Do("n1", "POST", "/v1/publish/batch", clustertest.APIKey, body)
		if st != 200 {
			t.Fatalf("batch: %d %s", st, out)
		}
		var res struct {
			Results []struct {
				Seq   uint64
				Error string
			}
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != len(msgs) {
			t.Fatalf("batch answer %s: %v", out, err)
		}
		// Round r holds 4, 3 and 3 messages for ann, bob and cy.
		base := map[string]uint64{"ann": uint64(4 * r), "bob": uint64(3 * r), "cy": uint64(3 * r)}
		for i, got := range res.Results[:10] {
			u := users[i%len(users)]
			if want := base[u] + uint64(i/len(users)) + 1; got.Error != "" || got.Seq != want {
				t.Fatalf("round %d message %d (%s): %+v, want seq %d", r, i, u, got, want)
			}
		}
		if dup := res.Results[10]; dup.Seq != res.Results[0].Seq {
			t.Fatalf("repeated id got seq %d, first %d", dup.Seq, res.Results[0].Seq)
		}
	}
	for _, u := range users {
		n := map[string]uint64{"ann": 4 * rounds, "bob": 3 * rounds, "cy": 3 * rounds}[u]
		for seq := uint64(1); seq <= n; seq++ {
			_, m, err := conns[u].ReadMessage()
			if err != nil {
				t.Fatalf("%s: %v", u, err)
			}
			var f struct {
				Type string
				Seq  uint64
			}
			json.Unmarshal(m, &f)
			if f.Type == "heartbeat" {
				seq--
				continue
			}
			if f.Type != "message" || f.Seq != seq {
				t.Fatalf("%s frame %d: %s", u, seq, m)
			}
		}
	}
}
