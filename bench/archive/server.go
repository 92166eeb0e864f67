package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// server is the MariaDB under test.
type server struct{ *benchkit.Server }

func startServer(cfg config) (*server, error) {
	s, err := benchkit.StartServer(testbed.MariaDBOptions{
		MaxBinlogSize: cfg.maxBinlogSize,
		// sysbench's 8×100k-row tables fit in memory, so generating the
		// binlog is bound by the server's CPU, not by reads from disk.
		ExtraArgs: []string{"--innodb-buffer-pool-size=" + strconv.FormatInt(cfg.bufferPool, 10), "--max-connections=200"},
	})
	if err != nil {
		return nil, err
	}
	return &server{s}, nil
}

func totalSize(logs []benchkit.BinaryLog) int64 {
	var n int64
	for _, l := range logs {
		n += l.Size
	}
	return n
}

// sysbench runs sysbench's oltp_write_only against the server's sbtest
// database.
type sysbench struct {
	bin       string
	port      int
	tables    int
	tableSize int
	threads   int
}

func (b sysbench) args(extra ...string) []string {
	a := []string{b.bin, "oltp_write_only",
		"--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(b.port),
		"--mysql-user=root", "--mysql-db=sbtest",
		"--tables=" + strconv.Itoa(b.tables), "--table-size=" + strconv.Itoa(b.tableSize),
		"--threads=" + strconv.Itoa(b.threads),
	}
	return append(a, extra...)
}

// prepare creates and fills the tables; it writes to the binlog too.
func (b sysbench) prepare(ctx context.Context, s *server, logPath string) error {
	if _, err := s.DB.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS sbtest"); err != nil {
		return fmt.Errorf("create sbtest: %w", err)
	}
	a := b.args("prepare")
	out, err := exec.CommandContext(ctx, a[0], a[1:]...).CombinedOutput()
	os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return fmt.Errorf("sysbench prepare: %w\n%s", err, benchkit.LastLines(string(out), 20))
	}
	return nil
}

// generateResult is what filling the binlog took.
type generateResult struct {
	Bytes    int64
	Files    int
	Prepare  time.Duration // sysbench prepare
	Duration time.Duration // sysbench run; 0 if prepare wrote enough
	TPS      float64       // of the run, from sysbench's reports
}

// generate runs sysbench until the server's binlogs total at least target
// bytes, then stops it.
func (b sysbench) generate(ctx context.Context, s *server, target int64, logPath string, progress func(int64)) (generateResult, error) {
	var r generateResult
	begin := time.Now()
	logs, err := benchkit.BinaryLogs(ctx, s.DB)
	if err != nil {
		return r, err
	}
	if r.Bytes, r.Files = totalSize(logs), len(logs); r.Bytes >= target {
		return r, nil // prepare alone wrote enough
	}
	// sysbench stops on its own only by time or event count, neither of
	// which maps to binlog bytes; it is stopped from here instead, with a
	// time limit only as a backstop.
	c, err := benchkit.StartChild("sysbench", b.args("--time=7200", "--report-interval=10", "run"), nil, logPath)
	if err != nil {
		return r, err
	}
	defer c.Stop(time.Second)
	lastReport := time.Now()
	for {
		logs, err := benchkit.BinaryLogs(ctx, s.DB)
		if err != nil {
			return r, err
		}
		r.Bytes, r.Files = totalSize(logs), len(logs)
		if r.Bytes >= target {
			break
		}
		if done, err := c.Exited(); done {
			return r, fmt.Errorf("sysbench run ended early (%v):\n%s", err, c.LogTail(20))
		}
		if time.Since(lastReport) >= 10*time.Second {
			progress(r.Bytes)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	// sysbench 1.0 prints no totals when stopped; sysbenchTPS falls back
	// to its interval reports.
	c.Stop(time.Second)
	r.Duration = time.Since(begin)
	r.TPS = sysbenchTPS(c.LogPath())
	return r, nil
}

var (
	tpsRE      = regexp.MustCompile(`transactions:\s+\d+\s+\(([0-9.]+) per sec\.\)`)
	intervalRE = regexp.MustCompile(`(?m)^\[ *\d+s \] thds: \d+ tps: ([0-9.]+)`)
)

// sysbenchTPS reads the transactions per second from a sysbench log: the
// final report's, or, for a sysbench that was stopped before it printed one,
// the mean of its interval reports. 0 when the log has neither.
func sysbenchTPS(logPath string) float64 {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0
	}
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
	if len(ms) == 0 {
		return 0
	}
	return sum / float64(len(ms))
}

// purgeOld rotates the binlog and purges every older file, so that an agent
// started afterwards on an empty archive has almost nothing to catch up.
func (s *server) purgeOld(ctx context.Context) error {
	if _, err := s.DB.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		return fmt.Errorf("flush binary logs: %w", err)
	}
	p, err := benchkit.MasterStatus(ctx, s.DB)
	if err != nil {
		return err
	}
	if _, err := s.DB.ExecContext(ctx, "PURGE BINARY LOGS TO '"+p.File+"'"); err != nil {
		return fmt.Errorf("purge binary logs: %w", err)
	}
	return nil
}
