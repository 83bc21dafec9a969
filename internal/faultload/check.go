package faultload

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/switchboard/switchboard/client"
)

// Check stops the publishers, waits for every acknowledged message to be
// delivered, and asserts, for every user:
//
//	G1  its subscriber received seqs 1..n, in order, without gaps or
//	    duplicates; on the wire too: the SDK drops duplicates, and they are
//	    counted from its log;
//	G2  every acknowledged (id, seq) was received, under that seq, and
//	    every publish was acknowledged within Options.GiveUp;
//	G3  no seq was acknowledged for two ids, no id under two seqs, no id
//	    stored twice; the subscriber was never told continuity was lost nor
//	    saw a seq anomaly;
//	G4  afterwards its registry entry, read through live[0], names a live
//	    owner and another live node as backup, in the same session, and no
//	    entry read has an epoch older than before the fault, or the same
//	    epoch under another owner;
//
// and that the workload really ran through the fault: every user had
// publishes begun after MarkFault acknowledged. live lists the nodes
// running now.
func (w *Workload) Check(live []string) {
	t := w.t
	t.Helper()
	w.stopPublishing()
	deadline := time.Now().Add(deliverWait)
	var total, after int
	for _, u := range w.users {
		maxAcked, last := w.waitDelivered(u, deadline)
		if last < maxAcked {
			t.Errorf("%s: received up to seq %d, but seq %d was acknowledged", u.name, last, maxAcked)
		}
		u.mu.Lock()
		if errs := u.violations(maxAcked); len(errs) > 0 {
			if len(errs) > 10 {
				errs = append(errs[:10], fmt.Sprintf("… and %d more", len(errs)-10))
			}
			t.Errorf("%s (first endpoint %s, owner before %s): received %d, acknowledged %d (max seq %d), %d reconnects:\n\t%s",
				u.name, u.first, u.before.Owner, len(u.got), len(u.acks), maxAcked, u.reconnects(), strings.Join(errs, "\n\t"))
		}
		total += len(u.acks)
		after += u.afterFault
		u.mu.Unlock()
	}
	t.Logf("workload: %d users, %d acknowledged (%d begun after the fault), %d publish attempts, %d rejected and retried",
		len(w.users), total, after, w.attempts.Load(), w.rejected.Load())
	w.checkRegistry(live)
}

// waitDelivered waits until u received its highest acknowledged seq, or
// deadline; it returns that seq and the last one received.
func (w *Workload) waitDelivered(u *user, deadline time.Time) (maxAcked, last uint64) {
	u.mu.Lock()
	for s := range u.bySeq {
		maxAcked = max(maxAcked, s)
	}
	u.mu.Unlock()
	for {
		u.mu.Lock()
		if n := len(u.got); n > 0 {
			last = u.got[n-1].Seq
		}
		u.mu.Unlock()
		if last >= maxAcked || time.Now().After(deadline) {
			return maxAcked, last
		}
		time.Sleep(deliverPoll)
	}
}

// violations lists how what u's subscriber received and its publishers
// were told break G1–G3, given the highest acknowledged seq; u.mu is held.
func (u *user) violations(maxAcked uint64) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	// The subscriber's own reports first: they usually explain the rest.
	for _, e := range u.events {
		if e.Kind == client.EventContinuityLost || e.Kind == client.EventSequenceAnomaly {
			fail("client event %s from node %s: %v", e.Kind, e.Node, e.Err)
		}
	}
	if d := u.sdk.droppedEvents.Load(); d > 0 {
		fail("the SDK dropped %d events: the events checked here are incomplete", d)
	}
	for _, c := range u.conflicts {
		fail("%s", c)
	}
	for _, g := range u.gaveUp {
		fail("publish never acknowledged: %s", g)
	}
	if d := u.sdk.dups.Load(); d > 0 {
		fail("the server sent %d duplicate messages (dropped by the SDK)", d)
	}
	if len(u.acks) == 0 || maxAcked == 0 {
		fail("nothing acknowledged")
	}
	if u.afterFault == 0 {
		fail("no publish begun after the fault was acknowledged")
	}
	// The first seq out of place is reported; the messages after it are
	// still looked at, so that what was lost is counted right.
	seqOf := map[string]uint64{}
	inOrder := true
	for i, m := range u.got {
		if inOrder && m.Seq != uint64(i+1) {
			fail("message %d has seq %d: gap, duplicate or disorder (seqs %s)", i, m.Seq, seqWindow(u.got, i))
			inOrder = false
		}
		if prev, ok := seqOf[m.ID]; ok && prev != m.Seq {
			fail("id %s stored twice, as seq %d and %d", m.ID, prev, m.Seq)
		}
		seqOf[m.ID] = m.Seq
		if id, ok := u.bySeq[m.Seq]; ok && id != m.ID {
			fail("seq %d delivered with id %s, acknowledged for id %s", m.Seq, m.ID, id)
		}
	}
	var lost []string
	for id, s := range u.acks {
		if got, ok := seqOf[id]; !ok {
			lost = append(lost, fmt.Sprintf("%s@%d", id, s))
		} else if got != s {
			fail("acknowledged %s as seq %d, received as seq %d", id, s, got)
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		fail("%d acknowledged messages never received (G2), e.g. %v", len(lost), lost[:min(6, len(lost))])
	}
	return errs
}

// reconnects counts the subscriber's lost connections; u.mu is held.
func (u *user) reconnects() int {
	n := 0
	for _, e := range u.events {
		if e.Kind == client.EventDisconnected {
			n++
		}
	}
	return n
}

// seqWindow shows the seqs around index i, for a failure message.
func seqWindow(msgs []client.Message, i int) string {
	var b strings.Builder
	for j := max(0, i-3); j < min(len(msgs), i+4); j++ {
		fmt.Fprintf(&b, "%d ", msgs[j].Seq)
	}
	return strings.TrimSpace(b.String())
}

// CheckClientsLeft asserts that every user whose stream node owned before
// the fault saw its subscriber lose its connection: after a fault that
// moves node's streams away (a crash, a drain), no subscriber may sit on
// a stream that no longer lives there.
func (w *Workload) CheckClientsLeft(node string) {
	w.t.Helper()
	var stayed []string
	for _, u := range w.users {
		if u.before.Owner == node && u.lockedReconnects() == 0 {
			stayed = append(stayed, u.name)
		}
	}
	if len(stayed) > 0 {
		w.t.Errorf("subscribers of %s's users never reconnected: %v", node, stayed)
	}
}

// CheckStayedConnected asserts that no subscriber lost its connection: a
// change that must not touch clients (a certificate rotation) did not.
func (w *Workload) CheckStayedConnected() {
	w.t.Helper()
	var moved []string
	for _, u := range w.users {
		u.mu.Lock()
		for _, e := range u.events {
			if e.Kind == client.EventDisconnected {
				moved = append(moved, fmt.Sprintf("%s from %s (close %d: %v)", u.name, e.Node, e.Code, e.Err))
			}
		}
		u.mu.Unlock()
	}
	if len(moved) > 0 {
		w.t.Errorf("subscribers that lost their connection: %v", moved)
	}
}

// CheckClientsStayed asserts that no subscriber ever lost its connection:
// after an operation that clients must not notice (a gossip key
// rotation), not even a resume is allowed.
func (w *Workload) CheckClientsStayed() {
	w.t.Helper()
	var moved []string
	for _, u := range w.users {
		if n := u.lockedReconnects(); n > 0 {
			moved = append(moved, fmt.Sprintf("%s (%d times)", u.name, n))
		}
	}
	if len(moved) > 0 {
		w.t.Errorf("subscribers lost their connection: %v", moved)
	}
}

// lockedReconnects is reconnects, taking u.mu.
func (u *user) lockedReconnects() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reconnects()
}
