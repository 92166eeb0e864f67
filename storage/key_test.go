package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"binlog/0001/0000000003/000000000004-000000001234.zst", true},
		{"a..b/c.d", true},
		{".hidden/x", true},
		{"ünïcode/ключ", true},
		{strings.Repeat("k", MaxKeyLen), true},
		{"", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{".", false},
		{"..", false},
		{"a/./b", false},
		{"a/../b", false},
		{"../a", false},
		{"a/..", false},
		{`a\b`, false},
		{"a\x00b", false},
		{"a/\xff", false},
		{strings.Repeat("k", MaxKeyLen+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			err := ValidateKey(tt.key)
			if tt.ok && err != nil {
				t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidKey) {
				t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tt.key, err)
			}
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"a", true},
		{"a/", true},
		{"a/b", true},
		{"a/b/", true},
		{"a/.", true},  // starts "a/.x"
		{"a/..", true}, // starts "a/..x"
		{"/", false},
		{"/a", false},
		{"a//", false},
		{"../", false},
		{"a/../b", false},
		{`a\b`, false},
		{"a\x00", false},
		{strings.Repeat("p", MaxKeyLen+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			err := ValidatePrefix(tt.prefix)
			if tt.ok && err != nil {
				t.Errorf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidKey) {
				t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidKey", tt.prefix, err)
			}
		})
	}
}

// FuzzValidateKey checks that an accepted key cannot name a path outside
// the directory it is joined to, and that every key is a valid prefix.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "a/./b", "a//b", `a\b`, "/abs", "a/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		for seg := range strings.SplitSeq(key, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
				t.Fatalf("ValidateKey accepted %q with segment %q", key, seg)
			}
		}
		if err := ValidatePrefix(key); err != nil {
			t.Fatalf("valid key %q is not a valid prefix: %v", key, err)
		}
		if err := ValidatePrefix(key + "/"); err != nil && len(key) < MaxKeyLen {
			t.Fatalf("valid key %q plus / is not a valid prefix: %v", key, err)
		}
	})
}
