package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// ErrUnavailable means the cluster answered 503 (no quorum or owner
// unavailable) on every attempt.
var ErrUnavailable = errors.New("client: publish unavailable")

// maxResponseBytes bounds how much of a publish answer is read.
const maxResponseBytes = 8 << 20

// PublishRequest is one message to publish (DESIGN.md §4). Data is encoded
// with encoding/json; pass a json.RawMessage for pre-encoded JSON. An empty
// ID is replaced by a random one so that retries stay idempotent (G3).
type PublishRequest struct {
	User string
	Data any
	ID   string
}

// body is the publish API's body for r, its id generated if it has none.
func (r PublishRequest) body() (protocol.Publish, error) {
	data, err := json.Marshal(r.Data)
	if err != nil {
		return protocol.Publish{}, err
	}
	if r.ID == "" {
		r.ID = NewID()
	}
	return protocol.NewPublish(r.User, data, r.ID), nil
}

// PublishResult is the answer to one publish. In a batch, a message that
// failed has Error set and the other fields empty.
type PublishResult = protocol.PublishResult

// APIError is a non-200 answer of the publish API.
type APIError struct {
	Status  int
	Message string // the body's "error" field, or the status text
}

// Error describes the status and the server's message.
func (e *APIError) Error() string {
	return fmt.Sprintf("client: publish answered %d: %s", e.Status, e.Message)
}

// Unwrap maps statuses that have a sentinel onto it.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	}
	return nil
}

// Publisher publishes over HTTP to any of a set of nodes, retrying
// transient failures with the same message ids so that a message is stored
// once however many times it is sent. It is safe for concurrent use; set
// its exported fields before first use.
type Publisher struct {
	// MaxAttempts bounds the tries of one call (default 5); the call's
	// context bounds them too.
	MaxAttempts int
	// RetryBase and RetryMax shape the full-jitter backoff between tries
	// when the server gives no Retry-After (defaults 100ms and 2s).
	RetryBase time.Duration
	RetryMax  time.Duration
	// MaxRetryAfter caps a server's Retry-After (default 30s).
	MaxRetryAfter time.Duration
	// Logger receives retry logs; nil discards them.
	Logger *slog.Logger

	bases  []string
	apiKey string
	hc     *http.Client
	next   atomic.Uint64 // round-robin start over bases
}

// NewPublisher returns a Publisher for nodes at baseURLs (http://host:port)
// authenticating with apiKey. A nil hc uses a client with a 30 s timeout.
func NewPublisher(baseURLs []string, apiKey string, hc *http.Client) *Publisher {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	bases := make([]string, 0, len(baseURLs))
	for _, b := range baseURLs {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			bases = append(bases, b)
		}
	}
	return &Publisher{
		MaxAttempts:   5,
		RetryBase:     100 * time.Millisecond,
		RetryMax:      2 * time.Second,
		MaxRetryAfter: 30 * time.Second,
		bases:         bases,
		apiKey:        apiKey,
		hc:            hc,
	}
}

// Publish publishes data to user and returns once the message is durable.
// If id is empty a random one is generated; retries reuse it.
func (p *Publisher) Publish(ctx context.Context, user string, data any, id string) (PublishResult, error) {
	if user == "" {
		return PublishResult{}, fmt.Errorf("%w: empty user", ErrConfig)
	}
	msg, err := PublishRequest{User: user, Data: data, ID: id}.body()
	if err != nil {
		return PublishResult{}, fmt.Errorf("client: encode publish: %w", err)
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return PublishResult{}, fmt.Errorf("client: encode publish: %w", err)
	}
	var res PublishResult
	if err := p.do(ctx, "/v1/publish", body, &res); err != nil {
		return PublishResult{}, err
	}
	return res, nil
}

// PublishBatch publishes msgs in one request and returns one result per
// message, in order. A message that failed on its own has Error set; the
// returned error is for the request as a whole. Empty ids are generated
// (msgs itself is not modified).
func (p *Publisher) PublishBatch(ctx context.Context, msgs []PublishRequest) ([]PublishResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	batch := protocol.PublishBatch{Messages: make([]protocol.Publish, len(msgs))}
	for i, m := range msgs {
		if m.User == "" {
			return nil, fmt.Errorf("%w: message %d: empty user", ErrConfig, i)
		}
		msg, err := m.body()
		if err != nil {
			return nil, fmt.Errorf("client: encode message %d: %w", i, err)
		}
		batch.Messages[i] = msg
	}
	body, err := json.Marshal(batch)
	if err != nil {
		return nil, fmt.Errorf("client: encode batch: %w", err)
	}
	var res protocol.PublishBatchResult
	if err := p.do(ctx, "/v1/publish/batch", body, &res); err != nil {
		return nil, err
	}
	if len(res.Results) != len(msgs) {
		return nil, fmt.Errorf("%w: batch of %d answered with %d results", ErrProtocol, len(msgs), len(res.Results))
	}
	return res.Results, nil
}

// NewID returns a random 128-bit id in hex, for idempotent publishes.
func NewID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails on supported platforms (Go ≥1.24)
	return hex.EncodeToString(b[:])
}

// do posts body to path, rotating over the base URLs and retrying network
// errors and 502/503/504 (the body, and so the ids, are the same each time).
func (p *Publisher) do(ctx context.Context, path string, body []byte, out any) error {
	if len(p.bases) == 0 {
		return fmt.Errorf("%w: no publisher base URLs", ErrConfig)
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "publisher")
	attempts := max(p.MaxAttempts, 1)
	start := int(p.next.Add(1) - 1)
	var lastErr error
	for i := range attempts {
		base := p.bases[(start+i)%len(p.bases)]
		retryAfter, err := p.post(ctx, base+path, body, out)
		if err == nil {
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return fmt.Errorf("client: publish: %w: %w", ctx.Err(), lastErr)
		}
		if !transient(err) {
			return err // a definite answer: retrying cannot change it
		}
		if i == attempts-1 {
			break
		}
		delay := retryAfter
		if delay <= 0 {
			delay = backoff(i+1, p.RetryBase, max(p.RetryMax, p.RetryBase), rand.Int64N)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return fmt.Errorf("client: publish: retry in %v would pass the deadline: %w: %w",
				delay, context.DeadlineExceeded, lastErr)
		}
		log.Debug("retrying publish", "url", base+path, "attempt", i+1, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("client: publish: %w: %w", ctx.Err(), lastErr)
		case <-t.C:
		}
	}
	return fmt.Errorf("client: publish: gave up after %d attempts: %w", attempts, lastErr)
}

// networkError marks a failure to get any answer, which is worth retrying.
type networkError struct{ err error }

func (e *networkError) Error() string { return e.err.Error() }
func (e *networkError) Unwrap() error { return e.err }

func transient(err error) bool {
	var ne *networkError
	if errors.As(err, &ne) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
			return true
		}
	}
	return false
}

// post makes one request and decodes a 200 answer into out. It returns the
// server's Retry-After, if any.
func (p *Publisher) post(ctx context.Context, url string, body []byte, out any) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("client: publish request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.apiKey)
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, &networkError{err: fmt.Errorf("client: POST %s: %w", url, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return 0, &networkError{err: fmt.Errorf("client: read answer of %s: %w", url, err)}
	}
	if len(b) > maxResponseBytes {
		return 0, fmt.Errorf("%w: answer of %s over %d bytes", ErrProtocol, url, maxResponseBytes)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			return 0, fmt.Errorf("%w: undecodable answer of %s: %w", ErrProtocol, url, err)
		}
		return 0, nil
	}
	var e protocol.Error
	msg := http.StatusText(resp.StatusCode)
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	ra := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), p.maxRetryAfter())
	return ra, &APIError{Status: resp.StatusCode, Message: msg}
}

func (p *Publisher) maxRetryAfter() time.Duration {
	if p.MaxRetryAfter > 0 {
		return p.MaxRetryAfter
	}
	return 30 * time.Second
}

// parseRetryAfter reads a Retry-After header (delay in seconds or an HTTP
// date), capped at limit; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time, limit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(limit/time.Second) {
			return limit
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), limit)
}
