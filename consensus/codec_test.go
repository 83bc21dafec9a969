package consensus

import (
	"bytes"
	"errors"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		items [][]byte
	}{
		{"none", nil},
		{"one empty", [][]byte{{}}},
		{"several", [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("x"), 300)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeFrames(encodeFrames(tt.items))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.items) {
				t.Fatalf("%d items, want %d", len(got), len(tt.items))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.items[i]) {
					t.Fatalf("item %d = %q, want %q", i, got[i], tt.items[i])
				}
			}
		})
	}
}

func TestDecodeFramesRejectsMalformed(t *testing.T) {
	good := encodeFrames([][]byte{[]byte("ab"), []byte("c")})
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"wrong version", append([]byte{9}, good[1:]...)},
		{"no count", []byte{frameVersion}},
		{"count beyond input", []byte{frameVersion, 200, 1}},
		{"truncated item", good[:len(good)-1]},
		{"trailing bytes", append(append([]byte(nil), good...), 0)},
		{"overlong varint", append([]byte{frameVersion}, bytes.Repeat([]byte{0xff}, 11)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeFrames(tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestDecodedItemsCannotOverwriteEachOther(t *testing.T) {
	items, err := decodeFrames(encodeFrames([][]byte{[]byte("a"), []byte("b")}))
	if err != nil {
		t.Fatal(err)
	}
	_ = append(items[0], 'X')
	if string(items[1]) != "b" {
		t.Fatalf("appending to item 0 changed item 1 to %q", items[1])
	}
}

func TestIndexRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 1 << 40} {
		got, err := decodeIndex(encodeIndex(v))
		if err != nil || got != v {
			t.Fatalf("decodeIndex(encodeIndex(%d)) = %d, %v", v, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {2, 1}, {frameVersion}, {frameVersion, 1, 0}} {
		if _, err := decodeIndex(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("decodeIndex(%v) err = %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzDecodeFrames(f *testing.F) {
	f.Add(encodeFrames([][]byte{[]byte("set a b"), {}}))
	f.Add([]byte{frameVersion, 0})
	f.Add([]byte{frameVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		items, err := decodeFrames(in)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the same bytes.
		if out := encodeFrames(items); !bytes.Equal(out, in) {
			// Non-minimal varints decode but re-encode shorter; the
			// items must still survive the round trip.
			again, err := decodeFrames(out)
			if err != nil || len(again) != len(items) {
				t.Fatalf("re-encoding %x failed: %v", in, err)
			}
			for i := range items {
				if !bytes.Equal(again[i], items[i]) {
					t.Fatalf("item %d changed in round trip", i)
				}
			}
		}
	})
}
