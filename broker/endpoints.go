package broker

import (
	"hash/fnv"

	"github.com/switchboard/switchboard/session"
)

// Endpoint is another node's client URL, as welcomes and close frames list
// them for client-side failover.
type Endpoint struct {
	Node, URL  string
	SameRegion bool // in this node's region
}

// endpoints lists the other nodes' client URLs in the cluster's order:
// same region first.
func (b *Broker) endpoints() []string {
	eps := b.cluster.Endpoints()
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.URL
	}
	return out
}

// endpointsFor is the failover order told to a connection of key served
// from a stream held here, whose backup is backup. The SDK reconnects to
// the first endpoint, so the order decides where a takeover runs when this
// node dies. Within this node's region (DESIGN §3: same region first):
//   - nodes other than the backup come first, starting at one chosen by a
//     hash of the user, so the users of a dead node spread evenly over the
//     survivors instead of all reconnecting to the same one;
//   - the backup comes last. A takeover elsewhere costs one claim commit
//     and one round trip to the backup, which seals its replica and keeps
//     it as the new owner's copy. A takeover at the backup itself would
//     need a second commit (set-backup: the old owner stays named until
//     the data has a second copy) and a full copy to a new backup.
//
// Other regions follow in the cluster's order.
func (b *Broker) endpointsFor(key session.Key, backup string) []string {
	eps := b.cluster.Endpoints()
	out := make([]string, 0, len(eps))
	var same []Endpoint
	for _, e := range eps {
		if e.SameRegion && e.Node != backup {
			same = append(same, e)
		}
	}
	if len(same) > 0 {
		h := fnv.New32a()
		h.Write([]byte(key.String()))
		first := int(h.Sum32() % uint32(len(same)))
		for i := range same {
			out = append(out, same[(first+i)%len(same)].URL)
		}
	}
	for _, e := range eps {
		if e.SameRegion && e.Node == backup {
			out = append(out, e.URL)
		}
	}
	for _, e := range eps {
		if !e.SameRegion {
			out = append(out, e.URL)
		}
	}
	return out
}
