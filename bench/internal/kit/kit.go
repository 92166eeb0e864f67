// Package kit is what the benchmarks in bench/ share: throwaway servers of
// each flavor, sysbench, processes with their CPU time and peak RSS, the
// machine's load, medians, and the report with its Markdown table.
package kit

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/bytesize"
)

// Logf prints a timestamped progress line.
func Logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Poll calls cond every interval until it returns nil. It gives up with
// cond's last error once timeout has passed, and when ctx ends.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// SizeVar defines a byte-size flag (1GiB, 200MiB, 1048576) with default def.
func SizeVar(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	fs.Func(name, usage+" (default "+strconv.FormatInt(def>>20, 10)+"MiB)", func(v string) (err error) {
		*p, err = bytesize.Parse(v)
		return err
	})
}

// Median of xs; NaN when empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted; 0
// when empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// MB formats bytes in MB (10⁶ bytes).
func MB[T int64 | float64 | uint64](n T) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// MBps is n bytes per d in MB/s; 0 for no time.
func MBps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// Ms formats d in milliseconds, with decimals below 10 ms.
func Ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// Plural is "1 file", "2 files".
func Plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// Cell escapes the pipes of names such as "mariadb-dump | zstd" for a
// Markdown table cell.
func Cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Slug makes a tool's name a directory name.
func Slug(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}), "-")
}

// LastLines is the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Tail is the last n lines of a file, for error messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return LastLines(string(b), n)
}
