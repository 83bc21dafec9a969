package membership

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		meta    Meta
		leaving bool
	}{
		{"empty", Meta{}, false},
		{"full", Meta{ID: "n1", Region: "eu-west", Zone: "a", PublicURL: "http://127.0.0.1:7700", ClusterAddr: "127.0.0.1:7701"}, false},
		{"draining", Meta{ID: "n2", Draining: true}, false},
		{"leaving", Meta{ID: "n3"}, true},
		{"draining and leaving", Meta{ID: "n4", Region: "r", Draining: true}, true},
		{"clustered", Meta{ID: "n5", Clustered: true}, false},
		{"clustered, draining and leaving", Meta{ID: "n6", Draining: true, Clustered: true}, true},
		{"unicode", Meta{ID: "nœud-1", Region: "région"}, false},
		{"long field needs 2-byte length", Meta{PublicURL: "https://" + strings.Repeat("x", 300)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeMeta(tt.meta, tt.leaving)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			got, leaving, err := decodeMeta(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got != tt.meta || leaving != tt.leaving {
				t.Fatalf("round trip: got %+v leaving=%t, want %+v leaving=%t", got, leaving, tt.meta, tt.leaving)
			}
		})
	}
}

func TestMetaSizeLimit(t *testing.T) {
	// 2 header bytes + 5 fields; each empty field costs 1 length byte.
	overhead := 2 + 4 + 2 // 4 empty fields + 2-byte length of the big one
	tests := []struct {
		name    string
		urlLen  int
		wantErr bool
	}{
		{"exactly at limit", memberlist.MetaMaxSize - overhead, false},
		{"one byte over", memberlist.MetaMaxSize - overhead + 1, true},
		{"far over", 4096, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeMeta(Meta{PublicURL: strings.Repeat("u", tt.urlLen)}, false)
			if tt.wantErr {
				if !errors.Is(err, ErrMetaTooLarge) {
					t.Fatalf("err = %v, want ErrMetaTooLarge", err)
				}
				if !strings.Contains(err.Error(), "limit 512") {
					t.Fatalf("error %q does not state the limit", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if len(b) != memberlist.MetaMaxSize {
				t.Fatalf("len = %d, want %d", len(b), memberlist.MetaMaxSize)
			}
		})
	}
}

func TestDecodeMetaRejectsBadInput(t *testing.T) {
	valid, err := encodeMeta(Meta{ID: "n1", Region: "r1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrMetaInvalid},
		{"one byte", []byte{metaVersion}, ErrMetaInvalid},
		{"unknown version", append([]byte{2}, valid[1:]...), ErrMetaVersion},
		{"version zero", append([]byte{0}, valid[1:]...), ErrMetaVersion},
		{"truncated field", valid[:len(valid)-1], ErrMetaInvalid},
		{"missing fields", valid[:4], ErrMetaInvalid},
		{"length past end", []byte{metaVersion, 0, 0x7f, 'a'}, ErrMetaInvalid},
		{"bad varint", []byte{metaVersion, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMetaInvalid},
		{"not utf8", []byte{metaVersion, 0, 1, 0xff, 0, 0, 0, 0}, ErrMetaInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := decodeMeta(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeMetaForwardCompatible(t *testing.T) {
	b, err := encodeMeta(Meta{ID: "n1", Draining: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	b[1] |= 0x80                    // a reserved flag from a newer release
	b = append(b, 3, 'n', 'e', 'w') // an appended optional field
	got, leaving, err := decodeMeta(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if want := (Meta{ID: "n1", Draining: true}); got != want || leaving {
		t.Fatalf("got %+v leaving=%t, want %+v", got, leaving, want)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	seed, _ := encodeMeta(Meta{ID: "n1", Region: "r", Zone: "z", PublicURL: "http://h:1", ClusterAddr: "h:2", Draining: true}, true)
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{metaVersion, 0, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, leaving, err := decodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode (if it fits) to something that decodes the same.
		enc, err := encodeMeta(m, leaving)
		if err != nil {
			if !errors.Is(err, ErrMetaTooLarge) {
				t.Fatalf("re-encode: %v", err)
			}
			return
		}
		m2, leaving2, err := decodeMeta(enc)
		if err != nil || m2 != m || leaving2 != leaving {
			t.Fatalf("re-decode: %+v %t %v, want %+v %t", m2, leaving2, err, m, leaving)
		}
	})
}
