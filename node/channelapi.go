package node

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard/switchboard/peerapi"
	"github.com/switchboard/switchboard/protocol"
	"github.com/switchboard/switchboard/session"
)

// Channel reads (DESIGN.md §4, §5): history and presence for publishers,
// GET /v1/channels/{channel} for operators.

// History limits: the default page and the largest one asked for.
const (
	historyDefault = 100
	historyMax     = 1000
)

// channelName reads and checks the {channel} of the path.
func channelName(r *http.Request) (string, error) {
	name := r.PathValue("channel")
	return name, protocol.ValidChannel(name)
}

// uintParam reads an optional unsigned query parameter.
func uintParam(r *http.Request, name string, def uint64) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, protocol.Errorf(protocol.ErrBadRequest, "%s must be a non-negative integer", name)
	}
	return v, nil
}

// publisherChannel runs the checks both channel reads of the publish API
// share: the API key and the channel's name; "" means the request was
// answered.
func (n *Node) publisherChannel(w http.ResponseWriter, r *http.Request) string {
	if !bearer(r, n.apiKeys()) {
		writeError(w, protocol.Errorf(protocol.ErrUnauthorized, "missing or bad API key"))
		return ""
	}
	channel, err := channelName(r)
	if err != nil {
		writeError(w, err)
		return ""
	}
	return channel
}

func (n *Node) handleHistory(w http.ResponseWriter, r *http.Request) {
	channel := n.publisherChannel(w, r)
	if channel == "" {
		return
	}
	since, err := uintParam(r, "since", 0)
	if err != nil {
		writeError(w, err)
		return
	}
	limit, err := uintParam(r, "limit", historyDefault)
	switch {
	case err != nil:
		writeError(w, err)
		return
	case limit > historyMax:
		writeError(w, protocol.Errorf(protocol.ErrBadRequest, "limit must be at most %d", historyMax))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.API.PublishTimeout)
	defer cancel()
	last, msgs, err := n.broker.History(ctx, channel, since, int(limit))
	if err != nil {
		writeError(w, publishError(err))
		return
	}
	h := protocol.History{Channel: channel, Seq: last, Messages: make([]protocol.HistoryMessage, len(msgs))}
	for i, m := range msgs {
		h.Messages[i] = protocol.HistoryMessage{Seq: m.Seq, ID: m.ID, TS: m.TS, Data: m.Data}
	}
	writeJSON(w, http.StatusOK, h)
}

func (n *Node) handleChannelPresence(w http.ResponseWriter, r *http.Request) {
	channel := n.publisherChannel(w, r)
	if channel == "" {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.API.PublishTimeout)
	defer cancel()
	p, err := n.broker.Presence(ctx, nil, channel)
	if err != nil {
		writeError(w, publishError(err))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// handleChannel answers GET /v1/channels/{channel}: the registry's entry,
// the owner's seq, and the subscribers counted on every live node.
func (n *Node) handleChannel(w http.ResponseWriter, r *http.Request) {
	channel, err := channelName(r)
	if err != nil {
		writeError(w, err)
		return
	}
	key := session.ChannelKey(channel)
	e, ok := registry{n}.Get(key.String())
	if !ok {
		writeError(w, protocol.Errorf(protocol.ErrNotFound, "no channel %s", channel))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.API.PublishTimeout)
	defer cancel()
	info := protocol.ChannelInfo{Channel: channel, Owner: e.Owner, Backup: e.Backup, Epoch: e.Epoch, Nodes: []string{}}
	info.Seq, _ = n.streamSeq(ctx, e.Owner, key)
	members := n.pool.Members()
	counts := make([]int, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		switch {
		case m.ID == n.cfg.NodeID:
			counts[i] = n.broker.Subscribers(channel)
		case usable(m.State):
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				if c, err := peerapi.Subscribers.Call(cctx, n.peers, m.ID, key); err == nil {
					counts[i] = int(c)
				}
			}()
		}
	}
	wg.Wait()
	for i, m := range members {
		if counts[i] > 0 {
			info.Subscribers += counts[i]
			info.Nodes = append(info.Nodes, m.ID)
		}
	}
	slices.Sort(info.Nodes)
	writeJSON(w, http.StatusOK, info)
}
