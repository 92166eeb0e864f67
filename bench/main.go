// Command bench benchmarks mysql-pitr against the reference tools on
// throwaway servers of one flavor filled by sysbench. Run it by hand from
// the repository root:
//
//	go run ./bench archive  [flags]  # binlog capture, RPO, agent memory
//	go run ./bench snapshot [flags]  # logical and physical snapshots, loads
//	go run ./bench restore  [flags]  # binlog replay and the RTO
//	go run ./bench ack      [flags]  # commit latency with the agent as semi-sync replica
//
// See bench/README.md for what each number means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// scenario is one benchmark.
type scenario interface {
	// flags registers the scenario's flags, the common ones included.
	flags(fs *flag.FlagSet) *common
	// smoke are the -smoke settings of its flags.
	smoke() map[string]string
	validate() error
	run(ctx context.Context, b *bench) error
}

var scenarios = map[string]func() scenario{
	"ack":      func() scenario { return &ackBench{} },
	"archive":  func() scenario { return &archive{} },
	"snapshot": func() scenario { return &snapshotBench{} },
	"restore":  func() scenario { return &restoreBench{} },
}

// common are the settings every scenario has.
type common struct {
	server                           string
	flavor                           testbed.Flavor
	runs, threads, tables, tableSize int
	bufferPool                       int64
	mpBin, workDir                   string
	keep, smoke                      bool
}

func (c *common) register(fs *flag.FlagSet, tableSize int, bufferPool int64) {
	fs.StringVar(&c.server, "server", testbed.MariaDB1011.String(), "the server: mariadb-10.11 (the host's), mariadb-11.8 or mysql-9.7 (scripts/setup.sh's roots)")
	fs.IntVar(&c.runs, "runs", 3, "runs per tool, alternating")
	fs.IntVar(&c.threads, "threads", runtime.NumCPU(), "every tool's threads: mysql-pitr --threads, zstd -T, mydumper/myloader --threads")
	fs.IntVar(&c.tables, "tables", 8, "sysbench --tables")
	fs.IntVar(&c.tableSize, "table-size", tableSize, "sysbench --table-size")
	kit.SizeVar(fs, &c.bufferPool, "buffer-pool", bufferPool, "the servers' innodb_buffer_pool_size (the tables fit)")
	fs.StringVar(&c.mpBin, "mysql-pitr", "", "the mysql-pitr binary to measure (default: build ./cmd/mysql-pitr)")
	fs.StringVar(&c.workDir, "workdir", "", "directory for outputs and logs (default: a new temporary directory); at most 60 bytes: a restore's temporary server has its socket below it")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory, every run's output and the logs")
	fs.BoolVar(&c.smoke, "smoke", false, "a quick check that everything works: small sizes and 1 run; flags given explicitly still win")
}

// maxWorkDir keeps a restore's temporary server's socket, at
// WORKDIR/tmp/pitr-NNNNNNNNNN/run/mysqld.sock, under the 107 bytes a socket
// path may have.
const maxWorkDir = 60

func (c *common) validate() (err error) {
	if c.flavor, err = testbed.ParseFlavor(c.server); err != nil {
		return fmt.Errorf("-server: %w", err)
	}
	switch {
	case c.runs < 1 || c.threads < 1 || c.tables < 1 || c.tableSize < 1:
		return errors.New("-runs, -threads, -tables and -table-size must be positive")
	case c.bufferPool < 128<<20:
		return errors.New("-buffer-pool must be at least 128MiB")
	case len(c.workDir) > maxWorkDir:
		return fmt.Errorf("-workdir must be at most %d bytes long", maxWorkDir)
	}
	return nil
}

// applySmoke sets the -smoke settings of every flag not given explicitly.
func applySmoke(fs *flag.FlagSet, settings map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range settings {
		if !given[name] {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("-smoke: -%s %s: %w", name, v, err)
			}
		}
	}
	return nil
}

// bench is what a scenario runs with.
type bench struct {
	*common
	dir     string // the work directory
	mp      string // the mysql-pitr binary
	machine string // set by the scenario once its server runs
	rep     kit.Report
}

// startServer starts a server of the chosen flavor.
func (b *bench) startServer(opts testbed.MariaDBOptions) (*kit.Server, error) {
	opts.Flavor = b.flavor
	s, err := kit.StartServer(opts)
	if err == nil && b.machine == "" {
		b.machine = kit.Machine(s.Version(), "sysbench", "zstd", "mydumper")
	}
	return s, err
}

// program finds one of the flavor's programs.
func (b *bench) program(name string) (string, error) {
	p, err := b.flavor.Program(name)
	if err != nil {
		return "", fmt.Errorf("%w (run scripts/setup.sh)", err)
	}
	return p, nil
}

// mkdir makes a run's directory, and removes it afterwards unless -keep.
func (b *bench) mkdir(parts ...string) (dir string, done func(), err error) {
	dir = filepath.Join(append([]string{b.dir}, parts...)...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	return dir, func() {
		if !b.keep {
			os.RemoveAll(dir)
		}
	}, nil
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
	names := slices.Sorted(maps.Keys(scenarios))
	if len(os.Args) < 2 || scenarios[os.Args[1]] == nil {
		fmt.Fprintf(os.Stderr, "usage: go run ./bench %s [flags]\n", strings.Join(names, "|"))
		os.Exit(2)
	}
	name, sc := os.Args[1], scenarios[os.Args[1]]()
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	c := sc.flags(fs)
	fs.Parse(os.Args[2:])
	err := func() error {
		if c.smoke {
			if err := applySmoke(fs, sc.smoke()); err != nil {
				return err
			}
		}
		return errors.Join(c.validate(), sc.validate())
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", name, err)
		os.Exit(2)
	}
	if err := run(ctx, name, sc, c); err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name string, sc scenario, c *common) (err error) {
	started := time.Now()
	b := &bench{common: c, dir: c.workDir}
	if b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "pb-"+name+"-"); err != nil {
			return err
		}
	}
	if b.dir, err = filepath.Abs(b.dir); err != nil {
		return err
	}
	if len(b.dir) > maxWorkDir {
		return fmt.Errorf("work directory %s is longer than %d bytes: pass a shorter -workdir", b.dir, maxWorkDir)
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	if !c.keep {
		defer os.RemoveAll(b.dir)
	}
	kit.Logf("%s on %s, work directory %s", name, c.flavor, b.dir)
	if b.mp, err = kit.Binary(ctx, c.mpBin, b.dir); err != nil {
		return err
	}
	var load kit.LoadAvg
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go load.Run(lctx, 10*time.Second)
	err = sc.run(ctx, b)
	cancel()
	fmt.Printf("\n==== summary ====\n")
	fmt.Printf("`go run ./bench %s %s`, total wall time %s\n", name, strings.Join(os.Args[2:], " "), time.Since(started).Round(time.Second))
	fmt.Printf("Machine: %s; %s.\n%s", b.machine, &load, b.rep.Markdown())
	return err
}
