// Package secret reads the secrets Switchboard's commands take from files
// (token secret, API key, admin key). A secret file holds one key, its
// surrounding white space trimmed (DESIGN.md §3), or, while a key is being
// rotated, several: one per line, blank lines ignored. A node accepts
// every key of the file and re-reads it when it changes (Watch); the
// tools use the first.
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/switchboard/switchboard/internal/filewatch"
)

// MaxKeys bounds the keys of one file: a rotation needs two.
const MaxKeys = 8

// maxFileBytes bounds a secret file.
const maxFileBytes = 64 << 10

// ParseKeys returns the keys of a secret file's contents: each line that
// is not blank, trimmed. The error never quotes the contents.
func ParseKeys(data []byte) ([]string, error) {
	var keys []string
	for line := range strings.Lines(string(data)) {
		if k := strings.TrimSpace(line); k != "" {
			keys = append(keys, k)
		}
	}
	switch {
	case len(keys) == 0:
		return nil, errors.New("is empty")
	case len(keys) > MaxKeys:
		return nil, fmt.Errorf("holds %d keys, more than %d", len(keys), MaxKeys)
	}
	return keys, nil
}

// ReadFile returns the first key of the secret file at path: for a file
// of one key, its trimmed contents. The error names the path but never
// the contents.
func ReadFile(path string) (string, error) {
	keys, err := ReadKeys(path)
	if err != nil {
		return "", err
	}
	return keys[0], nil
}

// ReadKeys returns every key of the secret file at path.
func ReadKeys(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	return keys, nil
}

// Watch reads the secret file at path, which must hold a key, and keeps
// its keys current: the file is looked at again at most once a second,
// when its keys are asked for, and a new version is put in force (one
// that holds no key is ignored, with a warning). what names it in logs
// ("API key file").
func Watch(path, what string, log *slog.Logger) (*filewatch.File[[]string], error) {
	return filewatch.Load(filewatch.Config[[]string]{
		Path: path, What: what, Every: time.Second, MaxBytes: maxFileBytes,
		Parse: ParseKeys, Logger: log,
	})
}
