package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// Tool names, as printed.
const (
	toolOurs        = "mysql-pitr"
	toolDump        = "mariadb-dump | zstd"
	toolMydumper    = "mydumper"
	toolOursPhys    = "mysql-pitr physical"
	toolComparePhys = "-compare physical"
	toolBackup      = "mariabackup | zstd"
	toolLoadOurs    = "mysql-pitr load"
	toolLoadMariaDB = "mariadb < dump.sql"
	toolMyloader    = "myloader"
)

// toolRun is one timed run of one tool.
type toolRun struct {
	Tool  string
	Run   int // 1-based, per tool
	Order int // 1-based position in the alternating sequence
	Time  time.Duration
	Usage usage
	// Stored is the bytes the tool left on disk; Raw the uncompressed
	// bytes, where known.
	Stored, Raw int64
	// WritesBlocked is what our snapshot's manifest says it blocked
	// writes for (mysql-pitr only).
	WritesBlocked time.Duration
	// ServerCPU is the CPU time of the server the tool read from or
	// loaded into.
	ServerCPU time.Duration
	Load      machineLoad
	// Dir is where the run's output is.
	Dir string
	Err error
}

// bench holds what every phase needs.
type bench struct {
	cfg  config
	srv  *server
	mp   string            // the mysql-pitr binary
	self string            // this program, for load-worker
	bin  map[string]string // external tools by name
	ds   dataset
}

// timed runs a tool's pipeline against srv and fills the run's time, usage
// and load; output files are fsynced inside the timed window, as the file
// store does for ours.
func (b *bench) timed(ctx context.Context, srv *server, r *toolRun, stages []stage, stdin, stdout, syncDir string) {
	meter := startMeter(srv)
	begin := time.Now()
	r.Usage, r.Err = runPipeline(ctx, stages, stdin, stdout)
	if r.Err == nil && syncDir != "" {
		r.Err = syncTree(syncDir)
	}
	r.Time = time.Since(begin)
	r.ServerCPU, r.Load = meter.stop(r.Usage.CPU)
}

// pitrEnv carries the pitr account's password to mysql-pitr.
func (b *bench) pitrEnv() []string {
	return []string{"MYSQL_PITR_PASSWORD=" + b.srv.PitrPassword()}
}

// runOurs times `mysql-pitr snapshot` (logical or physical) into a fresh
// file:// archive under dir/out.
func (b *bench) runOurs(ctx context.Context, dir, method string) toolRun {
	r := toolRun{Tool: toolOurs, Dir: filepath.Join(dir, "out")}
	if method == catalog.MethodPhysical {
		r.Tool = toolOursPhys
	}
	return b.runSnapshot(ctx, r, b.mp, dir, method)
}

// runCompare is runOurs for a physical snapshot by the -compare binary.
func (b *bench) runCompare(ctx context.Context, dir string) toolRun {
	r := toolRun{Tool: toolComparePhys, Dir: filepath.Join(dir, "out")}
	return b.runSnapshot(ctx, r, b.cfg.compareBin, dir, catalog.MethodPhysical)
}

func (b *bench) runSnapshot(ctx context.Context, r toolRun, bin, dir, method string) toolRun {
	argv := []string{bin, "snapshot",
		// The password travels in MYSQL_PITR_PASSWORD, not in argv.
		"--dsn", b.srv.DSNFor(testbed.PitrUser, ""),
		"--storage", "file://" + r.Dir,
		"--method", method,
		"--threads", strconv.Itoa(b.cfg.threads),
		"--log-format", "json",
	}
	b.timed(ctx, b.srv, &r, []stage{{argv: argv, env: b.pitrEnv(), log: filepath.Join(dir, "mysql-pitr.log")}}, "", "", "")
	if r.Err != nil {
		return r
	}
	m, err := loadManifest(ctx, r.Dir)
	if err != nil {
		r.Err = err
		return r
	}
	r.Raw, r.WritesBlocked = m.Bytes, m.WritesBlocked
	r.Stored, r.Err = dirSize(r.Dir)
	return r
}

// loadManifest reads the only snapshot of the file:// archive at dir.
func loadManifest(ctx context.Context, dir string) (*catalog.Manifest, error) {
	st, err := file.New(dir)
	if err != nil {
		return nil, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return nil, err
	}
	if len(snaps.Complete) != 1 {
		return nil, fmt.Errorf("%s holds %d complete snapshots, want 1", dir, len(snaps.Complete))
	}
	return snaps.Complete[0], nil
}

// serverFlags are the connection flags of the MySQL client tools, as root
// (no password) over TCP.
func serverFlags(s *server) []string {
	return []string{"--host=127.0.0.1", "--port=" + strconv.Itoa(s.Port()), "--user=root"}
}

// runMariaDBDump times mariadb-dump of the sysbench database piped through
// zstd -1 into dir/out/dump.sql.zst. --master-data=2 --gtid records the
// binlog position, as a dump for PITR must; it takes a global read lock
// for a moment, as ours does.
func (b *bench) runMariaDBDump(ctx context.Context, dir string) toolRun {
	r := toolRun{Tool: toolDump, Dir: filepath.Join(dir, "out")}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		r.Err = err
		return r
	}
	dump := append([]string{b.bin["mariadb-dump"], "--no-defaults"}, serverFlags(b.srv)...)
	dump = append(dump, "--single-transaction", "--master-data=2", "--gtid", "--databases", sysbenchDB)
	zstd := []string{b.bin["zstd"], "-1", "-T" + strconv.Itoa(b.cfg.threads), "-q"}
	out := filepath.Join(r.Dir, "dump.sql.zst")
	b.timed(ctx, b.srv, &r, []stage{
		{argv: dump, log: filepath.Join(dir, "mariadb-dump.log")},
		{argv: zstd, log: filepath.Join(dir, "zstd.log")},
	}, "", out, r.Dir)
	if r.Err == nil {
		r.Stored, r.Err = dirSize(r.Dir)
	}
	return r
}

// runMydumper times mydumper into dir/out. Debian 12's mydumper 0.10 can
// only compress with gzip (--compress); there is no zstd.
func (b *bench) runMydumper(ctx context.Context, dir string) toolRun {
	r := toolRun{Tool: toolMydumper, Dir: filepath.Join(dir, "out")}
	argv := []string{b.bin["mydumper"], "--host", "127.0.0.1", "--port", strconv.Itoa(b.srv.Port()), "--user", "root",
		"--threads", strconv.Itoa(b.cfg.threads), "--database", sysbenchDB, "--outputdir", r.Dir, "--verbose", "2"}
	if b.cfg.mydumperRows > 0 {
		argv = append(argv, "--rows", strconv.Itoa(b.cfg.mydumperRows))
	}
	if b.cfg.mydumperCompress {
		argv = append(argv, "--compress")
	}
	b.timed(ctx, b.srv, &r, []stage{{argv: argv, log: filepath.Join(dir, "mydumper.log")}}, "", "", r.Dir)
	if r.Err == nil {
		r.Stored, r.Err = dirSize(r.Dir)
	}
	return r
}

// runMariabackup times mariabackup's xbstream piped through zstd -1 into
// dir/out/backup.xbstream.zst: what TakePhysical does, by hand.
func (b *bench) runMariabackup(ctx context.Context, dir string) toolRun {
	r := toolRun{Tool: toolBackup, Dir: filepath.Join(dir, "out")}
	target := filepath.Join(dir, "target")
	for _, d := range []string{r.Dir, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			r.Err = err
			return r
		}
	}
	backup := []string{b.bin["mariabackup"], "--no-defaults", "--backup", "--stream=xbstream", "--target-dir=" + target,
		"--host=127.0.0.1", "--port=" + strconv.Itoa(b.srv.Port()), "--protocol=tcp", "--user=root"}
	zstd := []string{b.bin["zstd"], "-1", "-T" + strconv.Itoa(b.cfg.threads), "-q"}
	log := filepath.Join(dir, "mariabackup.log")
	b.timed(ctx, b.srv, &r, []stage{
		{argv: backup, log: log},
		{argv: zstd, log: filepath.Join(dir, "zstd.log")},
	}, "", filepath.Join(r.Dir, "backup.xbstream.zst"), r.Dir)
	if r.Err == nil && !strings.Contains(tail(log, 3), "completed OK!") {
		r.Err = fmt.Errorf("mariabackup did not report completed OK:\n%s", tail(log, 8))
	}
	if r.Err == nil {
		r.Stored, r.Err = dirSize(r.Dir)
	}
	return r
}

// runLoad times loading one tool's dump into a fresh server with the
// source's settings, then checks every row arrived.
func (b *bench) runLoad(ctx context.Context, dir, tool, input string) toolRun {
	r := toolRun{Tool: tool}
	dst, err := startServer(b.cfg)
	if err != nil {
		r.Err = err
		return r
	}
	defer dst.Close()
	var stages []stage
	stdin := ""
	switch tool {
	case toolLoadOurs:
		stages = []stage{{argv: []string{b.self, "load-worker", "-storage", input, "-dsn", dst.DSN(),
			"-threads", strconv.Itoa(b.cfg.threads)}, log: filepath.Join(dir, "load.log")}}
	case toolLoadMariaDB:
		// The other two loaders keep their writes out of the binlog.
		argv := append([]string{b.bin["mariadb"], "--no-defaults"}, serverFlags(dst)...)
		argv = append(argv, "--init-command=SET SESSION sql_log_bin = 0")
		stages, stdin = []stage{{argv: argv, log: filepath.Join(dir, "mariadb.log")}}, input
	case toolMyloader:
		stages = []stage{{argv: []string{b.bin["myloader"], "--host", "127.0.0.1", "--port", strconv.Itoa(dst.Port()), "--user", "root",
			"--threads", strconv.Itoa(b.cfg.threads), "--directory", input, "--verbose", "2"}, log: filepath.Join(dir, "myloader.log")}}
	default:
		r.Err = fmt.Errorf("unknown loader %q", tool)
		return r
	}
	b.timed(ctx, dst, &r, stages, stdin, "", "")
	if r.Err != nil {
		return r
	}
	n, err := dst.countRows(ctx, b.cfg.tables)
	if err != nil {
		r.Err = err
	} else if n != b.ds.Rows {
		r.Err = fmt.Errorf("the target holds %d rows, the dump %d", n, b.ds.Rows)
	}
	if r.Err != nil {
		return r
	}
	// Not timed: the loaded tables must equal the source's, row for row.
	sums, err := dst.checksums(ctx, b.cfg.tables)
	switch {
	case err != nil:
		r.Err = err
	case fmt.Sprint(sums) != fmt.Sprint(b.ds.Sums):
		r.Err = fmt.Errorf("loaded tables differ from the source: CHECKSUM TABLE %v, source %v", sums, b.ds.Sums)
	}
	return r
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// syncTree fsyncs every file and directory under dir, so the baselines'
// output is as durable as the file store makes ours.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		return errors.Join(err, f.Close())
	})
}
