package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

// ParseMessage must agree with encoding/json on every frame it accepts.
func checkDecodeMessage(t *testing.T, b []byte) bool {
	t.Helper()
	m, ok := ParseMessage(b)
	if !ok {
		return false
	}
	var f Message
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("fast path took %q, encoding/json refuses it: %v", b, err)
	}
	if f.Type != TypeMessage || f.Channel != m.Channel || f.Seq != m.Seq || f.ID != m.ID || f.TS != m.TS || !bytes.Equal(f.Data, m.Data) {
		t.Fatalf("fast path read %q as %+v; encoding/json: %+v", b, m, f)
	}
	return true
}

func TestParseMessage(t *testing.T) {
	frame := func(seq uint64, id string, ts int64, data string) []byte {
		return AppendMessage(nil, seq, id, ts, json.RawMessage(data))
	}
	fast := [][]byte{
		frame(1, "m1", 1700000000000, `{"order":42}`),
		frame(1<<64-1, "", -5, `"x"`),
		frame(7, "a/b c", 0, `[1,2,{"a":null}]`),
		frame(7, "id", 1, `null`),
	}
	for _, b := range fast {
		if !checkDecodeMessage(t, b) {
			t.Errorf("fast path refused a frame a node writes: %s", b)
		}
	}
	slow := []string{
		string(frame(7, `quote"d`, 1, `1`)),
		string(frame(7, "é", 1, `1`)),
		`{"type":"message","seq":007,"id":"a","ts":1,"data":1}`,
		`{"type":"message","seq":-1,"id":"a","ts":1,"data":1}`,
		`{"type":"message","seq":99999999999999999999,"id":"a","ts":1,"data":1}`,
		`{"type":"message","seq":1,"id":"a","ts":1,"data": 1}`,
		`{"type":"message","seq":1,"id":"a","ts":1,"data":1,"type":"welcome"}`,
		`{"type":"message","seq":1,"id":"a","ts":1,"data":{"a":}`,
		`{"type":"message","seq":1,"id":"a","ts":1,"data":}`,
		`{"type":"welcome","seq":1}`,
		`{"type":"message","seq":1,"ts":1,"id":"a","data":1}`,
	}
	for _, s := range slow {
		if checkDecodeMessage(t, []byte(s)) {
			t.Errorf("fast path took %s; it should leave it to encoding/json", s)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"type":"message","seq":1,"id":"m","ts":2,"data":{"a":[1,"b"]}}`))
	f.Add([]byte(`{"type":"message","seq":1,"id":"m","ts":2,"data":1}}`))
	f.Add([]byte(`{"type":"message","seq":0,"id":"","ts":-0,"data":"\u00e9"}`))
	f.Add([]byte(`{"type":"message","channel":"ticker:BTC","seq":1,"id":"m","ts":2,"data":{"px":1}}`))
	f.Add([]byte(`{"type":"message","channel":"a\\"b","seq":1,"id":"m","ts":2,"data":1}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodeMessage(t, b) })
}

// BenchmarkParseMessage decodes a message frame as the SDK receives it.
func BenchmarkParseMessage(b *testing.B) {
	in := AppendMessage(nil, 123456789, "pub-7f3a9c1e", 1700000000123,
		json.RawMessage(`{"order":"o-123456","side":"buy","px":"101.25","qty":"3","status":"filled"}`))
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, ok := ParseMessage(in); !ok {
			b.Fatal("not decoded")
		}
	}
}
