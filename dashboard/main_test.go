package dashboard_test

import (
	"testing"

	"github.com/switchboard/switchboard/internal/testenv"
)

// TestMain fails the package if a test leaves a goroutine behind.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
