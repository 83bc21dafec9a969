package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeClientFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ClientFrame
		wantErr bool
	}{
		{name: "hello with token and resume", in: `{"type":"hello","token":"t","resume":{"session":"s","seq":7}}`,
			want: ClientFrame{Type: TypeHello, Token: "t", Resume: &Resume{Session: "s", Seq: 7}}},
		{name: "hello first connect", in: `{"type":"hello","resume":{"seq":0}}`,
			want: ClientFrame{Type: TypeHello, Resume: &Resume{}}},
		{name: "hello bare", in: `{"type":"hello"}`, want: ClientFrame{Type: TypeHello}},
		{name: "ping number id", in: `{"type":"ping","id":12}`, want: ClientFrame{Type: TypePing, ID: json.RawMessage(`12`)}},
		{name: "ping object id kept verbatim", in: `{"type":"ping","id":{"a": 1}}`, want: ClientFrame{Type: TypePing, ID: json.RawMessage(`{"a": 1}`)}},
		{name: "ping without id", in: `{"type":"ping"}`, want: ClientFrame{Type: TypePing}},
		{name: "ack", in: `{"type":"ack","seq":18446744073709551615}`, want: ClientFrame{Type: TypeAck, Seq: 1<<64 - 1}},
		{name: "refresh", in: `{"type":"refresh","token":"t2"}`, want: ClientFrame{Type: TypeRefresh, Token: "t2"}},
		{name: "refresh without token (refused by the gateway, not the decoder)", in: `{"type":"refresh"}`, want: ClientFrame{Type: TypeRefresh}},
		{name: "unknown fields ignored", in: `{"type":"ack","seq":1,"extra":[1]}`, want: ClientFrame{Type: TypeAck, Seq: 1}},
		{name: "empty", in: ``, wantErr: true},
		{name: "truncated", in: `{"type":"hello"`, wantErr: true},
		{name: "trailing garbage", in: `{"type":"hello"} x`, wantErr: true},
		{name: "array", in: `[]`, wantErr: true},
		{name: "null", in: `null`, wantErr: true},
		{name: "string", in: `"hello"`, wantErr: true},
		{name: "missing type", in: `{"seq":1}`, wantErr: true},
		{name: "empty type", in: `{"type":""}`, wantErr: true},
		{name: "type not a string", in: `{"type":1}`, wantErr: true},
		{name: "unknown type", in: `{"type":"welcome"}`, wantErr: true},
		{name: "negative seq", in: `{"type":"ack","seq":-1}`, wantErr: true},
		{name: "fractional seq", in: `{"type":"ack","seq":1.5}`, wantErr: true},
		{name: "seq overflow", in: `{"type":"ack","seq":18446744073709551616}`, wantErr: true},
		{name: "resume not an object", in: `{"type":"hello","resume":5}`, wantErr: true},
		{name: "token not a string", in: `{"type":"hello","token":{}}`, wantErr: true},
		{name: "refresh token not a string", in: `{"type":"refresh","token":7}`, wantErr: true},
		{name: "refreshed is a server frame", in: `{"type":"refreshed","exp":1}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeClientFrame([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrBadFrame) {
					t.Fatalf("err = %v, want ErrBadFrame", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got.Type != tt.want.Type || got.Token != tt.want.Token || got.Seq != tt.want.Seq ||
				!bytes.Equal(got.ID, tt.want.ID) || (got.Resume == nil) != (tt.want.Resume == nil) ||
				(got.Resume != nil && *got.Resume != *tt.want.Resume) {
				t.Errorf("got %+v (resume %+v), want %+v", got, got.Resume, tt.want)
			}
		})
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","token":"t","resume":{"session":"s","seq":7}}`,
		`{"type":"ping","id":{"a":[1,"x",null]}}`,
		`{"type":"ping","id":null}`,
		`{"type":"ack","seq":3}`,
		`{"type":"refresh","token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}`,
		`{"type":"refresh","token":null}`,
		`{"type":"welcome"}`,
		`{"TYPE":"hello"}`,
		`{"type":"hello","type":"ack"}`,
		"{\"type\":\"hello\",\"token\":\"\xff\"}",
		`[`, ``, `null`, `{"type":"ack","seq":-0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClientFrame(b)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		switch fr.Type {
		case TypeHello, TypePing, TypeAck, TypeRefresh, TypeUnsubscribe, TypePresence:
		case TypeSubscribe:
			if fr.Sub == nil {
				t.Fatal("accepted a subscribe without decoding its request")
			}
		default:
			t.Fatalf("accepted unknown type %q", fr.Type)
		}
		if len(fr.ID) > 0 && !json.Valid(fr.ID) {
			t.Fatalf("accepted invalid id %q", fr.ID)
		}
		// A valid frame survives re-encoding with its meaning intact.
		enc, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", fr, err)
		}
		again, err := DecodeClientFrame(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		if again.Type != fr.Type || again.Token != fr.Token || again.Seq != fr.Seq ||
			(again.Resume == nil) != (fr.Resume == nil) || (fr.Resume != nil && *again.Resume != *fr.Resume) {
			t.Fatalf("round trip changed %+v into %+v", fr, again)
		}
		// The pong the gateway builds from the id is valid JSON.
		if fr.Type == TypePing && !json.Valid(AppendPong(nil, fr.ID)) {
			t.Fatalf("pong for id %q is not JSON", fr.ID)
		}
	})
}

func TestAppendMessage(t *testing.T) {
	tests := []struct {
		name string
		seq  uint64
		id   string
		ts   int64
		data json.RawMessage
	}{
		{name: "plain", seq: 1, id: "p-1", ts: 1700000000000, data: json.RawMessage(`{"px":101.5,"qty":3}`)},
		{name: "max seq, negative ts", seq: 1<<64 - 1, id: "x", ts: -1, data: json.RawMessage(`[1,2]`)},
		{name: "nil data is null", seq: 2, id: "", ts: 0, data: nil},
		{name: "escapes", seq: 3, id: "q\"b\\s/\n\t\x00\x1f<>&\u2028\u2029é😀", ts: 5, data: json.RawMessage(`"s"`)},
		{name: "invalid UTF-8 id", seq: 4, id: "a\xffb\xc3", ts: 6, data: json.RawMessage(`true`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("keep")
			b := AppendMessage(prefix, tt.seq, tt.id, tt.ts, tt.data)
			if !bytes.HasPrefix(b, []byte("keep")) {
				t.Fatalf("dst prefix lost: %q", b)
			}
			b = b[len("keep"):]
			if !json.Valid(b) {
				t.Fatalf("not JSON: %q", b)
			}
			var m Message
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			wantData := string(tt.data)
			if tt.data == nil {
				wantData = "null"
			}
			// encoding/json is the reference for the id's escaping.
			wantID := strings.ToValidUTF8(tt.id, "\uFFFD")
			if m.Type != TypeMessage || m.Seq != tt.seq || m.ID != wantID || m.TS != tt.ts || string(m.Data) != wantData {
				t.Errorf("decoded %+v from %s", m, b)
			}
		})
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "abc", "\"\\", "\x00\x01\x1f\x7f", "\u2028\u2029", "é😀", "\xff", "a\xc3", "\xed\xa0\x80"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("appendJSONString(%q) = %s: %v", s, got, err)
			continue
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("appendJSONString(%q) decodes to %q, encoding/json to %q", s, back, wantBack)
		}
	}
}

func TestEncodeRefreshed(t *testing.T) {
	for _, exp := range []int64{0, 1, 1795325875, -1, 1<<63 - 1} {
		b := EncodeRefreshed(exp)
		var r Refreshed
		if err := json.Unmarshal(b, &r); err != nil || r.Type != TypeRefreshed || r.Exp != exp {
			t.Errorf("EncodeRefreshed(%d) = %s (%v)", exp, b, err)
		}
		if typ, err := FrameType(b); err != nil || typ != TypeRefreshed {
			t.Errorf("FrameType(%s) = %q, %v", b, typ, err)
		}
	}
}

func TestAppendHeartbeat(t *testing.T) {
	for _, seq := range []uint64{0, 1, 1<<64 - 1} {
		var h Heartbeat
		b := AppendHeartbeat(nil, seq)
		if err := json.Unmarshal(b, &h); err != nil || h.Type != TypeHeartbeat || h.Seq != seq {
			t.Errorf("AppendHeartbeat(%d) = %s (%v)", seq, b, err)
		}
	}
}

func TestEncodeErrorAndWelcome(t *testing.T) {
	var e ErrorFrame
	if err := json.Unmarshal(EncodeError(CloseMoved.Slug(), "go", []string{"ws://a"}), &e); err != nil ||
		e.Type != TypeError || e.Code != CloseMoved.Slug() || e.Message != "go" || len(e.Endpoints) != 1 {
		t.Errorf("EncodeError decoded to %+v (%v)", e, err)
	}
	if b := EncodeError(CloseProtocol.Slug(), "x", nil); bytes.Contains(b, []byte("endpoints")) {
		t.Errorf("EncodeError without endpoints = %s", b)
	}
	b := EncodeWelcome(Welcome{Session: "s", Seq: 9, HeartbeatMS: 5000})
	if !bytes.Contains(b, []byte(`"type":"welcome"`)) || !bytes.Contains(b, []byte(`"endpoints":[]`)) {
		t.Errorf("EncodeWelcome = %s; want type welcome and endpoints []", b)
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	data := json.RawMessage(`{"order":"o-123456","side":"buy","px":"101.25","qty":"3","status":"filled"}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], 123456789, "pub-7f3a9c1e", 1700000000123, data)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportMetric(float64(len(buf)), "bytes/frame")
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "abc", "\"\\", "\x00\x1f", "\u2028", "é😀", "\xff", "a\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("appendJSONString(%q) decodes to %q, encoding/json to %q", s, back, wantBack)
		}
	})
}

// BenchmarkDecodeClientFrame decodes a resuming hello, the frame every
// reconnect in a storm sends.
func BenchmarkDecodeClientFrame(b *testing.B) {
	in := []byte(`{"type":"hello","token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEyMzQ1IiwiZXhwIjoxNzAwMDAwMDAwfQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl","resume":{"session":"0f1e2d3c4b5a69788796a5b4","seq":123456}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := DecodeClientFrame(in); err != nil {
			b.Fatal(err)
		}
	}
}
