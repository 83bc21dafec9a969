package client

// maxEndpoints bounds the endpoint list: learned endpoints beyond it are
// dropped, the configured ones never are.
const maxEndpoints = 64

// endpointList is the failover order. It is not safe for concurrent use;
// only the run loop touches it.
type endpointList struct {
	original []string // from Config, always kept
	order    []string // rotation order, de-duplicated
	next     int      // index into order of the next endpoint to try
}

func newEndpointList(original []string) *endpointList {
	o := dedup(nil, original)
	return &endpointList{original: o, order: append([]string(nil), o...)}
}

// pick returns the endpoint to try now and advances the rotation.
func (l *endpointList) pick() string {
	ep := l.order[l.next%len(l.order)]
	l.next = (l.next + 1) % len(l.order)
	return ep
}

// connected records a welcome on ep listing learned endpoints (the server
// orders them same region first). The next pick is a different endpoint:
// the server's list first, then the configured ones, then older learned ones.
func (l *endpointList) connected(ep string, learned []string) {
	order := dedup(nil, []string{ep})
	order = dedup(order, learned)
	order = dedup(order, l.original)
	order = dedup(order, l.order)
	l.order = l.bound(order)
	l.next = 1 % len(l.order)
}

// prefer makes urls the next endpoints to try, in order, and moves avoid
// (the endpoint that just told us to leave) to the end of the rotation.
func (l *endpointList) prefer(urls []string, avoid string) {
	var order []string
	for _, list := range [][]string{urls, l.order, l.original} {
		for _, e := range list {
			if e != avoid {
				order = dedup(order, []string{e})
			}
		}
	}
	order = dedup(order, []string{avoid}) // last resort, e.g. the only endpoint
	l.order = l.bound(order)
	l.next = 0
}

// bound trims learned endpoints so the list stays within maxEndpoints,
// keeping every configured endpoint.
func (l *endpointList) bound(order []string) []string {
	if len(order) <= maxEndpoints {
		return order
	}
	orig := make(map[string]bool, len(l.original))
	for _, e := range l.original {
		orig[e] = true
	}
	room := max(maxEndpoints-len(l.original), 0)
	out := order[:0]
	for _, e := range order {
		if orig[e] {
			out = append(out, e)
		} else if room > 0 {
			out = append(out, e)
			room--
		}
	}
	return out
}

// snapshot returns a copy of the rotation order.
func (l *endpointList) snapshot() []string {
	return append([]string(nil), l.order...)
}

// dedup appends the elements of add to dst that are non-empty and not yet
// present, keeping order.
func dedup(dst, add []string) []string {
	for _, a := range add {
		if a == "" {
			continue
		}
		seen := false
		for _, d := range dst {
			if d == a {
				seen = true
				break
			}
		}
		if !seen {
			dst = append(dst, a)
		}
	}
	return dst
}
