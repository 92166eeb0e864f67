// Package childout keeps what child programs print for error messages:
// the last lines of their output, and a writer that keeps only the last
// bytes written to it. It is a leaf: it imports nothing of the project.
package childout

import "strings"

// LastLines returns the last n non-blank lines of s, without their line
// ends, oldest first.
func LastLines(s string, n int) []string {
	var lines []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines[max(0, len(lines)-n):]
}

// Last returns the last n non-blank lines of s joined by sep.
func Last(s string, n int, sep string) string { return strings.Join(LastLines(s, n), sep) }

// Tail is an io.Writer that keeps the last Max bytes written to it (4 KiB
// when Max is 0).
type Tail struct {
	Max int
	b   []byte
}

// Write implements io.Writer; it never fails.
func (t *Tail) Write(p []byte) (int, error) {
	limit := t.Max
	if limit <= 0 {
		limit = 4096
	}
	t.b = append(t.b, p...)
	if len(t.b) > limit {
		t.b = append(t.b[:0], t.b[len(t.b)-limit:]...)
	}
	return len(p), nil
}

// String returns what the tail holds.
func (t *Tail) String() string { return string(t.b) }
