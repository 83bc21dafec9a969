package client

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string // "" means valid
	}{
		{"default with endpoint and token", func(*Config) {}, ""},
		{"zero values take defaults", func(c *Config) { c.BackoffBase, c.BackoffMax, c.Buffer, c.RefreshBefore = 0, 0, 0, 0 }, ""},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "Endpoints"},
		{"http endpoint", func(c *Config) { c.Endpoints = []string{"http://h/v1/connect"} }, "Endpoints[0]"},
		{"no token", func(c *Config) { c.Token = nil }, "Token"},
		{"cap below base", func(c *Config) { c.BackoffBase, c.BackoffMax = time.Second, time.Millisecond }, "BackoffMax"},
		{"negative buffer", func(c *Config) { c.Buffer = -1 }, "Buffer"},
		{"negative refresh lead", func(c *Config) { c.RefreshBefore = -time.Second }, "RefreshBefore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Endpoints = []string{"ws://h:1/v1/connect"}
			cfg.Token = StaticToken("t")
			tt.edit(&cfg)
			got, err := cfg.normalize()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if got.Buffer != 1024 || got.BackoffBase != 100*time.Millisecond || got.RefreshBefore != 30*time.Second || got.Logger == nil {
					t.Fatalf("defaults not applied: %+v", got)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %v, want ErrConfig naming %s", err, tt.field)
			}
		})
	}
}
