package peer

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// FuzzReadFrames reads a byte stream from another node the way a link
// does — the hello, then frame after frame — and checks that nothing
// panics, that no frame body larger than the bound is ever accepted, and
// that responses split into a payload or a remote error or are refused.
func FuzzReadFrames(f *testing.F) {
	var hello bytes.Buffer
	if err := writeHello(&hello, "n2"); err != nil {
		f.Fatal(err)
	}
	frame := func(bp *[]byte) []byte { return append([]byte(nil), *bp...) }
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeRequest(7, 1, 500, trace.SpanContext{}, []byte("payload")))...))
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeResponse(7, 1, []byte("ok")))...))
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeError(7, 2, 3, "boom"))...))
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeOneway(9, trace.SpanContext{}, nil))...))
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeControl(kindPing, 4))...))
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeRequest(7, 3, 500, sc, []byte("payload")))...))
	f.Add(append(append([]byte(nil), hello.Bytes()...), frame(encodeOneway(9, sc, []byte("x")))...))
	f.Add([]byte("SBPL"))
	f.Add([]byte{})
	const maxBody = 1 << 16
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		id, err := readHello(br)
		if err != nil {
			return
		}
		if id == "" || len(id) > maxNodeID {
			t.Fatalf("accepted node id %q", id)
		}
		var buf [headerLen]byte
		for {
			h, err := readHeader(br, &buf, maxBody)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("readHeader: %v", err)
				}
				return
			}
			if h.bodyLen < 0 || h.bodyLen > maxBody {
				t.Fatalf("accepted a body of %d bytes (bound %d)", h.bodyLen, maxBody)
			}
			body := make([]byte, h.bodyLen)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			if h.kind == kindRequestTraced || h.kind == kindOnewayTraced {
				sc, rest, err := decodeTraceContext(body)
				switch {
				case err != nil:
					if !errors.Is(err, errProtocol) {
						t.Fatalf("decodeTraceContext: %v, want errProtocol", err)
					}
				case len(rest) >= len(body), sc.IsValid() && !sc.IsRemote():
					t.Fatalf("trace context: %v, %d of %d bytes left", sc, len(rest), len(body))
				}
				continue
			}
			if h.kind != kindResponse {
				continue
			}
			payload, isErr, _, msg, err := decodeResponse(body)
			switch {
			case err != nil:
				if !errors.Is(err, errProtocol) {
					t.Fatalf("decodeResponse: %v, want errProtocol", err)
				}
			case isErr && payload != nil, !isErr && msg != "":
				t.Fatalf("response is both a payload and an error: %x / %q", payload, msg)
			}
		}
	})
}
