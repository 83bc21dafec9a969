package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	"github.com/switchboard/switchboard/membership"
)

// seedsFile remembers the gossip addresses of the last known live peers,
// so a node restarted with its original flags finds the cluster again
// even when those flags name no --join (the bootstrap node) or name seeds
// that have since gone.
const seedsFile = "gossip-peers.json"

func (n *Node) loadSeeds() []string {
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, seedsFile))
	if err != nil {
		return nil
	}
	var seeds []string
	if err := json.Unmarshal(b, &seeds); err != nil {
		n.log.Warn("ignoring unreadable seeds file", "err", err)
		return nil
	}
	return seeds
}

// saveSeeds records the live peers' gossip addresses when they changed.
func (n *Node) saveSeeds(members []membership.Member, last []string) []string {
	var seeds []string
	for _, m := range members {
		if m.ID != n.cfg.NodeID && usable(m.State) && m.GossipAddr != "" {
			seeds = append(seeds, m.GossipAddr)
		}
	}
	slices.Sort(seeds)
	if len(seeds) == 0 || slices.Equal(seeds, last) {
		return last
	}
	b, _ := json.Marshal(seeds)
	path := filepath.Join(n.cfg.DataDir, seedsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		n.log.Warn("saving seeds", "err", err)
		return last
	}
	if err := os.Rename(tmp, path); err != nil {
		n.log.Warn("saving seeds", "err", err)
		return last
	}
	return seeds
}
