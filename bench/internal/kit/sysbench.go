package kit

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// Sysbench runs sysbench 1.0's oltp_write_only against a server's sbtest
// database as root over TCP. The host's sysbench speaks to MySQL 9.7 too:
// its libmariadb has caching_sha2_password, and root's empty password
// needs neither TLS nor the server's RSA key.
type Sysbench struct {
	Bin                        string
	Port                       int
	Tables, TableSize, Threads int
}

// NewSysbench finds sysbench for a server.
func NewSysbench(s *Server, tables, tableSize, threads int) (Sysbench, error) {
	bin, err := testbed.LookBinary("sysbench")
	if err != nil {
		return Sysbench{}, fmt.Errorf("%w (run scripts/setup.sh)", err)
	}
	return Sysbench{Bin: bin, Port: s.Port(), Tables: tables, TableSize: tableSize, Threads: threads}, nil
}

// Args is the command line of oltp_write_only with extra last (its
// options, then the command: prepare or run).
func (b Sysbench) Args(extra ...string) []string {
	return append([]string{b.Bin, "oltp_write_only",
		"--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(b.Port),
		"--mysql-user=root", "--mysql-db=sbtest",
		"--tables=" + strconv.Itoa(b.Tables), "--table-size=" + strconv.Itoa(b.TableSize),
		"--threads=" + strconv.Itoa(b.Threads),
	}, extra...)
}

// Prepare creates and fills the tables.
func (b Sysbench) Prepare(ctx context.Context, s *Server, logPath string) error {
	if _, err := s.DB.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS sbtest"); err != nil {
		return fmt.Errorf("create sbtest: %w", err)
	}
	a := b.Args("prepare")
	out, err := exec.CommandContext(ctx, a[0], a[1:]...).CombinedOutput()
	os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return fmt.Errorf("sysbench prepare: %w\n%s", err, LastLines(string(out), 20))
	}
	return nil
}

// Fill is what an unthrottled sysbench run wrote.
type Fill struct {
	Duration     time.Duration
	Bytes        int64  // binlog bytes written while it ran
	Transactions uint64 // from the server's GTID state
}

// TPS is the run's transactions per second.
func (f Fill) TPS() float64 { return float64(f.Transactions) / max(f.Duration.Seconds(), 1e-9) }

func (f Fill) String() string {
	return fmt.Sprintf("sysbench ran %.0f s: %d transactions (%.0f tps), %s of binlog (%.2f MB/s)",
		f.Duration.Seconds(), f.Transactions, f.TPS(), MB(f.Bytes), MBps(f.Bytes, f.Duration))
}

// Fill runs oltp_write_only unthrottled for at least minRun and until
// enough says the server's binlogs are enough, then stops it and waits for
// the server to go idle. sysbench stops on its own only by time or event
// count, neither of which maps to binlog bytes; the time limit is only a
// backstop.
func (b Sysbench) Fill(ctx context.Context, s *Server, logPath string, minRun time.Duration, enough func([]BinaryLog) bool) (Fill, error) {
	var f Fill
	before, err := s.BinaryLogs(ctx)
	if err != nil {
		return f, err
	}
	tx0, err := s.Transactions(ctx)
	if err != nil {
		return f, err
	}
	begin := time.Now()
	c, err := Start(b.Args("--time=36000", "--report-interval=10", "run"), nil, logPath)
	if err != nil {
		return f, err
	}
	defer c.Stop(time.Second)
	for lastReport := time.Now(); ; {
		logs, err := s.BinaryLogs(ctx)
		if err != nil {
			return f, err
		}
		if time.Since(begin) >= minRun && enough(logs) {
			break
		}
		if done, err := c.Exited(); done {
			return f, fmt.Errorf("sysbench run ended early (%v)", err)
		}
		if time.Since(lastReport) >= 10*time.Second {
			Logf("  binlog %s", MB(TotalSize(logs)))
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return f, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	c.Stop(time.Second)
	f.Duration = time.Since(begin)
	if _, err := s.WaitIdle(ctx, time.Second); err != nil {
		return f, err
	}
	after, err := s.BinaryLogs(ctx)
	if err != nil {
		return f, err
	}
	tx1, err := s.Transactions(ctx)
	f.Bytes, f.Transactions = TotalSize(after)-TotalSize(before), tx1-tx0
	return f, err
}

var (
	tpsRE      = regexp.MustCompile(`transactions:\s+\d+\s+\(([0-9.]+) per sec\.\)`)
	intervalRE = regexp.MustCompile(`(?m)^\[ *\d+s \] thds: \d+ tps: ([0-9.]+)`)
)

// SysbenchTPS reads the transactions per second from a sysbench log: the
// final report's, or, for a sysbench stopped before it printed one, the
// mean of its interval reports. 0 when the log has neither.
func SysbenchTPS(logPath string) float64 {
	b, _ := os.ReadFile(logPath)
	if m := tpsRE.FindSubmatch(b); m != nil {
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return tps
	}
	var sum float64
	ms := intervalRE.FindAllSubmatch(b, -1)
	for _, m := range ms {
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += tps
	}
	return sum / float64(max(len(ms), 1))
}

// Latency is the transaction latency histogram of a sysbench run with
// --histogram: sysbench prints one percentile of its own (--percentile),
// and its histogram gives any other by the same rule.
type Latency struct {
	Buckets []LatencyBucket // ascending
	Count   int64
}

// LatencyBucket is a line of the histogram: the bucket's value in
// milliseconds (sysbench's buckets are about 1.8% apart) and how many
// transactions fell into it.
type LatencyBucket struct {
	Ms    float64
	Count int64
}

// Percentile is the p-th percentile (0 < p ≤ 100) in milliseconds, by
// sysbench's own rule: the first bucket where the running count reaches
// round(Count × p / 100). 0 without transactions.
func (l Latency) Percentile(p float64) float64 {
	want := int64(math.Floor(float64(l.Count)*p/100 + 0.5))
	var n int64
	for _, b := range l.Buckets {
		if n += b.Count; n >= want {
			return b.Ms
		}
	}
	return 0
}

// histogramRE matches a histogram line: "       4.487 |*****     1234".
var histogramRE = regexp.MustCompile(`(?m)^ *([0-9]+\.[0-9]+) \|\**\s+([0-9]+)$`)

// reportedPctRE matches sysbench's own percentile: "99th percentile:   8.58".
var reportedPctRE = regexp.MustCompile(`([0-9]+)th percentile:\s+([0-9.]+)`)

// SysbenchLatency reads the histogram of a sysbench run's output.
func SysbenchLatency(logPath string) (Latency, error) {
	var l Latency
	b, err := os.ReadFile(logPath)
	if err != nil {
		return l, err
	}
	for _, m := range histogramRE.FindAllSubmatch(b, -1) {
		ms, err1 := strconv.ParseFloat(string(m[1]), 64)
		n, err2 := strconv.ParseInt(string(m[2]), 10, 64)
		if err1 != nil || err2 != nil {
			return l, fmt.Errorf("%s: bad histogram line %q", logPath, m[0])
		}
		l.Buckets = append(l.Buckets, LatencyBucket{Ms: ms, Count: n})
		l.Count += n
	}
	if l.Count == 0 {
		return l, fmt.Errorf("%s: no latency histogram (was sysbench run with --histogram?)", logPath)
	}
	// The percentile sysbench printed proves that the rule is its own.
	if m := reportedPctRE.FindSubmatch(b); m != nil {
		p, _ := strconv.ParseFloat(string(m[1]), 64)
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		if got := l.Percentile(p); math.Abs(got-v) > 0.006 {
			return l, fmt.Errorf("%s: the histogram's %sth percentile is %.3f ms, sysbench's %s ms", logPath, m[1], got, m[2])
		}
	}
	return l, nil
}
