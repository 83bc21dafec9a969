package consensus

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are recorded through the global meter provider, which the node
// sets; instruments created before that are delegated once it is set.
type metrics struct {
	applyDuration metric.Float64Histogram
	batchSize     metric.Int64Histogram
	proposals     metric.Int64Counter
}

// Attribute sets, built once: path says whether a batch was applied on this
// node (it leads) or forwarded to the leader.
var (
	attrsLeaderOK     = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "leader"), attribute.String("outcome", "ok")))
	attrsLeaderError  = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "leader"), attribute.String("outcome", "error")))
	attrsForwardOK    = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "forward"), attribute.String("outcome", "ok")))
	attrsForwardError = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "forward"), attribute.String("outcome", "error")))
	attrsLeader       = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "leader")))
	attrsForward      = metric.WithAttributeSet(attribute.NewSet(attribute.String("path", "forward")))
)

func newMetrics() (*metrics, error) {
	meter := otel.Meter("switchboard/consensus")
	applyDuration, err := meter.Float64Histogram("switchboard_consensus_apply_duration_seconds",
		metric.WithDescription("Time from the first proposal of a batch to its result."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
	if err != nil {
		return nil, fmt.Errorf("consensus: apply duration histogram: %w", err)
	}
	batchSize, err := meter.Int64Histogram("switchboard_consensus_batch_size",
		metric.WithDescription("Commands per batch (one Raft log entry, or one forward to the leader)."),
		metric.WithUnit("{command}"),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
	if err != nil {
		return nil, fmt.Errorf("consensus: batch size histogram: %w", err)
	}
	proposals, err := meter.Int64Counter("switchboard_consensus_proposals_total",
		metric.WithDescription("Commands proposed, by path and outcome."),
		metric.WithUnit("{command}"))
	if err != nil {
		return nil, fmt.Errorf("consensus: proposals counter: %w", err)
	}
	return &metrics{applyDuration: applyDuration, batchSize: batchSize, proposals: proposals}, nil
}

// batchDone records one finished batch of n commands.
func (m *metrics) batchDone(forwarded bool, n int, started time.Time, err error) {
	ctx := context.Background()
	pathAttrs, outcome := attrsLeader, attrsLeaderOK
	switch {
	case forwarded && err == nil:
		pathAttrs, outcome = attrsForward, attrsForwardOK
	case forwarded:
		pathAttrs, outcome = attrsForward, attrsForwardError
	case err != nil:
		outcome = attrsLeaderError
	}
	m.proposals.Add(ctx, int64(n), outcome)
	if err == nil {
		m.applyDuration.Record(ctx, time.Since(started).Seconds(), pathAttrs)
		m.batchSize.Record(ctx, int64(n), pathAttrs)
	}
}
