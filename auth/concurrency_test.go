package auth

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestConcurrentVerification runs verifications of every kind from many
// goroutines while the key file and the JWK Set rotate under them and
// the clock moves (run it with -race). Tokens of keys that never leave
// must verify every time; tokens of no key never.
func TestConcurrentVerification(t *testing.T) {
	fileKey, jwksKey := testKey(t, "ec", 0), testKey(t, "rsa", 0)
	spare := []signer{testKey(t, "ed", 0), testKey(t, "ed", 1)}
	stranger := testKey(t, "rsa", 1)

	path := keyFilePath(t, pemPublic(t, fileKey.public()))
	srv := newJWKSServer(t, false)
	srv.publish(t, jwkOf(t, jwksKey.public(), "stable"))
	clk := newClock()
	v := jwksVerifier(t, srv, clk, func(c *Config) {
		c.Secret = secret
		c.PublicKeyFile = path
	})

	farExp := claims(map[string]any{"exp": t0.Add(24 * time.Hour).Unix()})
	good := []string{
		signHS256(t, secret, "", farExp),
		sign(t, fileKey, "", farExp),
		sign(t, jwksKey, "stable", farExp),
	}
	bad := []string{
		signHS256(t, []byte("nope"), "", farExp),
		sign(t, stranger, "stable", farExp),
		sign(t, stranger, "", farExp),
		"garbage",
	}

	stop := make(chan struct{})
	var rot sync.WaitGroup
	rot.Add(1)
	go func() { // rotates the spare keys in and out of both sources
		defer rot.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s := spare[i%2]
			if err := writeVersion(path, append(pemPublic(t, fileKey.public()), pemPublic(t, s.public())...)); err != nil {
				t.Error(err)
				return
			}
			srv.publish(t, jwkOf(t, jwksKey.public(), "stable"), jwkOf(t, s.public(), fmt.Sprint("spare-", i%2)))
			clk.Advance(time.Second)
			time.Sleep(time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				tok := good[(g+i)%len(good)]
				if _, err := v.Verify(context.Background(), tok); err != nil {
					t.Errorf("a token of a stable key: %v", err)
					return
				}
				if _, err := v.Verify(context.Background(), bad[(g+i)%len(bad)]); err == nil {
					t.Error("a token of no key verified")
					return
				}
				// Spare keys come and go: either answer is right, the
				// point is that nothing races.
				s := spare[i%2]
				_, _ = v.Verify(context.Background(), sign(t, s, "", farExp))
				_, _ = v.Verify(context.Background(), sign(t, s, fmt.Sprint("spare-", i%2), farExp))
			}
		}()
	}
	wg.Wait()
	close(stop)
	rot.Wait()
}
