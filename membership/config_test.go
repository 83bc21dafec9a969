package membership

import (
	"errors"
	"strings"
	"testing"
)

func validConfig() Config {
	c := DefaultConfig()
	c.NodeID, c.Region, c.Zone = "n1", "r1", "a"
	c.BindAddr = "127.0.0.1:0"
	c.PublicURL = "http://127.0.0.1:7700"
	c.ClusterAddr = "127.0.0.1:7701"
	return c
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(*Config)
		wantField string // "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"empty profile means lan", func(c *Config) { c.Profile = "" }, ""},
		{"wan", func(c *Config) { c.Profile = ProfileWAN }, ""},
		{"local", func(c *Config) { c.Profile = ProfileLocal }, ""},
		{"bind all interfaces", func(c *Config) { c.BindAddr = ":7702" }, ""},
		{"advertise", func(c *Config) { c.AdvertiseAddr = "10.0.0.1:7702" }, ""},
		{"ipv6", func(c *Config) { c.BindAddr = "[::1]:0" }, ""},
		{"keys", func(c *Config) { c.Keys = [][]byte{make([]byte, 32), make([]byte, 16), make([]byte, 24)} }, ""},
		{"no node id", func(c *Config) { c.NodeID = "" }, "NodeID"},
		{"no region", func(c *Config) { c.Region = "" }, "Region"},
		{"no zone", func(c *Config) { c.Zone = "" }, "Zone"},
		{"no bind", func(c *Config) { c.BindAddr = "" }, "BindAddr"},
		{"bind hostname", func(c *Config) { c.BindAddr = "localhost:7702" }, "BindAddr"},
		{"bind bad port", func(c *Config) { c.BindAddr = "127.0.0.1:99999" }, "BindAddr"},
		{"advertise no port", func(c *Config) { c.AdvertiseAddr = "10.0.0.1" }, "AdvertiseAddr"},
		{"advertise empty host", func(c *Config) { c.AdvertiseAddr = ":7702" }, "AdvertiseAddr"},
		{"public url relative", func(c *Config) { c.PublicURL = "/v1" }, "PublicURL"},
		{"public url scheme", func(c *Config) { c.PublicURL = "ftp://h:1" }, "PublicURL"},
		{"cluster addr", func(c *Config) { c.ClusterAddr = "nohost" }, "ClusterAddr"},
		{"profile", func(c *Config) { c.Profile = "lann" }, "Profile"},
		{"key length", func(c *Config) { c.Keys = [][]byte{make([]byte, 16), make([]byte, 10)} }, "Keys: key 2: "},
		{"empty key", func(c *Config) { c.Keys = [][]byte{{}} }, "Keys: key 1: "},
		{"duplicate key", func(c *Config) { c.Keys = [][]byte{make([]byte, 16), make([]byte, 32), make([]byte, 16)} }, "key 3 repeats key 1"},
		{"meta too large", func(c *Config) { c.PublicURL = "http://h/" + strings.Repeat("p", 500) }, "PublicURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("error %q does not name %s", err, tt.wantField)
			}
		})
	}
}

func TestMemberlistConfigProfiles(t *testing.T) {
	for _, profile := range []string{"", ProfileLAN, ProfileWAN, ProfileLocal} {
		t.Run(profile, func(t *testing.T) {
			c := validConfig()
			c.Profile = profile
			c.BindAddr = "127.0.0.1:7702"
			c.AdvertiseAddr = "10.1.2.3:7799"
			want, err := profileConfig(profile)
			if err != nil {
				t.Fatal(err)
			}
			mc, err := c.memberlistConfig(&delegate{}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if mc.Name != "n1" || mc.BindAddr != "127.0.0.1" || mc.BindPort != 7702 ||
				mc.AdvertiseAddr != "10.1.2.3" || mc.AdvertisePort != 7799 {
				t.Fatalf("addresses not mapped: %+v", mc)
			}
			if mc.ProbeInterval != want.ProbeInterval || mc.SuspicionMult != want.SuspicionMult || mc.GossipInterval != want.GossipInterval {
				t.Fatalf("profile %q timings not applied", profile)
			}
			if mc.Logger == nil || mc.LogOutput != nil {
				t.Fatal("memberlist logger not routed to slog")
			}
		})
	}
}
