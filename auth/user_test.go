package auth

import (
	"strings"
	"testing"
)

func TestValidUser(t *testing.T) {
	for _, tc := range []struct {
		user string
		ok   bool
	}{
		{"alice", true},
		{"user:42@example.com", true},
		{"名前", true},
		{strings.Repeat("a", MaxUserLen), true},
		{"", false},
		{strings.Repeat("a", MaxUserLen+1), false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"a\uFFFDb", false},
		{"a\xffb", false}, // invalid UTF-8 ranges as U+FFFD
	} {
		if err := ValidUser(tc.user); (err == nil) != tc.ok {
			t.Errorf("ValidUser(%q) = %v, want ok %v", tc.user, err, tc.ok)
		}
	}
}

func TestKeyMatches(t *testing.T) {
	for _, tc := range []struct {
		got, want string
		ok        bool
	}{
		{"k3y", "k3y", true},
		{"k3y", "k3Y", false},
		{"k3", "k3y", false},
		{"k3yy", "k3y", false},
		{"", "k3y", false},
		{"", "", false}, // an unset key matches nothing
		{"anything", "", false},
	} {
		if got := KeyMatches(tc.got, tc.want); got != tc.ok {
			t.Errorf("KeyMatches(%q, %q) = %v, want %v", tc.got, tc.want, got, tc.ok)
		}
	}
}
