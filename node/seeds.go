package node

import (
	"encoding/json"
	"os"
	"path/filepath"
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

// saveSeeds writes the live peers' gossip addresses, replacing the file
// whole so a crash mid-write leaves the previous list. Which addresses, and
// when, is the policy's decision (policy.go).
func (n *Node) saveSeeds(seeds []string) error {
	b, err := json.Marshal(seeds)
	if err != nil {
		return err
	}
	path := filepath.Join(n.cfg.DataDir, seedsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
