package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// node of every test cluster, and every client, must stop everything it
// started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
