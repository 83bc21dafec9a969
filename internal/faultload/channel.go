package faultload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/client"
	"github.com/switchboard/switchboard/protocol"
)

// ChannelOptions shape a channel workload.
type ChannelOptions struct {
	// Channel is the channel's name.
	Channel string
	// CreateVia is the node the channel is first published through: its
	// owner.
	CreateVia string
	// Placement lists node ids: subscriber i tries Placement[i] first,
	// then every other node.
	Placement []string
}

// ChannelWorkload is the fault workload of a channel (G7): a subscriber
// (the Go SDK, from the channel's start) per placement entry, and a
// publisher that retries each message under its id through the live nodes
// until it is acknowledged.
type ChannelWorkload struct {
	t       testing.TB
	cluster Cluster
	opts    ChannelOptions
	http    *http.Client
	subs    []*channelSub
	stop    chan struct{}
	done    chan struct{}
	recv    sync.WaitGroup

	mu     sync.Mutex
	acked  map[string]uint64 // publish id → seq
	bySeq  map[uint64]string
	errors []string // contradictions and give-ups
}

type channelSub struct {
	name string
	cl   *client.Client
	mu   sync.Mutex
	seqs []uint64
	lost []string // continuity lost and sequence anomalies
}

// StartChannel creates the channel, connects and subscribes the
// subscribers and starts publishing. Everything stops when the test ends.
func StartChannel(t testing.TB, c Cluster, o ChannelOptions) *ChannelWorkload {
	t.Helper()
	if o.Channel == "" || o.CreateVia == "" || len(o.Placement) == 0 || c.Token == nil {
		t.Fatalf("faultload: need Channel, CreateVia, Placement and Cluster.Token: %+v", o)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = c.TLS
	w := &ChannelWorkload{t: t, cluster: c, opts: o, http: &http.Client{Timeout: publishWait, Transport: tr},
		stop: make(chan struct{}), done: make(chan struct{}), acked: map[string]uint64{}, bySeq: map[uint64]string{}}
	byID := map[string]Node{}
	for _, n := range c.Nodes {
		byID[n.ID] = n
	}
	var created protocol.PublishResult
	deadline := time.Now().Add(dialWait)
	for {
		err := w.post(byID[o.CreateVia].BaseURL, protocol.NewChannelPublish(o.Channel, json.RawMessage(`"created"`), "create"), &created)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("faultload: creating %s through %s: %v", o.Channel, o.CreateVia, err)
		}
		time.Sleep(retryPause)
	}
	w.record("create", created)
	for i, first := range o.Placement {
		s := &channelSub{name: fmt.Sprintf("watcher%02d", i)}
		eps := []string{byID[first].WSURL}
		for _, n := range c.Nodes {
			if n.ID != first {
				eps = append(eps, n.WSURL)
			}
		}
		cfg := client.DefaultConfig()
		cfg.Endpoints, cfg.TLS = eps, c.TLS
		cfg.Token = func() (string, error) { return c.Token(s.name) }
		cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), dialWait)
		cl, err := client.Dial(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("faultload: %s: %v", s.name, err)
		}
		s.cl = cl
		from := uint64(0)
		sub, err := cl.Subscribe(o.Channel, client.SubscribeOptions{From: &from})
		if err != nil {
			t.Fatalf("faultload: %s: %v", s.name, err)
		}
		w.recv.Add(2)
		go func() {
			defer w.recv.Done()
			for m := range sub.Messages() {
				s.mu.Lock()
				s.seqs = append(s.seqs, m.Seq)
				s.mu.Unlock()
			}
		}()
		go func() {
			defer w.recv.Done()
			for e := range sub.Events() {
				if e.Kind == client.SubContinuityLost || e.Kind == client.SubError && e.Code == "sequence_anomaly" {
					s.mu.Lock()
					s.lost = append(s.lost, fmt.Sprint(e.Err))
					s.mu.Unlock()
				}
			}
		}()
		w.subs = append(w.subs, s)
	}
	go w.publish()
	t.Cleanup(w.shutdown)
	return w
}

func (w *ChannelWorkload) post(base string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/v1/publish", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.cluster.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &apiError{status: resp.StatusCode}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// record notes an acknowledgement and any contradiction with earlier ones.
func (w *ChannelWorkload) record(id string, pr protocol.PublishResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.bySeq[pr.Seq]; ok && prev != id {
		w.errors = append(w.errors, fmt.Sprintf("seq %d acknowledged for %s and %s", pr.Seq, prev, id))
	}
	if prev, ok := w.acked[id]; ok && prev != pr.Seq {
		w.errors = append(w.errors, fmt.Sprintf("id %s acknowledged as seq %d and %d", id, prev, pr.Seq))
	}
	if pr.Channel != w.opts.Channel || pr.ID != id {
		w.errors = append(w.errors, fmt.Sprintf("publish %s answered for channel %q id %q", id, pr.Channel, pr.ID))
	}
	w.acked[id], w.bySeq[pr.Seq] = pr.Seq, id
}

// publish sends one message after another, each retried under its id
// through the live nodes in turn until acknowledged or GiveUp passes.
func (w *ChannelWorkload) publish() {
	defer close(w.done)
	for i := 0; ; i++ {
		id := fmt.Sprintf("m%d", i)
		body := protocol.NewChannelPublish(w.opts.Channel, json.RawMessage(fmt.Sprint(i)), id)
		deadline := time.Now().Add(15 * time.Second)
		var last error
		for try := 0; ; try++ {
			select {
			case <-w.stop:
				return
			default:
			}
			live := w.cluster.live()
			var pr protocol.PublishResult
			if last = w.post(w.baseOf(live[(i+try)%len(live)]), body, &pr); last == nil {
				w.record(id, pr)
				break
			}
			if time.Now().After(deadline) {
				w.mu.Lock()
				w.errors = append(w.errors, fmt.Sprintf("%s never acknowledged (last: %v)", id, last))
				w.mu.Unlock()
				return
			}
			time.Sleep(retryPause)
		}
	}
}

func (w *ChannelWorkload) baseOf(id string) string {
	for _, n := range w.cluster.Nodes {
		if n.ID == id {
			return n.BaseURL
		}
	}
	return ""
}

// Acked is how many publishes were acknowledged so far.
func (w *ChannelWorkload) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// WaitAcked waits until n more publishes than now are acknowledged.
func (w *ChannelWorkload) WaitAcked(n int, timeout time.Duration) {
	w.t.Helper()
	want := w.Acked() + n
	deadline := time.Now().Add(timeout)
	for w.Acked() < want {
		if time.Now().After(deadline) {
			w.t.Fatalf("faultload: %d of %d publishes acknowledged after %v", w.Acked(), want, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// Check stops publishing and asserts G7: every subscriber received every
// acknowledged seq exactly once, in seq order (1…the highest, since the
// channel started with the workload), and no continuity was lost; no seq
// was acknowledged twice, no id under two seqs, every publish was
// acknowledged. It returns the highest acknowledged seq.
func (w *ChannelWorkload) Check() uint64 {
	w.t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	errs := slices.Clone(w.errors)
	var top uint64
	for _, seq := range w.acked {
		top = max(top, seq)
	}
	w.mu.Unlock()
	if len(errs) > 0 {
		w.t.Fatalf("faultload: channel publishes: %v", errs)
	}
	deadline := time.Now().Add(deliverWait)
	for _, s := range w.subs {
		for {
			s.mu.Lock()
			n := len(s.seqs)
			have := n > 0 && s.seqs[n-1] >= top
			s.mu.Unlock()
			if have {
				break
			}
			if time.Now().After(deadline) {
				w.t.Fatalf("faultload: %s has %d messages, not yet seq %d, after %v", s.name, n, top, deliverWait)
			}
			time.Sleep(deliverPoll)
		}
		s.mu.Lock()
		err := checkChannel(s.seqs, s.lost, top)
		s.mu.Unlock()
		if err != nil {
			w.t.Fatalf("faultload: %s: %v", s.name, err)
		}
	}
	return top
}

// checkChannel says how a subscriber's seqs break G7, given that the
// channel's acknowledged seqs are 1..top: each must come once, in order,
// and no loss of continuity may have been reported.
func checkChannel(seqs []uint64, lost []string, top uint64) error {
	var problems []error
	for i, seq := range seqs {
		if seq != uint64(i)+1 {
			problems = append(problems, fmt.Errorf("message %d has seq %d (around %v)", i, seq, seqs[max(0, i-3):min(len(seqs), i+3)]))
			break
		}
	}
	if n := uint64(len(seqs)); len(problems) == 0 && n < top {
		problems = append(problems, fmt.Errorf("received 1..%d of 1..%d acknowledged", n, top))
	}
	for _, l := range lost {
		problems = append(problems, errors.New(l))
	}
	return errors.Join(problems...)
}

// shutdown closes the subscribers and waits for their readers.
func (w *ChannelWorkload) shutdown() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	for _, s := range w.subs {
		_ = s.cl.Close()
	}
	w.recv.Wait()
}
