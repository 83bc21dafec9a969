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
