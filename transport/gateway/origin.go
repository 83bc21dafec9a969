package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ErrOriginPattern is returned by OriginPolicy for a pattern it cannot use.
var ErrOriginPattern = errors.New("gateway: bad origin pattern")

// OriginPolicy returns the check of a browser's Origin (DESIGN.md §7)
// against allowed, a list of origins: exact ("https://app.example.com",
// with a port if not the scheme's default), a wildcard for the subdomains
// of a domain ("https://*.example.com", which does not allow
// example.com itself), or "*" for any origin. Scheme and host compare
// case-insensitively. Without a list only an Origin whose host:port equals
// the request's Host header is allowed, with any scheme. A request
// without Origin (not a browser) is always allowed.
func OriginPolicy(allowed []string) (func(*http.Request) bool, error) {
	if len(allowed) == 0 {
		return sameHost, nil
	}
	var exact = map[string]bool{}
	var wild []originPattern
	for _, a := range allowed {
		if a == "*" {
			return func(*http.Request) bool { return true }, nil
		}
		p, err := parseOriginPattern(a)
		if err != nil {
			return nil, err
		}
		if p.wildcard {
			wild = append(wild, p)
		} else {
			exact[p.scheme+"://"+p.host] = true
		}
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		scheme, host, ok := splitOrigin(origin)
		if !ok {
			return false
		}
		if exact[scheme+"://"+host] {
			return true
		}
		for _, p := range wild {
			if p.matches(scheme, host) {
				return true
			}
		}
		return false
	}, nil
}

// sameHost allows an Origin whose host:port is the request's Host.
func sameHost(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	_, host, ok := splitOrigin(origin)
	return ok && host == strings.ToLower(r.Host)
}

// originPattern is one parsed entry of an allowed-origins list: host is
// host[:port], for a wildcard the part after "*" (".example.com[:port]").
type originPattern struct {
	scheme, host string
	wildcard     bool
}

func (p originPattern) matches(scheme, host string) bool {
	if scheme != p.scheme || !strings.HasSuffix(host, p.host) {
		return false
	}
	sub := host[:len(host)-len(p.host)] // what "*" stands for: one or more labels
	return sub != "" && !strings.ContainsAny(sub, ":/@")
}

func parseOriginPattern(a string) (originPattern, error) {
	bad := func(why string) (originPattern, error) {
		return originPattern{}, fmt.Errorf("%w %q: %s", ErrOriginPattern, a, why)
	}
	wildcard := strings.Contains(a, "://*.")
	probe := a
	if wildcard {
		probe = strings.Replace(a, "://*.", "://wildcard.", 1)
	}
	if strings.Contains(probe, "*") {
		return bad(`"*" is allowed alone or as the first label, as in https://*.example.com`)
	}
	scheme, host, ok := splitOrigin(probe)
	if !ok {
		return bad("want scheme://host[:port], with no path")
	}
	if wildcard {
		host = strings.TrimPrefix(host, "wildcard")
	}
	return originPattern{scheme: scheme, host: host, wildcard: wildcard}, nil
}

// splitOrigin takes apart an origin, scheme://host[:port] and nothing
// else, lower-cased.
func splitOrigin(s string) (scheme, host string, ok bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Host, ":") {
		return "", "", false
	}
	return strings.ToLower(u.Scheme), strings.ToLower(u.Host), true
}
