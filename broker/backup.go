package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// Peer is another live node as backup placement sees it.
type Peer struct {
	ID, Region, Zone string
}

// pickBackup chooses where a user's replica should live: another zone of
// this region first (a zone loss keeps one copy, at LAN latency), then
// another region, then this zone. Among equals a hash of the user spreads
// replicas evenly. exclude lists nodes not to use.
func (b *Broker) pickBackup(key session.Key, exclude map[string]bool) (string, error) {
	best, bestRank := []string(nil), 4
	for _, p := range b.cluster.Peers() {
		if p.ID == b.cfg.NodeID || exclude[p.ID] || b.isDown(p.ID) {
			continue
		}
		rank := 3 // same zone
		switch {
		case p.Region == b.cfg.Region && p.Zone != b.cfg.Zone:
			rank = 1
		case p.Region != b.cfg.Region:
			rank = 2
		}
		switch {
		case rank < bestRank:
			best, bestRank = []string{p.ID}, rank
		case rank == bestRank:
			best = append(best, p.ID)
		}
	}
	switch {
	case len(best) == 0 && b.cluster.Solo():
		return "", errNoBackup
	case len(best) == 0:
		// Other servers exist but none is reachable now (a partition, or a
		// node gossip already gave up on): acknowledging with one copy here
		// could lose what the other side never saw.
		return "", errBackupsDown
	}
	h := fnv.New32a()
	h.Write([]byte(key.String()))
	return best[int(h.Sum32()%uint32(len(best)))], nil
}

// chooseBackup picks a new backup for a held stream, other than avoid (the
// one that just failed) when possible, and records it in the registry
// (fenced by the stream's epoch) before anything is copied there. It
// returns the entry's new epoch, which the owner adopts.
func (b *Broker) chooseBackup(ctx context.Context, h *held, epoch uint64, avoid string) (string, uint64, error) {
	exclude := map[string]bool{}
	if avoid != "" {
		exclude[avoid] = true
	}
	backup, err := b.pickBackup(h.key, exclude)
	if errors.Is(err, errBackupsDown) && len(exclude) > 0 {
		backup, err = b.pickBackup(h.key, nil) // the only other node: try it again
	}
	if err != nil {
		return "", 0, err
	}
	res, err := b.reg.Propose(ctx, session.Command{
		Kind: session.KindSetBackup, User: h.key.String(), Node: b.cfg.NodeID, Epoch: epoch, Backup: backup,
	})
	if err != nil {
		return "", 0, fmt.Errorf("%w: set backup: %v", protocol.ErrUnavailable, err)
	}
	if res.Err != nil {
		h.seal(res.Entry.Epoch, res.Entry.Session != h.session(), "session moved to another node")
		return "", 0, fmt.Errorf("%w: set backup: %v", session.ErrSealed, res.Err)
	}
	return backup, res.Entry.Epoch, nil
}
