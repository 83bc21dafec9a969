package client

import (
	"fmt"
	"reflect"
	"testing"
)

func picks(l *endpointList, n int) []string {
	var out []string
	for range n {
		out = append(out, l.pick())
	}
	return out
}

func TestEndpointList(t *testing.T) {
	tests := []struct {
		name string
		do   func(l *endpointList)
		want []string // the next picks
	}{
		{"configured order, rotating", func(*endpointList) {}, []string{"a", "b", "a"}},
		{"after a welcome, another endpoint first, learned ones before configured",
			func(l *endpointList) { l.connected("a", []string{"c", "d", "c"}) },
			[]string{"c", "d", "b", "a", "c"}},
		{"learned endpoints are kept after later welcomes",
			func(l *endpointList) { l.connected("a", []string{"c"}); l.connected("b", nil) },
			[]string{"a", "c", "b"}},
		{"drain offers go first and the leaving node last",
			func(l *endpointList) { l.connected("a", []string{"c"}); l.prefer([]string{"x", "a"}, "a") },
			[]string{"x", "c", "b", "a", "x"}},
		{"drain without offers skips the leaving node",
			func(l *endpointList) { l.connected("a", nil); l.prefer(nil, "a") },
			[]string{"b", "a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newEndpointList([]string{"a", "b", "a"})
			tt.do(l)
			if got := picks(l, len(tt.want)); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("picks %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEndpointListSingleEndpoint(t *testing.T) {
	l := newEndpointList([]string{"a"})
	l.connected("a", nil)
	l.prefer(nil, "a")
	if got := picks(l, 2); !reflect.DeepEqual(got, []string{"a", "a"}) {
		t.Fatalf("picks %v", got)
	}
}

func TestEndpointListIsBoundedAndKeepsConfigured(t *testing.T) {
	l := newEndpointList([]string{"a", "b"})
	var learned []string
	for i := range 2 * maxEndpoints {
		learned = append(learned, fmt.Sprintf("n%d", i))
	}
	l.connected("n0", learned)
	got := l.snapshot()
	if len(got) != maxEndpoints {
		t.Fatalf("%d endpoints, want %d", len(got), maxEndpoints)
	}
	seen := map[string]bool{}
	for _, e := range got {
		seen[e] = true
	}
	if !seen["a"] || !seen["b"] || got[0] != "n0" {
		t.Fatalf("bounded list lost a configured endpoint or the current one: %v", got)
	}
}
