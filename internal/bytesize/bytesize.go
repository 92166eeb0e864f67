// Package bytesize reads and writes byte sizes the way mysql-pitr's flags
// and URL options take them: "512MiB", "1G", "64MB", "1048576". It is a
// leaf: it imports nothing of the project, so any package may use it.
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrSyntax is wrapped by the errors of sizes that do not parse or overflow.
var ErrSyntax = errors.New("not a byte size")

// units are the suffixes Parse accepts, longest first: binary (KiB… and,
// as MySQL writes them, K…), decimal (KB…), and B.
var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// Parse reads a non-negative byte size: digits, optionally followed by a
// unit (KiB, MiB, GiB, TiB and K, M, G, T are powers of 1024; KB, MB, GB,
// TB powers of 1000; B is bytes), with optional space between. A size that
// does not fit in an int64 is an error, never a wrapped number.
func Parse(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("%w: %q (use e.g. 512MiB, 1G or 1048576)", ErrSyntax, s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%w: %q is too large", ErrSyntax, s)
	}
	return n * mult, nil
}

// Format writes n with the largest binary unit that divides it ("64MiB",
// "1536KiB", "1000"), so that Parse(Format(n)) == n.
func Format(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
