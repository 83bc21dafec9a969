package broker

import (
	"testing"

	"github.com/switchboard/switchboard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
