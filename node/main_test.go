package node_test

import (
	"testing"

	"github.com/switchboard/switchboard/internal/testenv"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// node of every test cluster, and every client, must stop everything it
// started.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
