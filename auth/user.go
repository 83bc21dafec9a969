package auth

import (
	"errors"
	"fmt"
)

// MaxUserLen bounds user ids: they are keys in every replica's registry.
const MaxUserLen = 256

// ValidUser reports why u cannot be a user id: the rule for a token's sub
// and a publish's user alike. A user id is 1 to MaxUserLen bytes without
// control characters or U+FFFD (which also stands for invalid UTF-8).
func ValidUser(u string) error {
	switch {
	case u == "":
		return errors.New("user is empty")
	case len(u) > MaxUserLen:
		return fmt.Errorf("user id longer than %d bytes", MaxUserLen)
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return errors.New("user id has control or invalid characters")
		}
	}
	return nil
}
