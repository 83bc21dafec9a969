package membership

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/internal/testenv"
)

// testKey returns a distinct AES key of size bytes.
func testKey(seed byte, size int) []byte { return bytes.Repeat([]byte{seed}, size) }

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

func TestParseKeys(t *testing.T) {
	a, b, c := testKey(1, 16), testKey(2, 24), testKey(3, 32)
	tests := []struct {
		name    string
		in      string
		want    [][]byte
		wantErr string
	}{
		{"one", b64(a) + "\n", [][]byte{a}, ""},
		{"no final newline", b64(a), [][]byte{a}, ""},
		{"three sizes, blanks and space", "\n  " + b64(c) + "\t\r\n\n" + b64(a) + "  \n   \n" + b64(b) + "\n", [][]byte{c, a, b}, ""},
		{"empty", "\n \n", nil, ""},
		{"not base64", b64(a) + "\n\nnot base64!\n", nil, "line 3: invalid gossip key: not base64"},
		{"short key", b64(a) + "\n" + b64(testKey(4, 10)), nil, "line 2: invalid gossip key: 10 bytes, want 16, 24 or 32 (AES-128, -192 or -256)"},
		{"repeated key", b64(a) + "\n" + b64(b) + "\n" + b64(a), nil, "line 3: invalid gossip key: the key is already on an earlier line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeys([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.EqualFunc(got, tt.want, bytes.Equal) {
				t.Fatalf("ParseKeys = %x, %v; want %x", got, err, tt.want)
			}
		})
	}
	// An error never shows the key material of the line it names.
	secret := b64(testKey(9, 20))
	if _, err := ParseKeys([]byte(secret)); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("err = %v", err)
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(empty); !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("ReadKeyFile(empty) err = %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadKeyFile(missing) err = %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	// sha256 of 16 zero bytes: 374708fff7719dd5979ec875d56cd2286f6d3cf7ec317a3b25632aab28ec37bb
	if got := Fingerprint(make([]byte, 16)); got != "374708fff7719dd5" {
		t.Fatalf("Fingerprint = %s", got)
	}
}

func TestApplyKeyOp(t *testing.T) {
	p, a, b := testKey(1, 32), testKey(2, 32), testKey(3, 16)
	ring := [][]byte{p, a}
	tests := []struct {
		name    string
		op      KeyOp
		key     []byte
		want    [][]byte
		changed bool
		wantErr error
	}{
		{"install new", KeyInstall, b, [][]byte{p, a, b}, true, nil},
		{"install held", KeyInstall, a, ring, false, nil},
		{"install bad length", KeyInstall, testKey(4, 8), nil, false, ErrInvalidKey},
		{"use installed", KeyUse, a, [][]byte{a, p}, true, nil},
		{"use primary", KeyUse, p, ring, false, nil},
		{"use not installed", KeyUse, b, nil, false, ErrKeyNotInstalled},
		{"remove", KeyRemove, a, [][]byte{p}, true, nil},
		{"remove primary", KeyRemove, p, nil, false, ErrPrimaryKey},
		{"remove not installed", KeyRemove, b, nil, false, ErrKeyNotInstalled},
		{"unknown op", KeyOp(9), a, nil, false, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(ring)
			got, changed, err := applyKeyOp(in, tt.op, tt.key)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if changed != tt.changed || !slices.EqualFunc(got, tt.want, bytes.Equal) {
				t.Fatalf("applyKeyOp = %x, %t; want %x, %t", got, changed, tt.want, tt.changed)
			}
			if !slices.EqualFunc(in, ring, bytes.Equal) {
				t.Fatalf("input modified: %x", in)
			}
		})
	}
	for _, s := range []string{"install", "use", "remove"} {
		if op, err := ParseKeyOp(s); err != nil || op.String() != s {
			t.Fatalf("ParseKeyOp(%q) = %v, %v", s, op, err)
		}
	}
	if _, err := ParseKeyOp("rotate"); err == nil || !strings.Contains(err.Error(), `unknown keyring op "rotate"`) {
		t.Fatalf("ParseKeyOp(rotate) err = %v", err)
	}
}

// encryptedConfig is node i's config with a keyring file in dir seeded
// with keys.
func encryptedConfig(t *testing.T, i int, dir string, keys ...[]byte) Config {
	cfg := testConfig(t, i)
	cfg.Keys = keys
	cfg.KeyringFile = filepath.Join(dir, nodeID(i)+"-keyring")
	return cfg
}

func startWith(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// fingerprints lists a pool's keyring, the primary marked with a *.
func fingerprints(t *testing.T, p *Pool) []string {
	t.Helper()
	infos, err := p.Keys()
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	var out []string
	for _, k := range infos {
		s := k.Fingerprint
		if k.Primary {
			s = "*" + s
		}
		out = append(out, s)
	}
	return out
}

func want(keys ...[]byte) []string {
	out := []string{"*" + Fingerprint(keys[0])}
	for _, k := range keys[1:] {
		out = append(out, Fingerprint(k))
	}
	return out
}

// savedKeys reads a keyring file, checking it is private to its owner.
func savedKeys(t *testing.T, path string) [][]byte {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	keys, err := ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestKeyringOperationsArePersisted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b, c := testKey(1, 32), testKey(2, 16), testKey(3, 24)
	cfg := encryptedConfig(t, 0, dir, a)
	p := startWith(t, cfg)
	if !p.Encrypted() {
		t.Fatal("not encrypted")
	}
	// The flag's keys seed the file at start.
	if got := savedKeys(t, cfg.KeyringFile); !slices.EqualFunc(got, [][]byte{a}, bytes.Equal) {
		t.Fatalf("seeded file = %x", got)
	}
	steps := []struct {
		op      KeyOp
		key     []byte
		changed bool
		wantErr error
		ring    [][]byte // after the step
	}{
		{KeyInstall, b, true, nil, [][]byte{a, b}},
		{KeyInstall, b, false, nil, [][]byte{a, b}},
		{KeyUse, c, false, ErrKeyNotInstalled, [][]byte{a, b}},
		{KeyInstall, c, true, nil, [][]byte{a, b, c}},
		{KeyUse, b, true, nil, [][]byte{b, a, c}},
		{KeyRemove, b, false, ErrPrimaryKey, [][]byte{b, a, c}},
		{KeyRemove, a, true, nil, [][]byte{b, c}}, // not the last key
		{KeyRemove, a, false, ErrKeyNotInstalled, [][]byte{b, c}},
		{KeyUse, b, false, nil, [][]byte{b, c}},
		{KeyInstall, testKey(4, 7), false, ErrInvalidKey, [][]byte{b, c}},
	}
	for i, s := range steps {
		changed, err := p.ChangeKeys(s.op, s.key)
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) || changed != s.changed {
			t.Fatalf("step %d: %s %s = %t, %v; want %t, %v", i, s.op, Fingerprint(s.key), changed, err, s.changed, s.wantErr)
		}
		if got := fingerprints(t, p); !slices.Equal(got, want(s.ring...)) {
			t.Fatalf("step %d: keyring %v, want %v", i, got, want(s.ring...))
		}
		if got := savedKeys(t, cfg.KeyringFile); !slices.EqualFunc(got, s.ring, bytes.Equal) {
			t.Fatalf("step %d: saved %x, want %x", i, got, s.ring)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// Restarted with its original keys (the flag), the pool takes the
	// saved keyring.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ChangeKeys(KeyInstall, a); !errors.Is(err, ErrClosed) {
		t.Fatalf("ChangeKeys after Close: %v", err)
	}
	again := startWith(t, cfg)
	if got := fingerprints(t, again); !slices.Equal(got, want(b, c)) {
		t.Fatalf("after restart: %v, want %v", got, want(b, c))
	}
	// Even without any key given: the saved keyring keeps gossip encrypted.
	_ = again.Close()
	cfg.Keys = nil
	if got := fingerprints(t, startWith(t, cfg)); !slices.Equal(got, want(b, c)) {
		t.Fatalf("after restart without keys: %v, want %v", got, want(b, c))
	}
}

func TestKeyringFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := testKey(1, 32)

	t.Run("no encryption", func(t *testing.T) {
		p := startWith(t, encryptedConfig(t, 0, dir)) // a keyring file, no keys
		if p.Encrypted() {
			t.Fatal("encrypted without keys")
		}
		if _, err := p.Keys(); !errors.Is(err, ErrEncryptionOff) {
			t.Fatalf("Keys err = %v", err)
		}
		for _, op := range []KeyOp{KeyInstall, KeyUse, KeyRemove} {
			if _, err := p.ChangeKeys(op, a); !errors.Is(err, ErrEncryptionOff) {
				t.Fatalf("%s err = %v", op, err)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "n1-keyring")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("keyring file written without keys: %v", err)
		}
	})

	t.Run("unreadable keyring file", func(t *testing.T) {
		cfg := encryptedConfig(t, 1, dir, a)
		if err := os.WriteFile(cfg.KeyringFile, []byte("garbage\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(cfg)
		if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), cfg.KeyringFile+": line 1") {
			t.Fatalf("New err = %v", err)
		}
	})

	t.Run("keyring file cannot be saved", func(t *testing.T) {
		sub := filepath.Join(dir, "gone")
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := encryptedConfig(t, 2, sub, a)
		p := startWith(t, cfg)
		if err := os.RemoveAll(sub); err != nil {
			t.Fatal(err)
		}
		b := testKey(2, 16)
		if _, err := p.ChangeKeys(KeyInstall, b); err == nil || !strings.Contains(err.Error(), "keyring not changed") {
			t.Fatalf("ChangeKeys err = %v", err)
		}
		if got := fingerprints(t, p); !slices.Equal(got, want(a)) {
			t.Fatalf("keyring changed although not saved: %v", got)
		}
	})
}

// startEncrypted starts n pools sharing key, joined through the first.
func startEncrypted(t *testing.T, n int, dir string, key []byte) []*Pool {
	t.Helper()
	pools := make([]*Pool, n)
	for i := range pools {
		pools[i] = startWith(t, encryptedConfig(t, i, dir, key))
	}
	joinAll(t, pools)
	return pools
}

// watchAlive records every moment one of pools sees a member of ids in a
// state other than alive, until the returned stop is called.
func watchAlive(pools []*Pool, ids []string) (stop func() []string) {
	return testenv.Watch(10*time.Millisecond, func() (seen []string) {
		for _, p := range pools {
			for _, id := range ids {
				if m, ok := p.Member(id); !ok || m.State != StateAlive {
					seen = append(seen, fmt.Sprintf("%s sees %s %s", p.Local().ID, id, m.State))
				}
			}
		}
		return seen
	})
}

// TestRotationKeepsEveryMemberAlive rotates a three-pool cluster's key the
// safe way (install everywhere, use everywhere, remove everywhere), with
// gossip going all along and a pause of several probe intervals between
// the steps: no pool ever sees another one other than alive. Afterwards a
// pool with the old key cannot join, and one with the new key can.
func TestRotationKeepsEveryMemberAlive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldKey, newKey := testKey(1, 32), testKey(2, 32)
	pools := startEncrypted(t, 3, dir, oldKey)
	stop := watchAlive(pools, []string{"n1", "n2", "n3"})
	for _, op := range []KeyOp{KeyInstall, KeyUse} {
		for _, p := range pools {
			if _, err := p.ChangeKeys(op, newKey); err != nil {
				t.Fatalf("%s on %s: %v", op, p.Local().ID, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// With a third key installed after it, the old key is removed from
	// the middle of the ring, while gossip flows: -race checks removeKey's
	// way around memberlist's in-place shift.
	extra := testKey(3, 16)
	for _, step := range []struct {
		op  KeyOp
		key []byte
	}{{KeyInstall, extra}, {KeyRemove, oldKey}, {KeyRemove, extra}} {
		for _, p := range pools {
			if _, err := p.ChangeKeys(step.op, step.key); err != nil {
				t.Fatalf("%s %s on %s: %v", step.op, Fingerprint(step.key), p.Local().ID, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second) // a few probe rounds with the new key only
	if seen := stop(); len(seen) > 0 {
		t.Fatalf("a member was not alive during the rotation: %v", seen[:min(len(seen), 5)])
	}
	for _, p := range pools {
		if got := fingerprints(t, p); !slices.Equal(got, want(newKey)) {
			t.Fatalf("%s keyring %v, want %v", p.Local().ID, got, want(newKey))
		}
	}

	seeds := []string{pools[0].Local().GossipAddr}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stale := startWith(t, encryptedConfig(t, 3, t.TempDir(), oldKey))
	if err := stale.Join(ctx, seeds); !errors.Is(err, ErrJoin) {
		t.Fatalf("pool with the old key joined: %v", err)
	}
	current := startWith(t, encryptedConfig(t, 4, t.TempDir(), newKey, oldKey))
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel2()
	if err := current.Join(ctx2, seeds); err != nil {
		t.Fatalf("pool with the new key: %v", err)
	}
	waitState(t, pools[0], "n5", StateAlive)
	if _, ok := pools[0].Member("n4"); ok {
		t.Fatal("the pool with the old key is a member")
	}
}

// TestPoolWithoutTheKeyNeverJoins: a pool with no key, or with another
// key, cannot join an encrypted pool, nor an encrypted one a plaintext
// pool, and no member list ever names it.
func TestPoolWithoutTheKeyNeverJoins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := testKey(1, 16)
	pools := startEncrypted(t, 2, dir, key)
	plain := startPool(t, 2)
	other := startWith(t, encryptedConfig(t, 3, dir, testKey(2, 16)))
	for _, tc := range []struct {
		name string
		p    *Pool
		seed string
	}{
		{"plaintext joins encrypted", plain, pools[0].Local().GossipAddr},
		{"other key joins encrypted", other, pools[1].Local().GossipAddr},
		{"encrypted joins plaintext", pools[1], plain.Local().GossipAddr},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		err := tc.p.Join(ctx, []string{tc.seed})
		cancel()
		if !errors.Is(err, ErrJoin) {
			t.Fatalf("%s: err = %v, want ErrJoin", tc.name, err)
		}
	}
	time.Sleep(time.Second)
	ids := func(p *Pool) []string {
		var out []string
		for _, m := range p.Members() {
			out = append(out, m.ID)
		}
		return out
	}
	for _, tc := range []struct {
		p    *Pool
		want []string
	}{{pools[0], []string{"n1", "n2"}}, {pools[1], []string{"n1", "n2"}}, {plain, []string{"n3"}}, {other, []string{"n4"}}} {
		if got := ids(tc.p); !slices.Equal(got, tc.want) {
			t.Fatalf("%s lists %v, want %v", tc.p.Local().ID, got, tc.want)
		}
	}
}

// TestRemovingAKeyFromTheMiddleIsRaceFree reads the keyring the way
// memberlist's receive path does (GetKeys, then range over it without the
// keyring's lock) while a key from the middle of the ring is removed.
// memberlist's RemoveKey would shift the keys after it in place under the
// reader, which -race reports; removeKey does not.
func TestRemovingAKeyFromTheMiddleIsRaceFree(t *testing.T) {
	t.Parallel()
	k1, k2, k3, k4 := testKey(1, 16), testKey(2, 16), testKey(3, 16), testKey(4, 16)
	p := startWith(t, encryptedConfig(t, 0, t.TempDir(), k1, k2, k3, k4))
	stop := make(chan struct{})
	read := make(chan int)
	go func() {
		n := 0
		for {
			for _, k := range p.keyring.GetKeys() {
				n += len(k)
			}
			select {
			case <-stop:
				read <- n
				return
			default:
				time.Sleep(time.Millisecond)
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	for _, k := range [][]byte{k2, k3} {
		if _, err := p.ChangeKeys(KeyRemove, k); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	if n := <-read; n == 0 {
		t.Fatal("the reader read nothing")
	}
	if got := fingerprints(t, p); !slices.Equal(got, want(k1, k4)) {
		t.Fatalf("keyring %v, want %v", got, want(k1, k4))
	}
}
