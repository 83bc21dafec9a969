package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/benchload"

	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
	"github.com/switchboard/switchboard/session"
)

// benchProposers is the number of concurrent proposers, as in
// consensus/bench_test.go, so the two benchmarks compare directly.
const benchProposers = 256

// benchRun makes user names unique across the runs of one process: the
// testing package calls a benchmark more than once (N=1, then N).
var benchRun atomic.Int64

// BenchmarkRegistryClaims3Nodes measures registry claims through the
// node's proposer (session codec, batching proposer, Raft with fsync on,
// apply) on an in-process 3-node cluster, from the leader and from a
// follower (batches forwarded over the peer link). The baseline is
// consensus's BenchmarkRaftApplyPlain: one raft.Apply per command.
func BenchmarkRegistryClaims3Nodes(b *testing.B) {
	// clustertest keeps consensus.DefaultConfig's NoSync=false: fsync on.
	c := clustertest.Start(b, 3)
	for _, bc := range []struct {
		name     string
		follower bool
	}{
		{"leader", false},
		{"follower", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			leader := c.WaitLeader()
			target := leader
			if bc.follower {
				for _, id := range c.Running() {
					if id != leader {
						target = id
						break
					}
				}
			}
			nd := c.Node(target)
			if nd == nil {
				b.Fatalf("node %s not running", target)
			}
			reg := nd.Registry()
			run := benchRun.Add(1)
			runClaims(b, func(ctx context.Context, i int64) error {
				return claim(ctx, reg, fmt.Sprintf("bench-%d-%s-%d", run, bc.name, i))
			})
		})
	}
}

// claim proposes a first claim for user and checks the registry took it.
func claim(ctx context.Context, reg node.RegistryClient, user string) error {
	res, err := reg.Propose(ctx, session.Command{
		Kind: session.KindClaim, User: user, Node: "n1", Session: "s", Epoch: 0,
	})
	if err != nil {
		return fmt.Errorf("claim %s: %w", user, err)
	}
	if res.Err != nil {
		return fmt.Errorf("claim %s: registry: %w", user, res.Err)
	}
	return nil
}

// runClaims runs op b.N times over benchProposers goroutines (benchload.Run).
func runClaims(b *testing.B, op func(ctx context.Context, i int64) error) {
	benchload.Run(b, benchProposers, op)
}

// BenchmarkPublishForwarded3Nodes measures the forwarding publish path on
// an in-process 3-node cluster over real sockets: batches of
// benchBatch messages posted to n1 for users connected to (owned by) n2
// and n3, so every message is forwarded to its owner, replicated to its
// backup, acknowledged back through n1 and delivered. One cmd is one batch.
func BenchmarkPublishForwarded3Nodes(b *testing.B) { benchPublishForwarded(b, nil) }

// BenchmarkPublishForwarded3NodesTraced is BenchmarkPublishForwarded3Nodes
// with tracing on, exporting to an in-process OTLP receiver: what
// --otlp-endpoint costs the publish path when nothing is sampled (ratio
// 0: each request's root decision) and at the default ratio (1%: the
// sampled requests' spans and their export, spread over all requests).
func BenchmarkPublishForwarded3NodesTraced(b *testing.B) {
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(recv.Close)
	for _, ratio := range []float64{0, 0.01} {
		b.Run(fmt.Sprintf("ratio=%v", ratio), func(b *testing.B) {
			benchPublishForwarded(b, func(cfg *node.Config) {
				cfg.Tracing.Endpoint, cfg.Tracing.SampleRatio = recv.URL, ratio
			})
		})
	}
}

func benchPublishForwarded(b *testing.B, configure func(*node.Config)) {
	const (
		users      = 60
		benchBatch = 20
		publishers = 16
	)
	c := clustertest.Start(b, 3, clustertest.Options{Configure: configure})
	run := benchRun.Add(1)
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("fw-%d-%d", run, i)
		ws := dialWS(b, c.ConnectURL([]string{"n2", "n3"}[i%2]), nil)
		writeText(b, ws, helloFrame(c.Token(names[i])))
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, w, err := ws.ReadMessage(); err != nil || !strings.Contains(string(w), `"welcome"`) {
			b.Fatalf("welcome for %s: %v %s", names[i], err, w)
		}
		_ = ws.SetReadDeadline(time.Time{})
		go func() { // drain deliveries until the cleanup closes the socket
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	url := c.URL("n1") + "/v1/publish/batch"
	benchload.Run(b, publishers, func(ctx context.Context, i int64) error {
		msgs := make([]map[string]any, benchBatch)
		for k := range msgs {
			msgs[k] = map[string]any{"user": names[(int(i)*benchBatch+k)%users], "data": k}
		}
		body, _ := json.Marshal(map[string]any{"messages": msgs})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+clustertest.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || bytes.Contains(out, []byte(`"error"`)) {
			return fmt.Errorf("batch %d: %d %s", i, resp.StatusCode, out)
		}
		return nil
	})
}
