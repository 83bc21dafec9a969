package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/transport/peer"
)

// The gossip keyring across the cluster (DESIGN.md §5, docs/security.md):
// GET /v1/gossip/keys gathers every live node's keyring, POST installs,
// uses or removes a key on every live node, like `consul keyring`. Each
// node's own keyring is its membership.Pool's (membership/keyring.go),
// kept in gossipKeyringFile. What a POST does is decided first, as data,
// from every live node's keyring (planKeyOp), so that a step that would
// cut a node off (using a key some node lacks, removing a key some node
// still encrypts with) changes nothing anywhere.

// gossipKeyringFile, in the data dir, holds the node's current gossip
// keyring: seeded from --gossip-key-file, rewritten after every change,
// and read at start in preference to the flag once it exists.
const gossipKeyringFile = "gossip-keyring"

// keyCallTimeout bounds asking one node for its keyring or changing it.
const keyCallTimeout = 3 * time.Second

var errEncryptionOff = protocol.Errorf(protocol.ErrConflict,
	"%v: start the nodes with --gossip-key-file (encryption cannot be turned on while the cluster runs)", membership.ErrEncryptionOff)

// serveGossipKeys registers the keyring's peer methods.
func (n *Node) serveGossipKeys(r peer.Registry) {
	peerapi.GossipKeys.Serve(r, func(context.Context, string, peerapi.Empty) ([]membership.KeyInfo, error) {
		return n.pool.Keys()
	})
	peerapi.GossipKeyOp.Serve(r, func(_ context.Context, from string, c peerapi.KeyChange) (bool, error) {
		n.log.Info("gossip keyring change asked", "from", from, "op", c.Op, "key", membership.Fingerprint(c.Key))
		return n.pool.ChangeKeys(c.Op, c.Key)
	})
}

func (n *Node) handleGossipKeys(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		rings := n.keyrings(r.Context(), n.liveNodes())
		writeJSON(w, http.StatusOK, summarizeKeys(n.pool.Encrypted(), rings))
	case http.MethodPost:
		n.changeGossipKeys(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, protocol.Errorf(protocol.ErrMethodNotAllowed, "use GET or POST"))
	}
}

func (n *Node) changeGossipKeys(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 4096)
	if err != nil {
		writeError(w, err)
		return
	}
	var req protocol.GossipKeyOp
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "body: %v", err))
		return
	}
	op, err := membership.ParseKeyOp(req.Op)
	if err != nil {
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "op: %v", err))
		return
	}
	key, err := membership.DecodeKey(req.Key)
	if err != nil {
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "key: %v", err))
		return
	}
	if !n.pool.Encrypted() {
		writeError(w, errEncryptionOff)
		return
	}
	fp := membership.Fingerprint(key)
	res := protocol.GossipKeyOpResult{Op: op.String(), Fingerprint: fp}
	plan := planKeyOp(n.keyrings(r.Context(), n.liveNodes()), op, fp)
	res.Nodes = append([]protocol.GossipKeyNode{}, plan.nodes...) // [] rather than null
	err = plan.err
	if err == nil {
		done := n.applyKeyOp(r.Context(), plan.apply, peerapi.KeyChange{Op: op, Key: key})
		for _, o := range done {
			res.Nodes = append(res.Nodes, o.GossipKeyNode)
		}
		err = keyOpError(done)
	}
	slices.SortFunc(res.Nodes, func(a, b protocol.GossipKeyNode) int { return cmp.Compare(a.Node, b.Node) })
	status := http.StatusOK
	if err != nil {
		res.Error, status = err.Error(), protocol.StatusOf(err)
		if protocol.Retryable(err) {
			w.Header().Set("Retry-After", "1")
		}
	}
	n.log.Info("gossip keyring op", "op", op, "key", fp, "status", status, "err", err)
	writeJSON(w, status, res)
}

// liveNodes lists the members a keyring operation must reach.
func (n *Node) liveNodes() []string {
	var ids []string
	for _, m := range n.pool.Members() {
		if usable(m.State) {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// nodeKeyring is one live node's keyring, or why it is not known: the
// node could not be asked, or it does not encrypt
// (membership.ErrEncryptionOff).
type nodeKeyring struct {
	node string
	keys []membership.KeyInfo
	err  error
}

// keyrings asks the nodes ids for their keyrings, all at once.
func (n *Node) keyrings(ctx context.Context, ids []string) []nodeKeyring {
	out := make([]nodeKeyring, len(ids))
	n.eachNode(ctx, ids, func(ctx context.Context, i int, id string) {
		out[i].node = id
		if id == n.cfg.NodeID {
			out[i].keys, out[i].err = n.pool.Keys()
			return
		}
		out[i].keys, out[i].err = peerapi.GossipKeys.Call(ctx, n.peers, id, peerapi.Empty{})
	})
	return out
}

// keyOutcome is one node's outcome of a keyring change, and whether the
// node could not be reached (rather than answering no).
type keyOutcome struct {
	protocol.GossipKeyNode
	unreachable bool
}

// applyKeyOp applies c on the nodes ids, all at once.
func (n *Node) applyKeyOp(ctx context.Context, ids []string, c peerapi.KeyChange) []keyOutcome {
	out := make([]keyOutcome, len(ids))
	n.eachNode(ctx, ids, func(ctx context.Context, i int, id string) {
		var changed bool
		var err error
		if id == n.cfg.NodeID {
			changed, err = n.pool.ChangeKeys(c.Op, c.Key)
		} else {
			changed, err = peerapi.GossipKeyOp.Call(ctx, n.peers, id, c)
		}
		o := keyOutcome{GossipKeyNode: protocol.GossipKeyNode{Node: id, OK: err == nil, Changed: changed}}
		var re *peer.RemoteError
		switch {
		case err == nil:
		case errors.As(err, &re):
			o.Error = re.Message // what the node answered
		case id == n.cfg.NodeID:
			o.Error = err.Error()
		default:
			o.Error, o.unreachable = unreachablePrefix+err.Error(), true
		}
		out[i] = o
	})
	return out
}

// eachNode runs fn for every node of ids in parallel, each under its own
// timeout, and waits for them all.
func (n *Node) eachNode(ctx context.Context, ids []string, fn func(ctx context.Context, i int, id string)) {
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, keyCallTimeout)
			defer cancel()
			fn(ctx, i, id)
		})
	}
	wg.Wait()
}

// unreachablePrefix starts the error of a node that could not be reached.
const unreachablePrefix = "unreachable: "

// keyOpError sums up the nodes' outcomes: 503 when some node could not be
// reached, 409 when some node refused, nil when all succeeded.
func keyOpError(outcomes []keyOutcome) error {
	var unreachable, refused []string
	for _, o := range outcomes {
		switch {
		case o.OK:
		case o.unreachable:
			unreachable = append(unreachable, o.Node)
		default:
			refused = append(refused, o.Node)
		}
	}
	slices.Sort(unreachable)
	slices.Sort(refused)
	switch {
	case len(unreachable) > 0:
		return protocol.Errorf(protocol.ErrUnavailable, "%s could not be reached: the keyrings now differ; repeat the op once every node is back (see nodes)", strings.Join(unreachable, ", "))
	case len(refused) > 0:
		return protocol.Errorf(protocol.ErrConflict, "%s refused: the keyrings now differ (see nodes)", strings.Join(refused, ", "))
	}
	return nil
}

// summarizeKeys is the answer to GET /v1/gossip/keys: every key some
// live node holds, by fingerprint, primary keys first.
func summarizeKeys(encrypted bool, rings []nodeKeyring) protocol.GossipKeys {
	out := protocol.GossipKeys{Encrypted: encrypted, Keys: []protocol.GossipKeyInfo{}}
	byFP := map[string]*protocol.GossipKeyInfo{}
	for _, r := range rings {
		if r.err != nil && !errors.Is(r.err, membership.ErrEncryptionOff) {
			out.Unreachable = append(out.Unreachable, r.node)
			continue
		}
		out.Nodes++
		for _, k := range r.keys {
			info := byFP[k.Fingerprint]
			if info == nil {
				info = &protocol.GossipKeyInfo{Fingerprint: k.Fingerprint}
				byFP[k.Fingerprint] = info
			}
			info.Nodes++
			if k.Primary {
				info.PrimaryOn++
			}
		}
	}
	for _, info := range byFP {
		info.Primary = info.PrimaryOn == out.Nodes
		out.Keys = append(out.Keys, *info)
	}
	slices.SortFunc(out.Keys, func(a, b protocol.GossipKeyInfo) int {
		return cmp.Or(cmp.Compare(b.PrimaryOn, a.PrimaryOn), cmp.Compare(b.Nodes, a.Nodes), cmp.Compare(a.Fingerprint, b.Fingerprint))
	})
	slices.Sort(out.Unreachable)
	return out
}

// keyPlan is what planKeyOp decides: the nodes to apply the op to, the
// outcome of the nodes already known (nothing to do, or what stops the
// op), and err when nothing may be applied anywhere.
type keyPlan struct {
	apply []string
	nodes []protocol.GossipKeyNode
	err   error
}

// planKeyOp decides, from every live node's keyring, where op with the key
// whose fingerprint is fp applies. It refuses, changing nothing, when a
// node cannot be asked (503), does not encrypt, or would be cut off
// (409): using a key some node lacks (it could not read what the others
// then send), or removing a key some node encrypts with (the others could
// not read it). Removing a key applies only where it is installed.
func planKeyOp(rings []nodeKeyring, op membership.KeyOp, fp string) keyPlan {
	var p keyPlan
	var unreachable, off, blocked []string
	for _, r := range rings {
		var holds, primary bool
		for _, k := range r.keys {
			if k.Fingerprint == fp {
				holds, primary = true, k.Primary
			}
		}
		var why string
		switch {
		case errors.Is(r.err, membership.ErrEncryptionOff):
			off, why = append(off, r.node), membership.ErrEncryptionOff.Error()
		case r.err != nil:
			unreachable, why = append(unreachable, r.node), unreachablePrefix+r.err.Error()
		case op == membership.KeyUse && !holds:
			blocked, why = append(blocked, r.node), "key not installed here"
		case op == membership.KeyRemove && primary:
			blocked, why = append(blocked, r.node), "key is the primary here"
		case op == membership.KeyRemove && !holds:
			p.nodes = append(p.nodes, protocol.GossipKeyNode{Node: r.node, OK: true})
			continue
		default:
			p.apply = append(p.apply, r.node)
			continue
		}
		p.nodes = append(p.nodes, protocol.GossipKeyNode{Node: r.node, Error: why})
	}
	list := func(ids []string) string { return strings.Join(ids, ", ") }
	switch {
	case len(unreachable) > 0:
		p.err = protocol.Errorf(protocol.ErrUnavailable, "%s could not be asked for its keyring: nothing changed", list(unreachable))
	case len(off) > 0:
		p.err = protocol.Errorf(protocol.ErrConflict, "gossip encryption is off on %s: nothing changed", list(off))
	case op == membership.KeyUse && len(blocked) > 0:
		p.err = protocol.Errorf(protocol.ErrConflict, "key %s is not installed on %s: install it first; nothing changed", fp, list(blocked))
	case op == membership.KeyRemove && len(blocked) > 0:
		p.err = protocol.Errorf(protocol.ErrConflict, "key %s is the primary on %s: use another key first; nothing changed", fp, list(blocked))
	case op == membership.KeyRemove && len(p.apply) == 0:
		p.err = protocol.Errorf(protocol.ErrConflict, "no live node holds key %s", fp)
	}
	if p.err != nil {
		p.apply = nil
		// Only the nodes that stop the op are of interest.
		p.nodes = slices.DeleteFunc(p.nodes, func(r protocol.GossipKeyNode) bool { return r.OK })
	}
	return p
}

// String helps logs and test failures.
func (p keyPlan) String() string {
	return fmt.Sprintf("apply %v, nodes %+v, err %v", p.apply, p.nodes, p.err)
}
