// Package secret reads the secrets Switchboard's commands take from files
// (token secret, API key, admin key): a file's contents, surrounding white
// space trimmed (DESIGN.md §3), never empty.
package secret

import (
	"fmt"
	"os"
	"strings"
)

// ReadFile returns the trimmed contents of the secret file at path. The
// error names the path but never the contents.
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}
