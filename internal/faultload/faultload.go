// Package faultload is the workload every fault test runs, and its
// checker. Many users, each with a subscriber (the Go SDK); publishers
// that retry each message under its id through any live node until it is
// acknowledged; and a check that turns the guarantees of DESIGN.md §1
// into assertions on what the subscribers received and what the
// publishers were told.
//
// It reaches the cluster only through the contract: the publish API (§4),
// the admin API's session lookup (§5) and client connections (§3). So the
// same workload runs against in-process nodes and real processes:
//
//	w := faultload.Start(t, cluster, faultload.Options{Users: 30, Placement: []string{"n2", "n1"}})
//	w.WaitAcked(20, 15*time.Second)
//	w.Snapshot(leader)
//	victim, _ := w.MostOwned()
//	w.MarkFault()
//	kill(victim)
//	w.RunThrough(3*time.Second, 10, 15*time.Second)
//	w.Check(live)
package faultload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
)

// Options shape a workload.
type Options struct {
	// Users is the number of users, each with one subscriber.
	Users int
	// Placement lists node ids; user i's subscriber tries Placement[i%len]
	// first (so that is where its stream starts: the subscribers connect
	// before anything is published), then every other node.
	Placement []string
	// Interval is the mean pause of a user's publisher between two
	// acknowledged messages (default 25ms); a batch spanning every user
	// goes out about every two Intervals.
	Interval time.Duration
	// GiveUp bounds the retries of one message (default 15s): a message
	// not acknowledged within it fails the check, as every fault the tests
	// inject leaves a quorum.
	GiveUp time.Duration
}

// Waits of the workload's own (the test chooses the others).
const (
	dialWait     = 20 * time.Second      // a subscriber's first welcome
	retryPause   = 20 * time.Millisecond // between two tries of one publish
	publishWait  = 3 * time.Second       // one publish request
	adminWait    = 10 * time.Second      // one admin request
	snapshotWait = 10 * time.Second      // registry entries before the fault
	deliverWait  = 15 * time.Second      // acknowledged messages to arrive, in Check
	registryWait = 10 * time.Second      // the registry to settle, in Check
	pollEvery    = 50 * time.Millisecond // waits that poll
	deliverPoll  = 20 * time.Millisecond // the delivery wait's poll
)

// Workload is a running fault workload: its subscribers and publishers,
// what they saw, and the moment the fault began.
type Workload struct {
	t       testing.TB
	cluster Cluster
	byID    map[string]Node
	opts    Options
	users   []*user

	publishHTTP *http.Client // shorter than a stuck owner's wait: a hung request is retried elsewhere
	adminHTTP   *http.Client

	stop    chan struct{}
	pubs    sync.WaitGroup
	recv    sync.WaitGroup
	faultAt atomic.Int64 // unix nanos of MarkFault; 0 before

	attempts, rejected atomic.Int64
}

// Start connects every user's subscriber, then starts one publisher per
// user and one that publishes batches spanning every user. Subscribers and
// publishers stop when the test ends, before anything the test registered
// earlier (the cluster) is cleaned up.
func Start(t testing.TB, c Cluster, o Options) *Workload {
	t.Helper()
	if o.Interval == 0 {
		o.Interval = 25 * time.Millisecond
	}
	if o.GiveUp == 0 {
		o.GiveUp = 15 * time.Second
	}
	if o.Users <= 0 || len(o.Placement) == 0 || c.Token == nil {
		t.Fatalf("faultload: need Users, Placement and Cluster.Token: %+v", o)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * o.Users
	tr.TLSClientConfig = c.TLS
	w := &Workload{
		t: t, cluster: c, opts: o, stop: make(chan struct{}),
		publishHTTP: &http.Client{Timeout: publishWait, Transport: tr},
		adminHTTP:   &http.Client{Timeout: adminWait, Transport: tr},
	}
	w.byID = make(map[string]Node, len(c.Nodes))
	for _, n := range c.Nodes {
		w.byID[n.ID] = n
	}
	for _, id := range o.Placement {
		w.node(id) // fails the test if no node has that id
	}
	dialErr := make([]error, o.Users)
	var dials sync.WaitGroup
	for i := range o.Users {
		u := newUser(fmt.Sprintf("user%02d", i), o.Placement[i%len(o.Placement)])
		w.users = append(w.users, u)
		eps := []string{w.node(u.first).WSURL}
		for _, n := range c.Nodes {
			if n.ID != u.first {
				eps = append(eps, n.WSURL)
			}
		}
		cfg := client.DefaultConfig()
		cfg.Endpoints = eps
		cfg.Token = func() (string, error) { return c.Token(u.name) }
		cfg.TLS = c.TLS
		cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		cfg.Logger = slog.New(&u.sdk)
		dials.Add(1)
		go func() {
			defer dials.Done()
			ctx, cancel := context.WithTimeout(context.Background(), dialWait)
			defer cancel()
			u.cl, dialErr[i] = client.Dial(ctx, cfg)
		}()
	}
	dials.Wait()
	t.Cleanup(w.shutdown)
	if err := errors.Join(dialErr...); err != nil {
		t.Fatalf("faultload: dial: %v", err)
	}
	for _, u := range w.users {
		u.receive(&w.recv)
	}
	for _, u := range w.users {
		w.pubs.Add(1)
		go w.publish(u)
	}
	// Besides one publisher per user, batches that span every user: an
	// owner replicates those to each backup in one call, the path that
	// carries a real publisher's load.
	w.pubs.Add(1)
	go w.publishBatches()
	return w
}

// node returns the node with id, failing the test if there is none.
func (w *Workload) node(id string) Node {
	w.t.Helper()
	n, ok := w.byID[id]
	if !ok {
		w.t.Fatalf("faultload: no node %q in the cluster", id)
	}
	return n
}

// MarkFault notes that the fault begins now: publishes begun from here on
// count as after the fault.
func (w *Workload) MarkFault() { w.faultAt.Store(time.Now().UnixNano()) }

func (w *Workload) faultBegun() bool { return w.faultAt.Load() != 0 }

// WaitAcked waits until every user has n acknowledged messages; it fails
// the test at once after timeout.
func (w *Workload) WaitAcked(n int, timeout time.Duration) {
	w.t.Helper()
	if behind := w.waitEach(n, timeout, func(u *user) int { all, _ := u.acked(); return all }); len(behind) > 0 {
		w.t.Fatalf("timed out after %v waiting for %d acknowledged messages per user; behind: %v", timeout, n, behind)
	}
}

// RunThrough keeps the workload going after the fault for at least d, and
// until every user has n acknowledged publishes begun after the fault: the
// cluster serves every user again. Users still behind after a further
// timeout are an error, not fatal: Check then says why, per user.
func (w *Workload) RunThrough(d time.Duration, n int, timeout time.Duration) {
	w.t.Helper()
	time.Sleep(d)
	if behind := w.waitEach(n, timeout, func(u *user) int { _, after := u.acked(); return after }); len(behind) > 0 {
		w.t.Errorf("after %v, users with fewer than %d publishes acknowledged since the fault: %v", timeout, n, behind)
	}
}

// waitEach waits until count(u) >= n for every user, or timeout; it
// returns the users still behind.
func (w *Workload) waitEach(n int, timeout time.Duration, count func(*user) int) []string {
	deadline := time.Now().Add(timeout)
	for {
		var behind []string
		for _, u := range w.users {
			if count(u) < n {
				behind = append(behind, u.name)
			}
		}
		if len(behind) == 0 || time.Now().After(deadline) {
			return behind
		}
		time.Sleep(pollEvery)
	}
}

// stopPublishing stops the publishers; each finishes the message it has.
func (w *Workload) stopPublishing() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.pubs.Wait()
}

// shutdown stops publishers and subscribers; idempotent.
func (w *Workload) shutdown() {
	w.stopPublishing()
	for _, u := range w.users {
		if u.cl != nil {
			_ = u.cl.Close()
		}
	}
	w.recv.Wait()
	w.publishHTTP.CloseIdleConnections()
}
