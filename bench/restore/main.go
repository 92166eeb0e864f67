// Command restore benchmarks mysql-pitr's restore: replaying an archived
// sysbench oltp_write_only binlog onto a restored snapshot with the built-in
// binlog server (`restore --replay server`) against the mariadb-binlog |
// mariadb pipeline (`restore --replay mysqlbinlog`), both through the restore
// command and so against the same temporary server, and the time a whole
// `restore --to latest --datadir` takes: the RTO. Run it by hand:
//
//	go run ./bench/restore [flags]
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
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

// config is the benchmark's settings.
type config struct {
	binlog        int64 // binlog bytes after the snapshot
	maxBinlogSize int64
	bufferPool    int64
	tables        int
	tableSize     int
	loadThreads   int
	threads       int
	runs          int
	physical      bool
	verify        bool
	smoke         bool
	mpBin         string
	workDir       string
	keep          bool
}

func (c *config) register(fs *flag.FlagSet) {
	c.binlog, c.maxBinlogSize, c.bufferPool = 1<<30, 256<<20, 1<<30
	fs.Var(benchkit.SizeValue{P: &c.binlog}, "binlog", "binlog to archive after the snapshot, which every restore replays")
	fs.Var(benchkit.SizeValue{P: &c.maxBinlogSize}, "max-binlog-size", "the source server's max_binlog_size")
	fs.Var(benchkit.SizeValue{P: &c.bufferPool}, "buffer-pool", "the source server's innodb_buffer_pool_size")
	fs.IntVar(&c.tables, "tables", 8, "sysbench --tables")
	fs.IntVar(&c.tableSize, "table-size", 100000, "sysbench --table-size")
	fs.IntVar(&c.loadThreads, "load-threads", 4, "sysbench --threads of the unthrottled oltp_write_only load that writes the binlog")
	fs.IntVar(&c.threads, "threads", runtime.NumCPU(), "mysql-pitr snapshot and restore --threads (loading connections; parallel apply threads of --replay server)")
	fs.IntVar(&c.runs, "runs", 3, "restores per replay mode, alternating")
	fs.BoolVar(&c.physical, "physical", false, "also take a physical snapshot and time restores from it (default replay mode)")
	fs.BoolVar(&c.verify, "verify", true, "after each restore, start a server on the datadir and compare CHECKSUM TABLE with the source (not timed)")
	fs.BoolVar(&c.smoke, "smoke", false, "a quick check that everything works (~2 min): 4 tables × 10000 rows, 30MiB of binlog, 1 run; flags given explicitly still win")
	fs.StringVar(&c.mpBin, "mysql-pitr", "", "mysql-pitr binary to benchmark (default: build ./cmd/mysql-pitr)")
	fs.StringVar(&c.workDir, "workdir", "", "directory for the archive, datadirs and logs (default: a new temporary directory; keep it short: the temporary server's socket lives below it)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory, every datadir and the logs")
}

// smokeDefaults are the -smoke settings, applied to the flags not given
// explicitly.
var smokeDefaults = map[string]string{
	"tables":      "4",
	"table-size":  "10000",
	"binlog":      "30MiB",
	"runs":        "1",
	"buffer-pool": "256MiB",
}

// applySmoke sets the -smoke defaults on fs for every flag in set that was
// not given on the command line.
func applySmoke(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range smokeDefaults {
		if given[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("-smoke: -%s %s: %w", name, v, err)
		}
	}
	return nil
}

// maxWorkDir keeps the temporary server's socket, which the restore puts
// at WORKDIR/tmp/pitr-NNNNNNNNNN/run/mysqld.sock, under the 107 bytes a
// socket path may have.
const maxWorkDir = 60

// Validate names the first bad setting.
func (c *config) Validate() error {
	switch {
	case c.binlog < 1<<20:
		return errors.New("-binlog must be at least 1MiB")
	case c.maxBinlogSize < 4096:
		return errors.New("-max-binlog-size must be at least 4096")
	case c.bufferPool < 128<<20:
		return errors.New("-buffer-pool must be at least 128MiB")
	case c.tables < 1 || c.tableSize < 1 || c.loadThreads < 1:
		return errors.New("-tables, -table-size and -load-threads must be positive")
	case c.threads < 1:
		return errors.New("-threads must be positive")
	case c.runs < 1:
		return errors.New("-runs must be at least 1")
	case len(c.workDir) > maxWorkDir:
		return fmt.Errorf("-workdir must be at most %d bytes long: the temporary server's socket path is limited", maxWorkDir)
	}
	return nil
}

func main() {
	var cfg config
	fs := flag.NewFlagSet("restore", flag.ExitOnError)
	cfg.register(fs)
	fs.Parse(os.Args[1:])
	if cfg.smoke {
		if err := applySmoke(fs); err != nil {
			fmt.Fprintln(os.Stderr, "restore:", err)
			os.Exit(2)
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "restore:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "restore:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) (err error) {
	res := &results{cfg: cfg, started: time.Now()}
	if cfg.workDir == "" {
		if cfg.workDir, err = os.MkdirTemp("", "pitr-bench-restore-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return err
	}
	if cfg.workDir, err = filepath.Abs(cfg.workDir); err != nil {
		return err
	}
	if len(cfg.workDir) > maxWorkDir {
		return fmt.Errorf("work directory %s is longer than %d bytes: pass a shorter -workdir", cfg.workDir, maxWorkDir)
	}
	if !cfg.keep {
		defer os.RemoveAll(cfg.workDir)
	}
	benchkit.Logf("work directory %s", cfg.workDir)
	b := &bench{cfg: cfg, archive: filepath.Join(cfg.workDir, "archive")}
	if b.mp, err = benchkit.Binary(ctx, cfg.mpBin, cfg.workDir, "-mysql-pitr"); err != nil {
		return err
	}
	tools := []string{"sysbench", "mariadb-binlog", "mariadb", "mariadbd", "mariadb-install-db"}
	if cfg.physical {
		tools = append(tools, "mariabackup")
	}
	for _, tool := range tools {
		if _, err := testbed.LookBinary(tool); err != nil {
			return fmt.Errorf("%w (run scripts/setup.sh)", err)
		}
	}

	// The source: sysbench tables, an agent archiving its binlog, the
	// snapshots, then the load the restores replay.
	benchkit.Logf("starting the source MariaDB (buffer pool %s, max_binlog_size %s)", mib(cfg.bufferPool), mib(cfg.maxBinlogSize))
	if b.src, err = startServer(cfg); err != nil {
		return err
	}
	defer func() {
		if b.src != nil {
			b.src.Close()
		}
	}()
	res.machine = describeMachine(b.src.Version())
	benchkit.Logf("machine: %s", res.machine)
	sbBin, _ := testbed.LookBinary("sysbench")
	sb := sysbench{bin: sbBin, port: b.src.Port(), tables: cfg.tables, tableSize: cfg.tableSize, threads: cfg.loadThreads}
	benchkit.Logf("sysbench oltp_write_only prepare: %d tables × %d rows", cfg.tables, cfg.tableSize)
	begin := time.Now()
	if err := sb.prepare(ctx, b.src, filepath.Join(cfg.workDir, "sysbench-prepare.log")); err != nil {
		return err
	}
	res.prepare = time.Since(begin)
	if res.ds, err = b.src.measureDataset(ctx, cfg.tables); err != nil {
		return err
	}
	benchkit.Logf("dataset: %s of tables and indexes (information_schema), %d rows; prepared in %.0f s",
		mb(float64(res.ds.Bytes)), res.ds.Rows, res.prepare.Seconds())

	benchkit.Logf("starting mysql-pitr agent, archiving to file://%s", b.archive)
	if err := b.startAgent(); err != nil {
		return err
	}
	defer b.stopAgent()
	if err := b.waitArchived(ctx); err != nil {
		return err
	}
	// The physical snapshot goes first: the planner restores from the
	// newest snapshot, which is the logical one, and the physical runs use
	// a copy of the archive without it.
	if cfg.physical {
		if res.physSnap, err = b.takeSnapshot(ctx, "physical"); err != nil {
			return err
		}
		benchkit.Logf("%s", res.physSnap)
	}
	if res.snap, err = b.takeSnapshot(ctx, "logical"); err != nil {
		return err
	}
	benchkit.Logf("%s", res.snap)

	benchkit.Logf("sysbench oltp_write_only (%d threads, unthrottled) until the archive holds %s after the snapshot", cfg.loadThreads, mb(float64(cfg.binlog)))
	if res.gen, err = b.generate(ctx, sb, res.snap.Binlog); err != nil {
		return err
	}
	benchkit.Logf("%s", res.gen)
	if res.checksums, err = b.src.checksums(ctx, cfg.tables); err != nil {
		return err
	}
	// Nothing but the restores may use the machine from here on: the agent
	// has archived everything, and the source would go on flushing pages.
	b.stopAgent()
	if err := b.src.Close(); err != nil {
		return fmt.Errorf("stop the source: %w", err)
	}
	b.src = nil
	if cfg.physical {
		if b.physArchive, err = b.archiveWithout(ctx, res.snap.ID); err != nil {
			return err
		}
	}

	res.modes = []string{modeServer, modeMysqlbinlog}
	if cfg.physical {
		res.modes = append(res.modes, modePhysical)
	}
	benchkit.Logf("restores: %s per mode (%v), alternating, %d threads, --to latest into a fresh datadir", plural(cfg.runs, "run"), res.modes, cfg.threads)
	order := 0
	for i := 1; i <= cfg.runs; i++ {
		for _, mode := range res.modes {
			order++
			dir := filepath.Join(cfg.workDir, "restore", fmt.Sprintf("%02d-%s", order, mode))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			r := b.runRestore(ctx, dir, mode)
			r.Run, r.Order = i, order
			if r.Err == nil && cfg.verify {
				var settings []setting
				settings, r.Err = verifyDatadir(ctx, r.Datadir, filepath.Join(cfg.workDir, "v"), cfg.tables, res.checksums)
				if res.tempServer == nil {
					res.tempServer = settings
				}
			}
			res.restores = append(res.restores, r)
			printRun(os.Stdout, r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !cfg.keep {
				os.RemoveAll(dir)
			}
		}
	}
	res.finished = time.Now()
	printSummary(os.Stdout, res)
	return nil
}

// Replay modes and snapshot kinds of a restore run, as printed.
const (
	modeServer      = restore.ReplayServer
	modeMysqlbinlog = restore.ReplayMysqlbinlog
	// modePhysical restores from the physical snapshot with the default
	// replay mode.
	modePhysical = "physical+server"
)
