package messagevault

import (
	"fmt"
	"strings"
)

// Stream-name limits: names become Azure container names after the "mv-"
// prefix, which caps them at 60 characters. The prefix also makes a name
// of 1 or 2 characters a valid container name (Azure's shortest is 3), as
// in the original MessageVault.
const (
	// MinStreamNameLen is the shortest stream name.
	MinStreamNameLen = 1
	// MaxStreamNameLen is the longest stream name.
	MaxStreamNameLen = 60
)

// ReservedStreamName is refused as a stream name: its container, "mv-sys",
// holds the users file and the leader lease.
const ReservedStreamName = "sys"

// AllStreamsName is refused as a stream name: claims use it for every
// stream ("all:read"), so no claim could name a stream called "all" alone.
const AllStreamsName = "all"

// NormalizeStreamName folds name to lower case and checks these rules:
// 1 to 60 characters of a-z, 0-9 and '-', starting and ending with a letter
// or digit, with no "--". The error wraps ErrInvalidStreamName and says
// which rule the name breaks.
func NormalizeStreamName(name string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrInvalidStreamName, name, why)
	}
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return bad("only ASCII letters, digits and '-' are allowed")
		}
	}
	n := strings.ToLower(name)
	if len(n) < MinStreamNameLen || len(n) > MaxStreamNameLen {
		return bad(fmt.Sprintf("must be %d to %d characters long, is %d", MinStreamNameLen, MaxStreamNameLen, len(n)))
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(n)-1 {
				return bad("must start and end with a letter or digit")
			}
			if n[i-1] == '-' {
				return bad(`must not contain "--"`)
			}
		default:
			return bad(fmt.Sprintf("character %q at %d is not one of a-z, 0-9 and '-'", n[i], i))
		}
	}
	if n == ReservedStreamName {
		return bad(`"sys" is reserved: its container mv-sys holds the server's own data`)
	}
	if n == AllStreamsName {
		return bad(`"all" is reserved: in a claim, all:read and all:write mean every stream`)
	}
	return n, nil
}

// CheckStreamName reports an error wrapping ErrInvalidStreamName unless
// name is a valid stream name already in normalized (lower-case) form.
// Backends call it so that no name reaches storage unchecked.
func CheckStreamName(name string) error {
	n, err := NormalizeStreamName(name)
	if err != nil {
		return err
	}
	if n != name {
		return fmt.Errorf("%w %q: not normalized (want %q)", ErrInvalidStreamName, name, n)
	}
	return nil
}
