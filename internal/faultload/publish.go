package faultload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// publish publishes to u until stop, each message under an id of its own,
// retried with that same id through random live nodes until answered 200
// (POST /v1/publish).
func (w *Workload) publish(u *user) {
	defer w.pubs.Done()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
	for k := 1; ; k++ {
		select {
		case <-w.stop:
			return
		case <-time.After(time.Duration(rng.Int64N(int64(2 * w.opts.Interval)))):
		}
		id := fmt.Sprintf("%s-m%d", u.name, k)
		msg := protocol.NewPublish(u.name, fmt.Appendf(nil, `{"k":%d}`, k), id)
		begun, afterFault := time.Now(), w.faultBegun()
		for {
			var pr protocol.PublishResult
			w.attempts.Add(1)
			err := w.post(w.via(rng), "/v1/publish", msg, &pr)
			if err == nil {
				u.record(id, pr, afterFault)
				break
			}
			w.rejected.Add(1)
			if time.Since(begun) > w.opts.GiveUp {
				u.giveUp(id, err)
				break
			}
			// Even after stop: giving up on an id would leave its outcome
			// unknown, which the check cannot judge.
			time.Sleep(retryPause)
		}
	}
}

// publishBatches publishes, until stop, one message to every user in one
// POST /v1/publish/batch, and retries the messages not acknowledged (same
// ids) through random live nodes until each is.
func (w *Workload) publishBatches() {
	defer w.pubs.Done()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	type item struct {
		u    *user
		id   string
		msg  protocol.Publish
		last error // why its last try failed
	}
	for k := 1; ; k++ {
		select {
		case <-w.stop:
			return
		case <-time.After(time.Duration(rng.Int64N(int64(4 * w.opts.Interval)))):
		}
		todo := make([]item, len(w.users))
		for i, u := range w.users {
			id := fmt.Sprintf("%s-b%d", u.name, k)
			todo[i] = item{u: u, id: id, msg: protocol.NewPublish(u.name, fmt.Appendf(nil, `{"b":%d}`, k), id)}
		}
		begun, afterFault := time.Now(), w.faultBegun()
		for len(todo) > 0 {
			batch := protocol.PublishBatch{Messages: make([]protocol.Publish, len(todo))}
			for i, it := range todo {
				batch.Messages[i] = it.msg
			}
			var res protocol.PublishBatchResult
			w.attempts.Add(int64(len(todo)))
			err := w.post(w.via(rng), "/v1/publish/batch", batch, &res)
			if err == nil && len(res.Results) != len(todo) {
				err = fmt.Errorf("%d results for %d messages", len(res.Results), len(todo))
			}
			var left []item
			for i, it := range todo {
				switch {
				case err != nil:
					it.last = err
				case res.Results[i].Error != "":
					it.last = errors.New(res.Results[i].Error)
				default:
					it.u.record(it.id, res.Results[i], afterFault)
					continue
				}
				left = append(left, it)
			}
			w.rejected.Add(int64(len(left)))
			todo = left
			if len(todo) == 0 {
				break
			}
			if time.Since(begun) > w.opts.GiveUp {
				for _, it := range todo {
					it.u.giveUp(it.id+" (batch)", it.last)
				}
				break
			}
			time.Sleep(retryPause) // even after stop, as in publish
		}
	}
}

// via picks a random live node to publish through.
func (w *Workload) via(rng *rand.Rand) string {
	live := w.cluster.live()
	return w.byID[live[rng.IntN(len(live))]].BaseURL
}
