package storage

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidKey is returned (wrapped) by every method given a key that
// ValidateKey rejects.
var ErrInvalidKey = errors.New("invalid object key")

// MaxKeyLen is the longest key in bytes; it is S3's limit, so that an archive
// can move between backends.
const MaxKeyLen = 1024

// ValidateKey reports whether key is a well-formed object key: non-empty
// UTF-8 of at most MaxKeyLen bytes, slash-separated segments that are
// neither empty nor "." or "..", no leading or trailing slash, no backslash
// and no NUL. Keys map onto file paths in the file backend, so anything that
// could name a different file than it reads as is refused. The error wraps
// ErrInvalidKey.
func ValidateKey(key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("key %q: %w: %s", key, ErrInvalidKey, err)
	}
	return nil
}

func validateKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(key):
		return errors.New("not UTF-8")
	case strings.ContainsRune(key, 0):
		return errors.New("contains NUL")
	case strings.ContainsRune(key, '\\'):
		return errors.New("contains a backslash")
	case strings.HasPrefix(key, "/"):
		return errors.New("absolute")
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return errors.New("empty path segment")
		case ".", "..":
			return fmt.Errorf("%q path segment", seg)
		}
	}
	return nil
}

// ValidatePrefix reports whether prefix can start keys, as List takes it:
// empty, or the completed segments of a key (each valid as for ValidateKey)
// followed by a slash and an optional partial segment, so "a/" and "a/b"
// (matching "a/b0") are both prefixes. The error wraps ErrInvalidKey.
func ValidatePrefix(prefix string) error {
	if err := validatePrefix(prefix); err != nil {
		return fmt.Errorf("prefix %q: %w: %s", prefix, ErrInvalidKey, err)
	}
	return nil
}

func validatePrefix(prefix string) error {
	if len(prefix) > MaxKeyLen {
		return fmt.Errorf("longer than %d bytes", MaxKeyLen)
	}
	last := prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		// The completed segments name directories in the file backend:
		// they get the full key rules, which also refuse a leading slash.
		if err := validateKey(prefix[:i]); err != nil {
			return err
		}
		last = prefix[i+1:]
	}
	// The last segment may be the start of any valid segment, even "." or "..".
	switch {
	case !utf8.ValidString(last):
		return errors.New("not UTF-8")
	case strings.ContainsAny(last, "\\\x00"):
		return errors.New("contains a backslash or NUL")
	}
	return nil
}
