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
	}{
		{Errorf(ErrBadRequest, "user is required"), http.StatusBadRequest, CloseProtocol},
		{fmt.Errorf("%w: bad token", ErrUnauthorized), http.StatusUnauthorized, CloseUnauthorized},
		{Errorf(ErrTooLarge, "body over the limit"), http.StatusRequestEntityTooLarge, CloseTooLarge},
		{fmt.Errorf("%w: %w", ErrUnavailable, context.DeadlineExceeded), http.StatusServiceUnavailable, CloseTryAgainLater},
		{ErrShuttingDown, http.StatusServiceUnavailable, CloseGoingAway},
		{fmt.Errorf("%w: session moved", ErrMoved), http.StatusServiceUnavailable, CloseMoved},
		{ErrContinuityLost, http.StatusServiceUnavailable, CloseContinuityLost},
		{ErrSlowConsumer, http.StatusInternalServerError, CloseSlowConsumer},
		{ErrBadFrame, http.StatusBadRequest, CloseProtocol},
		{errors.New("something else"), http.StatusInternalServerError, CloseTryAgainLater},
	}
	for _, tt := range tests {
		if got := StatusOf(tt.err); got != tt.status {
			t.Errorf("StatusOf(%v) = %d, want %d", tt.err, got, tt.status)
		}
		if got := CloseOf(tt.err); got != tt.close {
			t.Errorf("CloseOf(%v) = %d, want %d", tt.err, got, tt.close)
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
	for _, row := range errorTable {
		if row.close != 0 && row.close.Slug() == "" {
			t.Errorf("%v closes with %d, which has no slug", row.err, row.close)
		}
	}
}
