// Command snapshot benchmarks mysql-pitr's snapshots against the reference
// tools on one throwaway MariaDB server filled by sysbench: logical snapshot
// throughput against mariadb-dump | zstd and mydumper, how long a snapshot
// blocks writes under a light load, physical snapshot overhead against
// mariabackup | zstd, and loading each logical dump into a fresh server
// against mariadb < dump.sql and myloader. Run it by hand:
//
//	go run ./bench/snapshot [flags]
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// config is the benchmark's settings.
type config struct {
	tables, tableSize int
	prepareThreads    int
	threads           int
	runs              int
	bufferPool        int64
	redoLog           int64
	rate              int
	rateThreads       int
	mydumperRows      int
	mydumperCompress  bool
	logical           bool
	physical          bool
	load              bool
	mpBin             string
	compareBin        string
	workDir           string
	keep              bool
}

func (c *config) register(fs *flag.FlagSet) {
	c.bufferPool, c.redoLog = 2<<30, 512<<20
	fs.IntVar(&c.tables, "tables", 8, "sysbench --tables")
	fs.IntVar(&c.tableSize, "table-size", 1000000, "sysbench --table-size (1000000 is about 2 GB of tables; 100000 for a quick run)")
	fs.IntVar(&c.prepareThreads, "prepare-threads", 4, "sysbench --threads while preparing the tables")
	fs.IntVar(&c.threads, "threads", runtime.NumCPU(), "threads of every tool: mysql-pitr --threads, zstd -T, mydumper and myloader --threads, LoadLogical's Threads")
	fs.IntVar(&c.runs, "runs", 3, "runs per tool in each phase, alternating")
	fs.Var(benchkit.SizeValue{P: &c.bufferPool}, "buffer-pool", "every server's innodb_buffer_pool_size")
	fs.Var(benchkit.SizeValue{P: &c.redoLog}, "redo-log", "every server's innodb_log_file_size")
	fs.IntVar(&c.rate, "rate", 200, "sysbench oltp_write_only --rate (tps) while measuring how long writes are blocked (0 skips that phase)")
	fs.IntVar(&c.rateThreads, "rate-threads", 4, "sysbench --threads of that load")
	fs.IntVar(&c.mydumperRows, "mydumper-rows", 0, "mydumper --rows (chunk tables); 0 dumps each table whole")
	fs.BoolVar(&c.mydumperCompress, "mydumper-compress", true, "mydumper --compress (gzip: mydumper 0.10 has no zstd)")
	fs.BoolVar(&c.logical, "logical", true, "run the logical phase (mysql-pitr against mariadb-dump | zstd and mydumper); the load phase needs it")
	fs.BoolVar(&c.physical, "physical", true, "run the physical phase (mysql-pitr --method physical against mariabackup | zstd)")
	fs.BoolVar(&c.load, "load", true, "run the load phase (loading each logical dump into fresh servers)")
	fs.StringVar(&c.mpBin, "mysql-pitr", "", "mysql-pitr binary to benchmark (default: build ./cmd/mysql-pitr)")
	fs.StringVar(&c.compareBin, "compare", "", "another mysql-pitr binary (an earlier build) whose physical snapshots alternate with the others' in the physical phase")
	fs.StringVar(&c.workDir, "workdir", "", "directory for outputs and logs (default: a new temporary directory)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory, every run's output and the logs")
}

// Validate names the first bad setting.
func (c *config) Validate() error {
	switch {
	case c.tables < 1 || c.tableSize < 1 || c.prepareThreads < 1:
		return errors.New("-tables, -table-size and -prepare-threads must be positive")
	case c.threads < 1:
		return errors.New("-threads must be positive")
	case c.runs < 1:
		return errors.New("-runs must be at least 1")
	case c.bufferPool < 128<<20:
		return errors.New("-buffer-pool must be at least 128MiB")
	case c.redoLog < 64<<20:
		return errors.New("-redo-log must be at least 64MiB")
	case c.rate < 0 || c.rateThreads < 1:
		return errors.New("-rate must not be negative and -rate-threads must be positive")
	case c.mydumperRows < 0:
		return errors.New("-mydumper-rows must not be negative")
	case c.load && !c.logical:
		return errors.New("-load needs the logical phase's dumps: add -load=false to -logical=false")
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "load-worker" {
		if err := loadWorker(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "load-worker:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	fs := flag.NewFlagSet("snapshot", flag.ExitOnError)
	cfg.register(fs)
	fs.Parse(os.Args[1:])
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot:", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot:", err)
		os.Exit(1)
	}
}

// loadWorker is this program run again as a child, loading one logical
// snapshot with snapshot.LoadLogical, so that its CPU time and peak RSS are
// its own and not the benchmark's.
func loadWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load-worker", flag.ContinueOnError)
	dir := fs.String("storage", "", "file archive directory holding one snapshot")
	dsn := fs.String("dsn", "", "target server")
	threads := fs.Int("threads", runtime.NumCPU(), "loading connections")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := file.New(*dir)
	if err != nil {
		return err
	}
	m, err := loadManifest(ctx, *dir)
	if err != nil {
		return err
	}
	target, err := mysql.ParseDSN(*dsn)
	if err != nil {
		return fmt.Errorf("parse -dsn: %w", err)
	}
	return snapshot.LoadLogical(ctx, st, m, target, snapshot.LoadOptions{Threads: *threads})
}

// slug makes a tool's name a directory name.
func slug(tool string) string {
	f := strings.FieldsFunc(tool, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	})
	return strings.Join(f, "-")
}

func run(ctx context.Context, cfg config) (err error) {
	res := &results{cfg: cfg, started: time.Now()}
	if cfg.workDir == "" {
		if cfg.workDir, err = os.MkdirTemp("", "pitr-bench-snapshot-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(cfg.workDir)
	}
	benchkit.Logf("work directory %s", cfg.workDir)
	b := &bench{cfg: cfg, bin: map[string]string{}}
	if b.mp, err = benchkit.Binary(ctx, cfg.mpBin, cfg.workDir, "-mysql-pitr"); err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this program for load-worker: %w", err)
	}
	for _, tool := range []string{"sysbench", "mariadb-dump", "mariadb", "zstd", "mydumper", "myloader", "mariabackup"} {
		if b.bin[tool], err = testbed.LookBinary(tool); err != nil {
			return fmt.Errorf("%w (run scripts/setup.sh)", err)
		}
	}

	benchkit.Logf("starting MariaDB (buffer pool %s, redo log %s)", mib(cfg.bufferPool), mib(cfg.redoLog))
	if b.srv, err = startServer(cfg); err != nil {
		return err
	}
	defer b.srv.Close()
	res.machine = describeMachine(b.srv.Version(), b.bin)
	benchkit.Logf("machine: %s", res.machine)

	sb := sysbench{bin: b.bin["sysbench"], port: b.srv.Port(), tables: cfg.tables, tableSize: cfg.tableSize}
	benchkit.Logf("sysbench oltp_read_write prepare: %d tables × %d rows", cfg.tables, cfg.tableSize)
	begin := time.Now()
	if err := sb.prepare(ctx, b.srv, cfg.prepareThreads, filepath.Join(cfg.workDir, "sysbench-prepare.log")); err != nil {
		return err
	}
	res.prepare = time.Since(begin)
	if b.ds, err = b.srv.measureDataset(ctx, cfg.tables); err != nil {
		return err
	}
	res.ds = b.ds
	benchkit.Logf("dataset: %s of tables and indexes (information_schema), %d rows; prepared in %.0f s", mb(float64(b.ds.Bytes)), b.ds.Rows, res.prepare.Seconds())
	// Every run starts from a server with nothing left to flush.
	if err := b.srv.waitFlushed(ctx, 5*time.Minute); err != nil {
		return err
	}

	// Phase 1: logical snapshot throughput. The last output of each tool
	// is kept for the load phase.
	last := map[string]string{}
	order := 0
	if cfg.logical {
		benchkit.Logf("logical snapshots: %d runs each, %d threads, alternating", cfg.runs, cfg.threads)
		res.dumpTools = []string{toolOurs, toolDump, toolMydumper}
	}
	for i := 1; cfg.logical && i <= cfg.runs; i++ {
		for _, tool := range res.dumpTools {
			order++
			dir := filepath.Join(cfg.workDir, "dump", fmt.Sprintf("%02d-%s", order, slug(tool)))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			var r toolRun
			switch tool {
			case toolOurs:
				r = b.runOurs(ctx, dir, catalog.MethodLogical)
			case toolDump:
				r = b.runMariaDBDump(ctx, dir)
			case toolMydumper:
				r = b.runMydumper(ctx, dir)
			}
			r.Run, r.Order = i, order
			res.dumps = append(res.dumps, r)
			printRun(os.Stdout, r, b.ds.Bytes)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.Err == nil {
				if prev := last[tool]; prev != "" && !cfg.keep {
					os.RemoveAll(filepath.Dir(prev))
				}
				last[tool] = r.Dir
			} else if !cfg.keep {
				os.RemoveAll(dir)
			}
		}
	}

	// Phase 2: writes blocked under load.
	if cfg.rate > 0 {
		benchkit.Logf("writes blocked: %d logical snapshots under sysbench oltp_write_only at %d tps (%d threads), probe every %s",
			cfg.runs, cfg.rate, cfg.rateThreads, probeInterval)
		for i := 1; i <= cfg.runs; i++ {
			dir := filepath.Join(cfg.workDir, "blocked", strconv.Itoa(i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			br := b.runBlocked(ctx, dir, sb)
			br.Run.Run, br.Run.Order = i, i
			res.blocked = append(res.blocked, br)
			printBlocked(os.Stdout, br)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !cfg.keep {
				os.RemoveAll(dir)
			}
		}
	}

	// Phase 3: physical snapshots.
	if cfg.physical {
		if err := b.srv.waitFlushed(ctx, 5*time.Minute); err != nil {
			return err
		}
		benchkit.Logf("physical snapshots: one warm-up mariabackup run (not counted), then %d runs each, alternating", cfg.runs)
		dir := filepath.Join(cfg.workDir, "physical", "warmup")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if r := b.runMariabackup(ctx, dir); r.Err != nil {
			return fmt.Errorf("warm-up: %w", r.Err)
		}
		os.RemoveAll(dir)
		res.physTools = []string{toolOursPhys, toolBackup}
		if cfg.compareBin != "" {
			res.physTools = append(res.physTools, toolComparePhys)
		}
		order = 0
		for i := 1; i <= cfg.runs; i++ {
			for _, tool := range res.physTools {
				order++
				dir := filepath.Join(cfg.workDir, "physical", fmt.Sprintf("%02d-%s", order, slug(tool)))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				var r toolRun
				switch tool {
				case toolOursPhys:
					r = b.runOurs(ctx, dir, catalog.MethodPhysical)
				case toolComparePhys:
					r = b.runCompare(ctx, dir)
				default:
					r = b.runMariabackup(ctx, dir)
				}
				r.Run, r.Order = i, order
				res.phys = append(res.phys, r)
				printRun(os.Stdout, r, b.ds.Bytes)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !cfg.keep {
					os.RemoveAll(dir)
				}
			}
		}
	}

	// Phase 4: loading each logical dump into fresh servers.
	if cfg.load {
		if err := b.loadPhase(ctx, res, last); err != nil {
			return err
		}
	}
	res.finished = time.Now()
	printSummary(os.Stdout, res)
	return ctx.Err()
}

// loadPhase loads the kept output of each dump tool into fresh servers,
// alternating loaders.
func (b *bench) loadPhase(ctx context.Context, res *results, last map[string]string) error {
	cfg := b.cfg
	dir := filepath.Join(cfg.workDir, "load")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	inputs := map[string]string{toolLoadOurs: last[toolOurs], toolMyloader: last[toolMydumper]}
	if d := last[toolDump]; d != "" {
		// Decompressed beforehand, not timed: the loader reads plain SQL.
		sql := filepath.Join(dir, "dump.sql")
		zstd := []string{b.bin["zstd"], "-d", "-q", "-c", filepath.Join(d, "dump.sql.zst")}
		if _, err := runPipeline(ctx, []stage{{argv: zstd, log: filepath.Join(dir, "unzstd.log")}}, "", sql); err != nil {
			return err
		}
		inputs[toolLoadMariaDB] = sql
		fi, err := os.Stat(sql)
		if err != nil {
			return err
		}
		res.dumpSQLBytes = fi.Size()
	}
	benchkit.Logf("loads: %d runs each into fresh servers, %d threads, alternating", cfg.runs, cfg.threads)
	res.loadTools = []string{toolLoadOurs, toolLoadMariaDB, toolMyloader}
	order := 0
	for i := 1; i <= cfg.runs; i++ {
		for _, tool := range res.loadTools {
			order++
			rdir := filepath.Join(dir, fmt.Sprintf("%02d-%s", order, slug(tool)))
			if err := os.MkdirAll(rdir, 0o755); err != nil {
				return err
			}
			var r toolRun
			if inputs[tool] == "" {
				r = toolRun{Tool: tool, Err: errors.New("no dump to load: every dump run of its tool failed")}
			} else {
				r = b.runLoad(ctx, rdir, tool, inputs[tool])
			}
			r.Run, r.Order = i, order
			res.loads = append(res.loads, r)
			printRun(os.Stdout, r, b.ds.Bytes)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

// describeMachine reads what the numbers depend on.
func describeMachine(mariadbVersion string, bin map[string]string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), MariaDB: mariadbVersion}
	m.CPUModel = benchkit.ProcField("/proc/cpuinfo", "model name")
	m.MemTotal = benchkit.ProcField("/proc/meminfo", "MemTotal")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(m.MemTotal, " kB"), 10, 64); err == nil {
		m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	version := func(tool string, args ...string) string {
		out, err := exec.Command(bin[tool], args...).CombinedOutput()
		if err != nil {
			return tool + " ?"
		}
		// "mydumper 0.10.0, built against …", "*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***"
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		line, _, _ = strings.Cut(strings.Trim(line, "* "), ", ")
		return line
	}
	m.Tools = []string{
		version("sysbench", "--version"),
		version("mydumper", "--version"),
		version("zstd", "--version"),
	}
	return m
}
