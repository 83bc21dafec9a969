package faultload

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/protocol"
)

// user is one user of the workload: its subscriber, what the subscriber
// received, and what the publishers were told.
type user struct {
	name  string
	first string // id of the node its subscriber tries first
	cl    *client.Client
	sdk   sdkLog

	mu         sync.Mutex
	got        []client.Message
	events     []client.Event
	acks       map[string]uint64 // publish id → acknowledged seq
	bySeq      map[uint64]string // acknowledged seq → publish id
	conflicts  []string          // answers that contradict earlier ones
	gaveUp     []string          // ids never acknowledged within Options.GiveUp
	afterFault int               // acknowledgements of publishes begun after the fault
	before     protocol.Session  // registry entry before the fault (Snapshot)
}

func newUser(name, first string) *user {
	return &user{name: name, first: first, acks: map[string]uint64{}, bySeq: map[uint64]string{}}
}

// record notes that the publish of id, begun after the fault or not, was
// acknowledged with pr, and any contradiction with what came before: one
// seq for two ids, two seqs for one id (G3), an answer for another user or id.
func (u *user) record(id string, pr protocol.PublishResult, afterFault bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if prev, ok := u.bySeq[pr.Seq]; ok && prev != id {
		u.conflicts = append(u.conflicts, fmt.Sprintf("seq %d acknowledged for %s and %s", pr.Seq, prev, id))
	}
	if prev, ok := u.acks[id]; ok && prev != pr.Seq {
		u.conflicts = append(u.conflicts, fmt.Sprintf("id %s acknowledged as seq %d and %d", id, prev, pr.Seq))
	}
	if pr.ID != id || pr.User != u.name {
		u.conflicts = append(u.conflicts, fmt.Sprintf("publish %s answered for user %q id %q", id, pr.User, pr.ID))
	}
	u.acks[id], u.bySeq[pr.Seq] = pr.Seq, id
	if afterFault {
		u.afterFault++
	}
}

// giveUp notes a publish never acknowledged within Options.GiveUp.
func (u *user) giveUp(id string, last error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gaveUp = append(u.gaveUp, fmt.Sprintf("%s (last: %v)", id, last))
}

// receive collects the subscriber's messages and events until it closes.
func (u *user) receive(wg *sync.WaitGroup) {
	collect(wg, &u.mu, u.cl.Messages(), &u.got)
	collect(wg, &u.mu, u.cl.Events(), &u.events)
}

// collect appends what arrives on from to *into, under mu, until from
// closes.
func collect[T any](wg *sync.WaitGroup, mu *sync.Mutex, from <-chan T, into *[]T) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := range from {
			mu.Lock()
			*into = append(*into, v)
			mu.Unlock()
		}
	}()
}

// acked returns how many of u's publishes were acknowledged, and how many
// of those were begun after the fault.
func (u *user) acked() (all, afterFault int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.acks), u.afterFault
}

// sdkLog is the subscriber's log handler. It counts what the SDK says only
// in its log: the duplicates it dropped, which the server must never send
// (G3), and the events it could not hand over, without which the check of
// the events would be incomplete.
type sdkLog struct{ dups, droppedEvents atomic.Int64 }

func (l *sdkLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *sdkLog) Handle(_ context.Context, r slog.Record) error {
	switch r.Message {
	case "dropping duplicate":
		l.dups.Add(1)
	case "event dropped: Events channel full":
		l.droppedEvents.Add(1)
	}
	return nil
}
func (l *sdkLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *sdkLog) WithGroup(string) slog.Handler      { return l }
