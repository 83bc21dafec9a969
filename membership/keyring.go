package membership

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Gossip encryption: a keyring of AES keys, the first of which (the
// primary) encrypts everything this node gossips, while every key is
// tried on what it receives. Keys rotate online the way `consul keyring`
// does it: install the new key everywhere, make it the primary everywhere,
// then remove the old one. Changing a keyring is decided here as data
// (applyKeyOp), persisted, and only then applied to memberlist.

// KeyOp is a change to a keyring.
type KeyOp uint8

// The keyring changes.
const (
	// KeyInstall adds a key, used to decrypt only. Installing a key the
	// ring holds changes nothing.
	KeyInstall KeyOp = iota + 1
	// KeyUse makes an installed key the primary. Using the primary changes
	// nothing.
	KeyUse
	// KeyRemove drops an installed key that is not the primary.
	KeyRemove
)

var keyOpNames = map[KeyOp]string{KeyInstall: "install", KeyUse: "use", KeyRemove: "remove"}

func (o KeyOp) String() string {
	if s, ok := keyOpNames[o]; ok {
		return s
	}
	return fmt.Sprintf("KeyOp(%d)", uint8(o))
}

// ParseKeyOp reads "install", "use" or "remove".
func ParseKeyOp(s string) (KeyOp, error) {
	for op, name := range keyOpNames {
		if s == name {
			return op, nil
		}
	}
	return 0, fmt.Errorf("unknown keyring op %q, want install, use or remove", s)
}

// KeyInfo describes one key of a keyring without the key itself.
type KeyInfo struct {
	Fingerprint string // Fingerprint(key)
	Primary     bool   // the key this node encrypts gossip with
}

// Fingerprint names a key without revealing it: the first 16 hex digits of
// its SHA-256.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// ValidateKey checks that key is an AES-128, -192 or -256 key.
func ValidateKey(key []byte) error {
	if err := memberlist.ValidateKey(key); err != nil {
		return fmt.Errorf("%w: %d bytes, want 16, 24 or 32 (AES-128, -192 or -256)", ErrInvalidKey, len(key))
	}
	return nil
}

// validateKeys checks every key of a keyring and that none repeats.
func validateKeys(keys [][]byte) error {
	for i, k := range keys {
		if err := ValidateKey(k); err != nil {
			return fmt.Errorf("key %d: %w", i+1, err)
		}
		if j := slices.IndexFunc(keys[:i], func(o []byte) bool { return bytes.Equal(o, k) }); j >= 0 {
			return fmt.Errorf("%w: key %d repeats key %d", ErrInvalidKey, i+1, j+1)
		}
	}
	return nil
}

// DecodeKey reads one base64 (standard encoding) key and validates it.
func DecodeKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrInvalidKey)
	}
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// ParseKeys reads a key file: one base64 key a line, the first the
// primary; blank lines and the space around a key are ignored. An error
// names the line, never its contents.
func ParseKeys(data []byte) ([][]byte, error) {
	var keys [][]byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		key, err := DecodeKey(string(line))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) }) {
			return nil, fmt.Errorf("line %d: %w: the key is already on an earlier line", i+1, ErrInvalidKey)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// ReadKeyFile reads a key file (ParseKeys) that must hold at least one key.
func ReadKeyFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: %w: no key in the file", path, ErrInvalidKey)
	}
	return keys, nil
}

// writeKeyFile replaces the key file at path whole, readable by its owner
// only: a crash leaves either the old keyring or the new one.
func writeKeyFile(path string, keys [][]byte) (err error) {
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*") // created 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b.Bytes()); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// The rename itself must survive a crash too.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// initialKeys returns the keyring the pool starts with: KeyringFile's once
// it exists, else Keys, which then seed KeyringFile.
func (c Config) initialKeys() (keys [][]byte, fromFile bool, err error) {
	if c.KeyringFile == "" {
		return c.Keys, false, nil
	}
	keys, err = ReadKeyFile(c.KeyringFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(c.Keys) > 0 {
			if err := writeKeyFile(c.KeyringFile, c.Keys); err != nil {
				return nil, false, fmt.Errorf("membership: saving the keyring: %w", err)
			}
		}
		return c.Keys, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("membership: keyring file: %w", err)
	}
	return keys, true, nil
}

// applyKeyOp returns the keyring after op (keys[0] is the primary), or
// why op is refused; changed is false when there is nothing to do. keys
// is not modified.
func applyKeyOp(keys [][]byte, op KeyOp, key []byte) (next [][]byte, changed bool, err error) {
	if err := ValidateKey(key); err != nil {
		return nil, false, err
	}
	i := slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) })
	switch op {
	case KeyInstall:
		if i >= 0 {
			return keys, false, nil
		}
		return append(slices.Clip(keys), key), true, nil
	case KeyUse:
		switch {
		case i < 0:
			return nil, false, fmt.Errorf("%w: %s: install it first", ErrKeyNotInstalled, Fingerprint(key))
		case i == 0:
			return keys, false, nil
		}
		next = append([][]byte{keys[i]}, keys[:i]...)
		return append(next, keys[i+1:]...), true, nil
	case KeyRemove:
		switch {
		case i < 0:
			return nil, false, fmt.Errorf("%w: %s", ErrKeyNotInstalled, Fingerprint(key))
		case i == 0:
			return nil, false, fmt.Errorf("%w: %s: use another key first", ErrPrimaryKey, Fingerprint(key))
		}
		return slices.Concat(keys[:i], keys[i+1:]), true, nil
	}
	return nil, false, fmt.Errorf("%w: unknown keyring op %d", ErrInvalidKey, op)
}

// Encrypted reports whether this pool encrypts its gossip.
func (p *Pool) Encrypted() bool { return p.keyring != nil }

// Keys describes the keyring, primary first. It fails with
// ErrEncryptionOff when gossip is not encrypted.
func (p *Pool) Keys() ([]KeyInfo, error) {
	if p.keyring == nil {
		return nil, ErrEncryptionOff
	}
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	keys := p.keyring.GetKeys()
	infos := make([]KeyInfo, len(keys))
	for i, k := range keys {
		infos[i] = KeyInfo{Fingerprint: Fingerprint(k), Primary: i == 0}
	}
	return infos, nil
}

// ChangeKeys applies op with key to the keyring: it refuses using a key
// not installed (ErrKeyNotInstalled), removing one (ErrKeyNotInstalled) or
// the primary (ErrPrimaryKey), and any change without encryption
// (ErrEncryptionOff). changed is false when there was nothing to do
// (installing a key the ring holds, using the primary). The new keyring is
// written to Config.KeyringFile before it takes effect; if that fails,
// nothing changed.
func (p *Pool) ChangeKeys(op KeyOp, key []byte) (changed bool, err error) {
	if p.keyring == nil {
		return false, ErrEncryptionOff
	}
	key = slices.Clone(key) // memberlist keeps the slice it is given
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	if p.closed.Load() {
		return false, ErrClosed
	}
	cur := slices.Clone(p.keyring.GetKeys())
	next, changed, err := applyKeyOp(cur, op, key)
	if err != nil || !changed {
		return false, err
	}
	if p.cfg.KeyringFile != "" {
		if err := writeKeyFile(p.cfg.KeyringFile, next); err != nil {
			return false, fmt.Errorf("membership: keyring not changed: saving it failed: %w", err)
		}
	}
	switch op {
	case KeyInstall:
		err = p.keyring.AddKey(key)
	case KeyUse:
		err = p.keyring.UseKey(key)
	case KeyRemove:
		p.removeKey(key)
	}
	if err == nil && !slices.EqualFunc(p.keyring.GetKeys(), next, bytes.Equal) {
		err = errors.New("memberlist's keyring differs from the one decided")
	}
	if err != nil {
		// Unreachable: applyKeyOp checks what memberlist checks.
		p.logger.Error("gossip keyring change failed after it was saved", "op", op, "key", Fingerprint(key), "err", err)
		return true, fmt.Errorf("membership: %s %s: %w", op, Fingerprint(key), err)
	}
	p.logger.Info("gossip keyring changed", "op", op, "key", Fingerprint(key),
		"primary", Fingerprint(next[0]), "keys", len(next))
	return true, nil
}

// removeKey drops a non-primary key from memberlist's keyring, which must
// hold it.
//
// memberlist's RemoveKey shifts the keys after the removed one in place,
// in the very array that its receive path iterates without the keyring's
// lock (a data race, which -race reports). Removing the last key shifts
// nothing, so the keys after this one are taken off from the end first and
// added back after it; only packets encrypted with one of them, in that
// instant, could fail to decrypt. The usual rotation (install, use,
// remove the old primary) always removes the last key.
func (p *Pool) removeKey(key []byte) {
	keys := slices.Clone(p.keyring.GetKeys())
	i := slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) })
	tail := keys[i+1:]
	for j := len(tail) - 1; j >= 0; j-- {
		_ = p.keyring.RemoveKey(tail[j])
	}
	_ = p.keyring.RemoveKey(key)
	for _, k := range tail {
		_ = p.keyring.AddKey(k)
	}
}
