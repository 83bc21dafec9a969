package gateway

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestOriginPolicy(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		host    string // the request's Host
		origin  string // "" : no Origin header
		want    bool
	}{
		{name: "same host, no list", host: "sb.example.com", origin: "https://sb.example.com", want: true},
		{name: "same host, other scheme", host: "sb.example.com", origin: "http://sb.example.com", want: true},
		{name: "same host and port", host: "127.0.0.1:7700", origin: "http://127.0.0.1:7700", want: true},
		{name: "same host, case", host: "SB.example.com", origin: "https://sb.EXAMPLE.com", want: true},
		{name: "other port", host: "127.0.0.1:7700", origin: "http://127.0.0.1:7701", want: false},
		{name: "other host", host: "sb.example.com", origin: "https://evil.example.com", want: false},
		{name: "host as a prefix", host: "sb.example.com", origin: "https://sb.example.com.evil.net", want: false},
		{name: "null origin", host: "sb.example.com", origin: "null", want: false},
		{name: "origin with a path", host: "sb.example.com", origin: "https://sb.example.com/x", want: false},
		{name: "no origin", host: "sb.example.com", want: true},

		{name: "exact", allowed: []string{"https://app.example.com"}, host: "sb.internal", origin: "https://app.example.com", want: true},
		{name: "exact, case", allowed: []string{"HTTPS://App.Example.com"}, host: "sb.internal", origin: "https://app.example.COM", want: true},
		{name: "exact, trailing slash in the list", allowed: []string{"https://app.example.com/"}, host: "sb.internal", origin: "https://app.example.com", want: true},
		{name: "exact, other scheme", allowed: []string{"https://app.example.com"}, host: "sb.internal", origin: "http://app.example.com", want: false},
		{name: "exact, other port", allowed: []string{"https://app.example.com"}, host: "sb.internal", origin: "https://app.example.com:8443", want: false},
		{name: "exact with port", allowed: []string{"https://app.example.com:8443"}, host: "sb.internal", origin: "https://app.example.com:8443", want: true},
		{name: "a list replaces the same-host rule", allowed: []string{"https://app.example.com"}, host: "sb.internal", origin: "https://sb.internal", want: false},
		{name: "wildcard", allowed: []string{"https://*.example.com"}, host: "sb.internal", origin: "https://a.example.com", want: true},
		{name: "wildcard, deeper", allowed: []string{"https://*.example.com"}, host: "sb.internal", origin: "https://a.b.example.com", want: true},
		{name: "wildcard, not the domain itself", allowed: []string{"https://*.example.com"}, host: "sb.internal", origin: "https://example.com", want: false},
		{name: "wildcard, lookalike", allowed: []string{"https://*.example.com"}, host: "sb.internal", origin: "https://evilexample.com", want: false},
		{name: "wildcard, other scheme", allowed: []string{"https://*.example.com"}, host: "sb.internal", origin: "http://a.example.com", want: false},
		{name: "wildcard, port", allowed: []string{"https://*.example.com"}, host: "sb.internal", origin: "https://a.example.com:444", want: false},
		{name: "wildcard with port", allowed: []string{"https://*.example.com:444"}, host: "sb.internal", origin: "https://a.example.com:444", want: true},
		{name: "second entry", allowed: []string{"https://a.example", "https://b.example"}, host: "sb.internal", origin: "https://b.example", want: true},
		{name: "star", allowed: []string{"*"}, host: "sb.internal", origin: "null", want: true},
		{name: "list, no origin", allowed: []string{"https://a.example"}, host: "sb.internal", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check, err := OriginPolicy(tt.allowed)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/v1/connect", nil)
			r.Host = tt.host
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			if got := check(r); got != tt.want {
				t.Errorf("Origin %q with Host %q and list %q: allowed %v, want %v", tt.origin, tt.host, tt.allowed, got, tt.want)
			}
		})
	}
}

func TestOriginPolicyRejectsMalformedPatterns(t *testing.T) {
	for _, p := range []string{
		"", "app.example.com", "*.example.com", "https://", "https://a.*.example.com", "https://*example.com",
		"https://app.example.com/path", "https://app.example.com?q", "https://user@app.example.com", "https://*",
		"https://app.example.com:", "null",
	} {
		if _, err := OriginPolicy([]string{"https://ok.example", p}); !errors.Is(err, ErrOriginPattern) {
			t.Errorf("OriginPolicy(%q) = %v, want ErrOriginPattern", p, err)
		}
	}
}
