package childout

import (
	"slices"
	"strings"
	"testing"
)

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want []string
	}{
		{"a\nb\nc\n", 2, []string{"b", "c"}},
		{"a\n\n  \nb\r\n", 5, []string{"a", "b"}},
		{"", 3, nil},
		{"only", 0, nil},
	} {
		if got := LastLines(tc.in, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	if got := Last("x\ny\nz", 2, " | "); got != "y | z" {
		t.Errorf("Last = %q", got)
	}
}

func TestTail(t *testing.T) {
	tl := &Tail{Max: 5}
	for _, s := range []string{"abc", "defg", "h"} {
		tl.Write([]byte(s))
	}
	if got := tl.String(); got != "defgh" {
		t.Fatalf("tail %q, want defgh", got)
	}
	var big Tail
	big.Write([]byte(strings.Repeat("x", 10000)))
	if len(big.String()) != 4096 {
		t.Fatalf("default tail holds %d bytes", len(big.String()))
	}
}
