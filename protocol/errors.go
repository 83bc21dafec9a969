package protocol

import (
	"errors"
	"fmt"
	"net/http"
)

// The contract's errors. Server code wraps them as they travel (Errorf, or
// fmt.Errorf with %w); the edges map them once, through StatusOf for HTTP
// answers and CloseOf for WebSocket closes.
var (
	// ErrBadRequest: a body or frame that breaks the contract.
	ErrBadRequest = errors.New("bad request")
	// ErrUnauthorized: a missing or bad token or key.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: no such endpoint, session or node.
	ErrNotFound = errors.New("not found")
	// ErrMethodNotAllowed: the endpoint exists, the method does not.
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrTooLarge: a body, frame or message over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrInvalidUTF8: a text frame that is not UTF-8.
	ErrInvalidUTF8 = errors.New("invalid UTF-8")
	// ErrRateLimited: over a rate limit.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: no quorum, or the stream's holders cannot be
	// reached now; the same request may succeed later (a publish with the
	// same id is stored once).
	ErrUnavailable = errors.New("unavailable")
	// ErrShuttingDown: the node is stopping.
	ErrShuttingDown = errors.New("shutting down")
	// ErrMoved: the node drains or is cut off, or the stream moved to
	// another node: reconnect elsewhere now and resume.
	ErrMoved = errors.New("stream moved")
	// ErrContinuityLost: a connected stream was lost or retired.
	ErrContinuityLost = errors.New("continuity lost")
	// ErrSlowConsumer: a connection's send queue overflowed.
	ErrSlowConsumer = errors.New("slow consumer")
	// ErrHelloTimeout: no hello within the hello timeout.
	ErrHelloTimeout = errors.New("hello timeout")
	// ErrInternal: a bug on the server.
	ErrInternal = errors.New("internal error")
)

// errorTable maps each error to its HTTP status and close code; 0 where an
// error never reaches that edge. The first row an error matches decides.
var errorTable = []struct {
	err    error
	status int
	close  CloseCode
}{
	{ErrBadRequest, http.StatusBadRequest, CloseProtocol},
	{ErrUnauthorized, http.StatusUnauthorized, CloseUnauthorized},
	{ErrNotFound, http.StatusNotFound, 0},
	{ErrMethodNotAllowed, http.StatusMethodNotAllowed, 0},
	{ErrTooLarge, http.StatusRequestEntityTooLarge, CloseTooLarge},
	{ErrInvalidUTF8, http.StatusBadRequest, CloseInvalidUTF8},
	{ErrRateLimited, http.StatusTooManyRequests, CloseRateLimited},
	{ErrUnavailable, http.StatusServiceUnavailable, CloseTryAgainLater},
	{ErrShuttingDown, http.StatusServiceUnavailable, CloseGoingAway},
	{ErrMoved, http.StatusServiceUnavailable, CloseMoved},
	{ErrContinuityLost, http.StatusServiceUnavailable, CloseContinuityLost},
	{ErrSlowConsumer, 0, CloseSlowConsumer},
	{ErrHelloTimeout, 0, CloseHelloTimeout},
	{ErrInternal, http.StatusInternalServerError, CloseInternal},
}

// StatusOf is the HTTP status that answers err: 500 for an error the
// contract does not name.
func StatusOf(err error) int {
	for _, row := range errorTable {
		if row.status != 0 && errors.Is(err, row.err) {
			return row.status
		}
	}
	return http.StatusInternalServerError
}

// CloseOf is the close code that ends a connection because of err. An
// error the contract does not name is a transient failure of the server
// as far as the client can tell: 1013, try again later.
func CloseOf(err error) CloseCode {
	for _, row := range errorTable {
		if row.close != 0 && errors.Is(err, row.err) {
			return row.close
		}
	}
	return CloseTryAgainLater
}

// Retryable reports whether the answer to err asks the caller to try again
// later (an HTTP answer then carries Retry-After).
func Retryable(err error) bool {
	switch StatusOf(err) {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return true
	}
	return false
}

// Errorf returns an error that matches sentinel with errors.Is and reads as
// the formatted message alone: what a client is told stays short, and the
// edge still knows which answer it gets.
func Errorf(sentinel error, format string, args ...any) error {
	return &contractError{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

type contractError struct {
	sentinel error
	msg      string
}

func (e *contractError) Error() string { return e.msg }
func (e *contractError) Unwrap() error { return e.sentinel }
