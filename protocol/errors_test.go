package protocol

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestErrorsMapToStatusAndCloseCode(t *testing.T) {
	tests := []struct {
		err    error
		status int
		close  CloseCode
		slug   string
	}{
		{Errorf(ErrBadRequest, "user is required"), http.StatusBadRequest, CloseProtocol, "protocol_error"},
		{fmt.Errorf("%w: bad token", ErrUnauthorized), http.StatusUnauthorized, CloseUnauthorized, "unauthorized"},
		{Errorf(ErrTokenExpired, "token expired at 12:00"), http.StatusUnauthorized, CloseUnauthorized, "token_expired"},
		{Errorf(ErrForbidden, "origin not allowed"), http.StatusForbidden, CloseTryAgainLater, "unavailable"},
		{Errorf(ErrTooLarge, "body over the limit"), http.StatusRequestEntityTooLarge, CloseTooLarge, "frame_too_large"},
		{Errorf(ErrInvalidUTF8, "text frame"), http.StatusBadRequest, CloseInvalidUTF8, "invalid_utf8"},
		{Errorf(ErrProtocolViolation, "unmasked frame"), http.StatusInternalServerError, CloseProtocolViolation, "protocol_violation"},
		{Errorf(ErrUnsupportedData, "binary message"), http.StatusInternalServerError, CloseUnsupportedData, "unsupported_data"},
		{Errorf(ErrRateLimited, "over 100 frames/s"), http.StatusTooManyRequests, CloseRateLimited, "rate_limited"},
		{Errorf(ErrTooManyConnections, "user has 8"), http.StatusServiceUnavailable, CloseRateLimited, "too_many_connections"},
		{fmt.Errorf("%w: %w", ErrUnavailable, context.DeadlineExceeded), http.StatusServiceUnavailable, CloseTryAgainLater, "unavailable"},
		{ErrShuttingDown, http.StatusServiceUnavailable, CloseGoingAway, "shutting_down"},
		{fmt.Errorf("%w: session moved", ErrMoved), http.StatusServiceUnavailable, CloseMoved, "draining"},
		{ErrContinuityLost, http.StatusServiceUnavailable, CloseContinuityLost, "continuity_lost"},
		{ErrSlowConsumer, http.StatusInternalServerError, CloseSlowConsumer, "slow_consumer"},
		{ErrBadFrame, http.StatusBadRequest, CloseProtocol, "protocol_error"},
		{Errorf(ErrConflict, "key is the primary"), http.StatusConflict, CloseTryAgainLater, "unavailable"},
		{errors.New("something else"), http.StatusInternalServerError, CloseTryAgainLater, "unavailable"},
	}
	for _, tt := range tests {
		if got := StatusOf(tt.err); got != tt.status {
			t.Errorf("StatusOf(%v) = %d, want %d", tt.err, got, tt.status)
		}
		if got := CloseOf(tt.err); got != tt.close {
			t.Errorf("CloseOf(%v) = %d, want %d", tt.err, got, tt.close)
		}
		if got := SlugOf(tt.err); got != tt.slug {
			t.Errorf("SlugOf(%v) = %q, want %q", tt.err, got, tt.slug)
		}
	}
}

func TestFailedCloseCodes(t *testing.T) {
	for code := range slugs {
		want := code == 1002 || code == 1003 || code == 1007 || code == 1009
		if code.Failed() != want {
			t.Errorf("CloseCode(%d).Failed() = %v, want %v", code, code.Failed(), want)
		}
	}
}

func TestErrorfReadsAsItsMessage(t *testing.T) {
	err := Errorf(ErrBadRequest, "id must be 1..%d bytes", 256)
	if err.Error() != "id must be 1..256 bytes" || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Errorf = %q (is ErrBadRequest: %v)", err, errors.Is(err, ErrBadRequest))
	}
}

func TestEveryCloseCodeHasASlugAndIsSendable(t *testing.T) {
	for code, slug := range slugs {
		if slug == "" || !code.Sendable() {
			t.Errorf("close %d: slug %q, sendable %v", code, slug, code.Sendable())
		}
	}
	seen := map[string]CloseCode{}
	for code, slug := range slugs {
		seen[slug] = code
	}
	for _, row := range errorTable {
		if row.close != 0 && row.close.Slug() == "" {
			t.Errorf("%v closes with %d, which has no slug", row.err, row.close)
		}
		if row.slug == "" {
			continue
		}
		if row.close == 0 {
			t.Errorf("%v has slug %q but no close code", row.err, row.slug)
		}
		if code, dup := seen[row.slug]; dup {
			t.Errorf("slug %q of %v is taken already (close %d)", row.slug, row.err, code)
		}
		seen[row.slug] = row.close
	}
}
