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
	// ErrTokenExpired: a live connection's token expired and no valid
	// refresh replaced it in time.
	ErrTokenExpired = errors.New("token expired")
	// ErrForbidden: a request the node will not serve whoever asks, such
	// as an upgrade from a browser Origin that is not allowed.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such endpoint, session or node.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request cannot apply to the current state (a gossip
	// key to remove that is still the primary somewhere, say).
	ErrConflict = errors.New("conflict")
	// ErrMethodNotAllowed: the endpoint exists, the method does not.
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrTooLarge: a body, frame or message over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrInvalidUTF8: a text frame that is not UTF-8.
	ErrInvalidUTF8 = errors.New("invalid UTF-8")
	// ErrProtocolViolation: a WebSocket frame that breaks RFC 6455.
	ErrProtocolViolation = errors.New("WebSocket protocol violation")
	// ErrUnsupportedData: a binary WebSocket message.
	ErrUnsupportedData = errors.New("unsupported data")
	// ErrRateLimited: over a rate limit.
	ErrRateLimited = errors.New("rate limited")
	// ErrTooManyConnections: over a limit on open connections, the
	// node's or a user's.
	ErrTooManyConnections = errors.New("too many connections")
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
// error never reaches that edge. slug, where set, is the error's own slug
// for a close code that several errors share; otherwise the code's
// (CloseCode.Slug). The first row an error matches decides.
var errorTable = []struct {
	err    error
	status int
	close  CloseCode
	slug   string
}{
	{ErrBadRequest, http.StatusBadRequest, CloseProtocol, ""},
	{ErrTokenExpired, http.StatusUnauthorized, CloseUnauthorized, "token_expired"},
	{ErrUnauthorized, http.StatusUnauthorized, CloseUnauthorized, ""},
	{ErrForbidden, http.StatusForbidden, 0, ""},
	{ErrNotFound, http.StatusNotFound, 0, ""},
	{ErrMethodNotAllowed, http.StatusMethodNotAllowed, 0, ""},
	{ErrConflict, http.StatusConflict, 0, ""},
	{ErrTooLarge, http.StatusRequestEntityTooLarge, CloseTooLarge, ""},
	{ErrInvalidUTF8, http.StatusBadRequest, CloseInvalidUTF8, ""},
	{ErrProtocolViolation, 0, CloseProtocolViolation, ""},
	{ErrUnsupportedData, 0, CloseUnsupportedData, ""},
	{ErrRateLimited, http.StatusTooManyRequests, CloseRateLimited, ""},
	{ErrTooManyConnections, http.StatusServiceUnavailable, CloseRateLimited, "too_many_connections"},
	{ErrUnavailable, http.StatusServiceUnavailable, CloseTryAgainLater, ""},
	{ErrShuttingDown, http.StatusServiceUnavailable, CloseGoingAway, ""},
	{ErrMoved, http.StatusServiceUnavailable, CloseMoved, ""},
	{ErrContinuityLost, http.StatusServiceUnavailable, CloseContinuityLost, ""},
	{ErrSlowConsumer, 0, CloseSlowConsumer, ""},
	{ErrHelloTimeout, 0, CloseHelloTimeout, ""},
	{ErrInternal, http.StatusInternalServerError, CloseInternal, ""},
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
	code, _ := closeOf(err)
	return code
}

// SlugOf is the error slug sent with the close that err calls for: the
// error frame's `code` and the close frame's reason.
func SlugOf(err error) string {
	_, slug := closeOf(err)
	return slug
}

func closeOf(err error) (CloseCode, string) {
	for _, row := range errorTable {
		if row.close != 0 && errors.Is(err, row.err) {
			if row.slug != "" {
				return row.close, row.slug
			}
			return row.close, row.close.Slug()
		}
	}
	return CloseTryAgainLater, CloseTryAgainLater.Slug()
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
