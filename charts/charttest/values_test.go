package chart_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// valueKey matches a key line of values.yaml: indentation, key, rest.
var valueKey = regexp.MustCompile(`^( *)([A-Za-z][A-Za-z0-9]*):(.*)$`)

// leafValues returns the dotted paths of values.yaml's leaves (keys whose
// value is on their line, or a block list), each with whether a "# --"
// description line comes right before it.
func leafValues(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	leaves := map[string]bool{}
	var stack []string // keys of the enclosing maps, by indentation / 2
	for i, l := range lines {
		m := valueKey.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		depth := len(m[1]) / 2
		stack = append(stack[:min(depth, len(stack))], m[2])
		rest := strings.TrimSpace(m[3])
		next := ""
		if i+1 < len(lines) {
			next = strings.TrimSpace(lines[i+1])
		}
		if rest == "" && !strings.HasPrefix(next, "- ") {
			continue // a map of further values
		}
		documented := i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), "# -- ")
		leaves[strings.Join(stack, ".")] = documented
	}
	return leaves
}

// TestValuesDocumented checks that every value has a one-line description in
// values.yaml and a row in the chart README.
func TestValuesDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	leaves := leafValues(t)
	if len(leaves) < 50 {
		t.Fatalf("found only %d values in values.yaml: the parser is off", len(leaves))
	}
	for key, documented := range leaves {
		if !documented {
			t.Errorf("values.yaml: %s has no \"# -- \" description on the line before it", key)
		}
		if !strings.Contains(string(readme), "| `"+key+"` |") {
			t.Errorf("README.md has no row for `%s`", key)
		}
	}
}
