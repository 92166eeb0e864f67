// Command archive benchmarks mysql-pitr's binlog archive against
// mariadb-binlog on one throwaway MariaDB server: how fast each captures an
// existing binlog, how far behind a commit the archive is under load (the
// RPO), and how much memory the agent needs. Run it by hand:
//
//	go run ./bench/archive [flags]
//
// See bench/README.md for what each number means.
package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// config is the benchmark's settings.
type config struct {
	target         int64
	maxBinlogSize  int64
	bufferPool     int64
	tables         int
	tableSize      int
	threads        int
	runs           int
	s3             bool
	flushInterval  time.Duration
	rpoDuration    time.Duration
	rate           int
	rpoThreads     int
	agentBin       string
	workDir        string
	keep           bool
	perf           bool
	captureTimeout time.Duration
	poll           time.Duration
}

func (c *config) register(fs *flag.FlagSet) {
	c.target, c.maxBinlogSize, c.bufferPool = 1<<30, 256<<20, 1<<30
	fs.Var(benchkit.SizeValue{P: &c.target}, "target", "binlog to generate before the capture runs (e.g. 200MiB for a quick run)")
	fs.Var(benchkit.SizeValue{P: &c.maxBinlogSize}, "max-binlog-size", "the server's max_binlog_size")
	fs.Var(benchkit.SizeValue{P: &c.bufferPool}, "buffer-pool", "the server's innodb_buffer_pool_size")
	fs.IntVar(&c.tables, "tables", 8, "sysbench --tables")
	fs.IntVar(&c.tableSize, "table-size", 100000, "sysbench --table-size")
	fs.IntVar(&c.threads, "threads", 4, "sysbench --threads while generating the binlog (unthrottled)")
	fs.IntVar(&c.runs, "runs", 3, "capture runs per tool, alternating (0 skips the capture phase)")
	fs.BoolVar(&c.s3, "s3", false, "also time the agent archiving to S3 (a local versitygw gateway)")
	fs.DurationVar(&c.flushInterval, "flush-interval", time.Second, "the agent's --flush-interval")
	fs.DurationVar(&c.rpoDuration, "rpo-duration", 60*time.Second, "how long the RPO load runs (0 skips the RPO phase)")
	fs.IntVar(&c.rate, "rate", 1000, "sysbench --rate (transactions per second) during the RPO load; 0 is unthrottled")
	fs.IntVar(&c.rpoThreads, "rpo-threads", 4, "sysbench --threads during the RPO load")
	fs.StringVar(&c.agentBin, "agent", "", "mysql-pitr binary to benchmark (default: build ./cmd/mysql-pitr)")
	fs.StringVar(&c.workDir, "workdir", "", "directory for servers, archives and logs (default: a new temporary directory)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory, run outputs and logs")
	fs.BoolVar(&c.perf, "perf", false, "profile one extra, uncounted agent capture run with Linux perf (report in WORKDIR/perf; use with -keep)")
	fs.DurationVar(&c.captureTimeout, "capture-timeout", 10*time.Minute, "give up on a capture run after this long")
	fs.DurationVar(&c.poll, "poll", 20*time.Millisecond, "how often a capture run checks whether it is done")
}

// Validate names the first bad setting.
func (c *config) Validate() error {
	switch {
	case c.target < 1<<20:
		return errors.New("-target must be at least 1MiB")
	case c.maxBinlogSize < 4096:
		return errors.New("-max-binlog-size must be at least 4096")
	case c.runs < 0:
		return errors.New("-runs must not be negative")
	case c.tables < 1 || c.tableSize < 1 || c.threads < 1 || c.rpoThreads < 1:
		return errors.New("-tables, -table-size, -threads and -rpo-threads must be positive")
	case c.rpoDuration != 0 && c.rpoDuration < time.Second:
		return errors.New("-rpo-duration must be 0 (skip) or at least 1s")
	case c.rate < 0:
		return errors.New("-rate must not be negative")
	case c.flushInterval < 10*time.Millisecond:
		return errors.New("-flush-interval must be at least 10ms")
	case c.poll <= 0 || c.captureTimeout <= 0:
		return errors.New("-poll and -capture-timeout must be positive")
	}
	return nil
}

func main() {
	var cfg config
	fs := flag.NewFlagSet("archive", flag.ExitOnError)
	cfg.register(fs)
	fs.Parse(os.Args[1:])
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "archive:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "archive:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) (err error) {
	res := &results{cfg: cfg, started: time.Now()}
	if cfg.workDir == "" {
		if cfg.workDir, err = os.MkdirTemp("", "pitr-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(cfg.workDir)
	}
	benchkit.Logf("work directory %s", cfg.workDir)
	b := &bench{cfg: cfg, serverID: 1000}
	if b.agentBin, err = benchkit.Binary(ctx, cfg.agentBin, cfg.workDir, "-agent"); err != nil {
		return err
	}
	for _, tool := range []string{"mariadb-binlog", "sysbench"} {
		if _, err := testbed.LookBinary(tool); err != nil {
			return fmt.Errorf("%w (run scripts/setup.sh)", err)
		}
	}

	benchkit.Logf("starting MariaDB (max_binlog_size %d)", cfg.maxBinlogSize)
	if b.srv, err = startServer(cfg); err != nil {
		return err
	}
	defer b.srv.Close()
	res.machine = describeMachine(b.srv.Version())
	benchkit.Logf("machine: %s", res.machine)
	if cfg.s3 {
		if b.s3, err = startS3(filepath.Join(cfg.workDir, "s3")); err != nil {
			return err
		}
		defer b.s3.close()
		benchkit.Logf("versitygw at %s", b.s3.endpoint)
	}

	sbBin, _ := testbed.LookBinary("sysbench")
	sb := sysbench{bin: sbBin, port: b.srv.Port(), tables: cfg.tables, tableSize: cfg.tableSize, threads: cfg.threads}
	benchkit.Logf("sysbench prepare: %d tables × %d rows", cfg.tables, cfg.tableSize)
	prepBegin := time.Now()
	if err := sb.prepare(ctx, b.srv, filepath.Join(cfg.workDir, "sysbench-prepare.log")); err != nil {
		return err
	}
	prepTime := time.Since(prepBegin)
	benchkit.Logf("sysbench run until the binlog holds %s", mb(float64(cfg.target)))
	res.gen, err = sb.generate(ctx, b.srv, cfg.target, filepath.Join(cfg.workDir, "sysbench-generate.log"),
		func(n int64) { benchkit.Logf("  binlog %s", mb(float64(n))) })
	if err != nil {
		return err
	}
	res.gen.Prepare = prepTime
	benchkit.Logf("%s", res.gen)

	if res.target, res.files, err = b.idleTarget(ctx); err != nil {
		return err
	}
	benchkit.Logf("server idle at %s: %s in %d files from %s", res.target.end, mb(float64(res.target.bytes)), res.files, res.target.first)

	res.tools = []string{toolMariaDBBinlog, toolAgentFile}
	if cfg.s3 {
		res.tools = append(res.tools, toolAgentS3)
	}
	order := 0
	for i := 1; i <= cfg.runs; i++ {
		for _, tool := range res.tools {
			order++
			dir := filepath.Join(cfg.workDir, "capture", fmt.Sprintf("%02d-%s", order, strings.Fields(tool)[0]))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			var r captureRun
			if tool == toolMariaDBBinlog {
				r = b.runMariaDBBinlog(ctx, dir, res.target)
			} else {
				r = b.runAgent(ctx, dir, tool, res.target, nil)
			}
			r.Run, r.Order = i, order
			res.captures = append(res.captures, r)
			printCaptureRun(os.Stdout, r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !cfg.keep {
				os.RemoveAll(dir)
			}
			// Each run must start from the same idle server.
			if _, err := b.srv.WaitIdle(ctx, time.Second); err != nil {
				return err
			}
		}
	}

	if cfg.perf {
		// Not counted: perf's sampling slows the agent down.
		dir := filepath.Join(cfg.workDir, "perf")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		benchkit.Logf("profiling one more agent capture run with perf (not counted)")
		pr := &perfRecorder{dir: dir}
		r := b.runAgent(ctx, dir, toolAgentFile, res.target, pr.profile)
		printCaptureRun(os.Stdout, r)
		res.perfReport = filepath.Join(dir, "perf-report.txt")
		if _, err := b.srv.WaitIdle(ctx, time.Second); err != nil {
			return err
		}
	}

	if cfg.rpoDuration > 0 {
		benchkit.Logf("RPO: %s of sysbench oltp_write_only at %d tps (%d threads), probe every %s, flush interval %s",
			cfg.rpoDuration, cfg.rate, cfg.rpoThreads, probeInterval, cfg.flushInterval)
		dir := filepath.Join(cfg.workDir, "rpo")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		rsb := sb
		rsb.threads = cfg.rpoThreads
		r := b.runRPO(ctx, dir, rsb)
		res.rpo = &r
		printRPO(os.Stdout, &r)
	}
	res.finished = time.Now()
	printSummary(os.Stdout, res)
	return ctx.Err()
}

// idleTarget waits for the server to be idle and returns what a capture run
// must copy.
func (b *bench) idleTarget(ctx context.Context) (captureTarget, int, error) {
	var t captureTarget
	end, err := b.srv.WaitIdle(ctx, 2*time.Second)
	if err != nil {
		return t, 0, err
	}
	logs, err := benchkit.BinaryLogs(ctx, b.srv.DB)
	if err != nil {
		return t, 0, err
	}
	if len(logs) == 0 || logs[len(logs)-1].Name != end.File || uint64(logs[len(logs)-1].Size) != end.Pos {
		return t, 0, fmt.Errorf("SHOW BINARY LOGS %v disagrees with SHOW MASTER STATUS %s", logs, end)
	}
	return captureTarget{first: logs[0].Name, end: end, bytes: totalSize(logs), files: len(logs)}, len(logs), nil
}

// describeMachine reads what the numbers depend on.
func describeMachine(mariadbVersion string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), MariaDB: mariadbVersion}
	m.CPUModel = benchkit.ProcField("/proc/cpuinfo", "model name")
	m.MemTotal = benchkit.ProcField("/proc/meminfo", "MemTotal")
	if kb, err := benchkit.ParseStatusKB("MemTotal: "+m.MemTotal, "MemTotal"); err == nil {
		m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<30))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if bin, err := testbed.LookBinary("sysbench"); err == nil {
		if out, err := exec.Command(bin, "--version").Output(); err == nil {
			m.Sysbench = strings.TrimSpace(string(out))
		}
	}
	return m
}
