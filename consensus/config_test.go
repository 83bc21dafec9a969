package consensus

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.NodeID = "n1"
		c.DataDir = t.TempDir()
		c.AdvertiseAddr = "127.0.0.1:7701"
		c.Listener = fakeListener{}
		c.Dial = func(context.Context, string, time.Duration) (net.Conn, error) { return nil, errors.New("no") }
		c.Forward = func(context.Context, string, []byte) ([]byte, error) { return nil, errors.New("no") }
		return c
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero values take defaults", func(c *Config) { c.MaxVoters, c.HeartbeatTimeout, c.BatchMaxBytes = 0, 0, 0 }, ""},
		{"no node id", func(c *Config) { c.NodeID = "" }, "NodeID"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"no listener", func(c *Config) { c.Listener = nil }, "Listener"},
		{"no dial", func(c *Config) { c.Dial = nil }, "Dial"},
		{"no forward", func(c *Config) { c.Forward = nil }, "Forward"},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "localhost" }, "AdvertiseAddr"},
		{"advertise without host", func(c *Config) { c.AdvertiseAddr = ":7701" }, "AdvertiseAddr"},
		{"negative voters", func(c *Config) { c.MaxVoters = -1 }, "MaxVoters"},
		{"negative grace", func(c *Config) { c.DeadServerGrace = -time.Second }, "DeadServerGrace"},
		{"lease over heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, "LeaderLeaseTimeout"},
		{"election under heartbeat", func(c *Config) { c.ElectionTimeout = 100 * time.Millisecond }, "ElectionTimeout"},
		{"tiny heartbeat", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }, "HeartbeatTimeout"},
		{"tiny commit timeout", func(c *Config) { c.CommitTimeout = time.Microsecond }, "CommitTimeout"},
		{"negative batch", func(c *Config) { c.BatchMaxCommands = -5 }, "BatchMaxCommands"},
		{"negative in flight", func(c *Config) { c.MaxInFlightBatches = -1 }, "MaxInFlightBatches"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want ErrInvalidConfig naming %s", err, tt.field)
			}
		})
	}
}

func TestNewRejectsInvalidConfigAndNilStateMachine(t *testing.T) {
	if _, err := New(Config{}, newKV()); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty config: %v", err)
	}
	if _, err := New(DefaultConfig(), nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("nil state machine: %v", err)
	}
}

type fakeListener struct{}

func (fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (fakeListener) Close() error              { return nil }
func (fakeListener) Addr() net.Addr            { return advertiseAddr("127.0.0.1:0") }
