package node

import (
	"strings"
	"testing"
)

func validConfig() Config {
	c := DefaultConfig()
	c.NodeID, c.DataDir = "n1", "/tmp/n1"
	c.PublicAddr, c.ClusterAddr, c.GossipAddr = "127.0.0.1:7700", "127.0.0.1:7701", "127.0.0.1:7702"
	c.Tokens.Secret, c.APIKey, c.AdminKey = []byte("s"), "a", "b"
	return c
}

// A node told to listen on every interface must be told what address to
// advertise: otherwise clients would be sent to http://[::]:7900 and Raft
// peers to [::]:7901.
func TestConfigRefusesWildcardAddressesWithoutAdvertise(t *testing.T) {
	tests := []struct {
		name string
		set  func(*Config)
		want string // "" = valid
	}{
		{name: "loopback", set: func(*Config) {}},
		{name: "public 0.0.0.0", set: func(c *Config) { c.PublicAddr = "0.0.0.0:7900" }, want: "--advertise-public"},
		{name: "public [::]", set: func(c *Config) { c.PublicAddr = "[::]:7900" }, want: "--advertise-public"},
		{name: "public without host", set: func(c *Config) { c.PublicAddr = ":7900" }, want: "--advertise-public"},
		{name: "public 0.0.0.0 advertised", set: func(c *Config) { c.PublicAddr, c.AdvertisePublic = "0.0.0.0:7900", "10.0.0.5:7900" }},
		{name: "cluster 0.0.0.0", set: func(c *Config) { c.ClusterAddr = "0.0.0.0:7901" }, want: "--advertise-cluster"},
		{name: "cluster advertised", set: func(c *Config) { c.ClusterAddr, c.AdvertiseCluster = "0.0.0.0:7901", "n1.internal:7901" }},
		{name: "gossip 0.0.0.0 (memberlist advertises a private IP)", set: func(c *Config) { c.GossipAddr = "0.0.0.0:7902" }},
		{name: "advertising a wildcard", set: func(c *Config) { c.PublicAddr, c.AdvertisePublic = "0.0.0.0:7900", "0.0.0.0:7900" }, want: "advertise-public"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.set(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// The TLS files come in groups: a group given in part is refused, with an
// error naming each missing flag.
func TestConfigTLSFilesAllOrNone(t *testing.T) {
	tests := []struct {
		name string
		set  func(*Config)
		want []string // "" = valid
	}{
		{name: "none", set: func(*Config) {}},
		{name: "public pair", set: func(c *Config) { c.TLS = TLSConfig{CertFile: "c", KeyFile: "k"} }},
		{name: "public cert only", set: func(c *Config) { c.TLS.CertFile = "c" }, want: []string{"tls-key-file is required with --tls-cert-file"}},
		{name: "public key only", set: func(c *Config) { c.TLS.KeyFile = "k" }, want: []string{"tls-cert-file is required with --tls-key-file"}},
		{name: "cluster all three", set: func(c *Config) { c.ClusterTLS = ClusterTLSConfig{CAFile: "ca", CertFile: "c", KeyFile: "k"} }},
		{name: "cluster without key", set: func(c *Config) { c.ClusterTLS = ClusterTLSConfig{CAFile: "ca", CertFile: "c"} },
			want: []string{"cluster-key-file is required with --cluster-ca-file and --cluster-cert-file"}},
		{name: "cluster CA only", set: func(c *Config) { c.ClusterTLS.CAFile = "ca" },
			want: []string{"cluster-cert-file is required with --cluster-ca-file", "cluster-key-file is required with --cluster-ca-file"}},
		{name: "cluster without CA", set: func(c *Config) { c.ClusterTLS = ClusterTLSConfig{CertFile: "c", KeyFile: "k"} },
			want: []string{"cluster-ca-file is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.set(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v, want %q", err, w)
				}
			}
		})
	}
}
