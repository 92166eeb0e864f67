package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// snapshotBench measures snapshots against the reference tools: logical
// snapshot throughput against the flavor's dump tool piped through zstd and
// mydumper, how long a snapshot blocks writes under a light load, physical
// snapshot overhead against mariabackup | zstd (MariaDB) or a bare CLONE
// LOCAL DATA DIRECTORY (MySQL; and, doing the same work, that clone put
// through tar | zstd), and loading each logical dump into a fresh server
// against the flavor's client and myloader.
type snapshotBench struct {
	common
	prepareThreads          int
	redoLog                 int64
	rate, rateThreads       int
	mydumperRows            int
	mydumperCompress        bool
	logical, physical, load bool
	compareBin              string

	srv  *kit.Server
	ds   kit.Dataset
	bin  map[string]string // external tools by name
	self string            // this program, for load-worker
}

// Goals the snapshots are held to.
const (
	goalVsDump       = 2.0 // logical throughput ÷ the dump pipeline's
	goalVsMydumper   = 1.2 // logical throughput ÷ mydumper's
	goalBlocked      = 100 * time.Millisecond
	goalPhysOverhead = 0.10 // physical time ÷ the reference's, minus 1
	goalLoadVsSQL    = 3.0  // the client's load time ÷ ours
	goalLoadVsMyload = 1.2  // myloader's load time ÷ ours
	goalSnapshotMB   = 300e6
)

func (s *snapshotBench) flags(fs *flag.FlagSet) *common {
	s.register(fs, 1000000, 2<<30)
	kit.SizeVar(fs, &s.redoLog, "redo-log", 512<<20, "every server's redo log (innodb_log_file_size; innodb_redo_log_capacity on MySQL)")
	fs.IntVar(&s.prepareThreads, "prepare-threads", 4, "sysbench --threads while preparing the tables")
	fs.IntVar(&s.rate, "rate", 200, "sysbench oltp_write_only --rate (tps) while measuring how long writes are blocked (0 skips that phase)")
	fs.IntVar(&s.rateThreads, "rate-threads", 4, "sysbench --threads of that load")
	fs.IntVar(&s.mydumperRows, "mydumper-rows", 0, "mydumper --rows (chunk tables); 0 dumps each table whole")
	fs.BoolVar(&s.mydumperCompress, "mydumper-compress", true, "mydumper --compress (gzip: mydumper 0.10 has no zstd)")
	fs.BoolVar(&s.logical, "logical", true, "run the logical phase; the load phase needs it")
	fs.BoolVar(&s.physical, "physical", true, "run the physical phase")
	fs.BoolVar(&s.load, "load", true, "run the load phase (each logical dump into fresh servers)")
	fs.StringVar(&s.compareBin, "compare", "", "another mysql-pitr binary (an earlier build) whose snapshots alternate with the others'")
	return &s.common
}

func (s *snapshotBench) smoke() map[string]string {
	return map[string]string{"table-size": "20000", "runs": "1", "buffer-pool": "256MiB", "redo-log": "128MiB"}
}

func (s *snapshotBench) validate() error {
	switch {
	case s.prepareThreads < 1 || s.rateThreads < 1 || s.rate < 0 || s.mydumperRows < 0:
		return errors.New("-prepare-threads and -rate-threads must be positive, -rate and -mydumper-rows not negative")
	case s.redoLog < 64<<20:
		return errors.New("-redo-log must be at least 64MiB")
	case s.load && !s.logical:
		return errors.New("-load needs the logical phase's dumps: add -load=false to -logical=false")
	}
	return nil
}

// Tool names, as printed; the references' are the flavor's.
const (
	toolOurs        = "mysql-pitr"
	toolCompare     = "-compare build"
	toolOursPhys    = "mysql-pitr physical"
	toolComparePhys = "-compare physical"
	toolMydumper    = "mydumper"
	toolLoadOurs    = "mysql-pitr load"
	toolMyloader    = "myloader"
	toolClone       = "CLONE LOCAL"
	toolCloneZstd   = "CLONE LOCAL, tar | zstd"
)

func (s *snapshotBench) dumpProgram() string {
	if s.flavor.MySQL() {
		return "mysqldump"
	}
	return "mariadb-dump"
}
func (s *snapshotBench) toolDump() string { return s.dumpProgram() + " | zstd" }
func (s *snapshotBench) toolLoadSQL() string {
	return s.flavor.ClientProgram() + " < dump.sql"
}
func (s *snapshotBench) toolBackup() string {
	if s.flavor.MySQL() {
		return toolClone
	}
	return "mariabackup | zstd"
}

// serverArgs are every server's settings, the source and each load target
// alike: the tables fit in the buffer pool, and durability is a production
// server's (the test bed's own defaults trade it for speed).
func (s *snapshotBench) serverArgs() testbed.MariaDBOptions {
	args := append(kit.RedoArgs(s.flavor, s.redoLog), "--innodb-buffer-pool-size="+strconv.FormatInt(s.bufferPool, 10),
		"--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1", "--max-connections=200")
	if s.flavor.MySQL() {
		// A snapshot loads with LOAD DATA LOCAL INFILE, which MySQL turns
		// off by default; the README asks for it on a load's target.
		args = append(args, "--local-infile=ON")
	}
	return testbed.MariaDBOptions{ExtraArgs: args}
}

func (s *snapshotBench) run(ctx context.Context, b *bench) (err error) {
	if err := s.findPrograms(b); err != nil {
		return err
	}
	kit.Logf("starting %s (buffer pool %s, redo log %s)", s.flavor, kit.MB(s.bufferPool), kit.MB(s.redoLog))
	if s.srv, err = b.startServer(s.serverArgs()); err != nil {
		return err
	}
	defer s.srv.Close()
	sb, err := kit.NewSysbench(s.srv, s.tables, s.tableSize, s.prepareThreads)
	if err != nil {
		return err
	}
	kit.Logf("sysbench prepare: %d tables × %d rows", s.tables, s.tableSize)
	if err := sb.Prepare(ctx, s.srv, filepath.Join(b.dir, "sysbench-prepare.log")); err != nil {
		return err
	}
	if s.ds, err = s.srv.MeasureDataset(ctx, s.tables); err != nil {
		return err
	}
	b.rep.Line("Dataset: sysbench prepare, %d tables × %d rows = %s of tables and indexes (information_schema); MB/s are of that size for every tool. %d threads per tool; %d runs per tool, alternating; medians. MB = 10⁶ bytes.",
		s.tables, s.tableSize, kit.MB(s.ds.Bytes), s.threads, s.runs)
	kit.Logf("dataset: %s, %d rows", kit.MB(s.ds.Bytes), s.ds.Rows)
	// Every run starts from a server with nothing left to flush.
	if err := s.srv.WaitFlushed(ctx, 5*time.Minute); err != nil {
		return err
	}

	last := map[string]string{} // the last good output of each dump tool, for the load phase
	if s.logical {
		if err := s.logicalPhase(ctx, b, last); err != nil {
			return err
		}
	}
	if s.rate > 0 {
		if err := s.blockedPhase(ctx, b, sb); err != nil {
			return err
		}
	}
	if s.physical {
		if err := s.physicalPhase(ctx, b); err != nil {
			return err
		}
	}
	if s.load {
		return s.loadPhase(ctx, b, last)
	}
	return nil
}

// findPrograms locates every tool the phases run: the server's own dump,
// client and backup programs from its install, the rest from PATH, and
// this program itself, which the load phase runs as a worker.
func (s *snapshotBench) findPrograms(b *bench) (err error) {
	s.bin = map[string]string{}
	for _, tool := range []string{s.dumpProgram(), s.flavor.ClientProgram(), "mariadb-backup"} {
		if s.flavor.MySQL() && tool == "mariadb-backup" {
			continue
		}
		if s.bin[tool], err = b.program(tool); err != nil {
			return err
		}
	}
	for _, tool := range []string{"zstd", "mydumper", "myloader", "tar"} {
		if s.bin[tool], err = testbed.LookBinary(tool); err != nil {
			return fmt.Errorf("%w (run scripts/setup.sh)", err)
		}
	}
	if s.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this program for load-worker: %w", err)
	}
	return nil
}

// logicalPhase times each logical snapshot tool, alternating, and reports
// the medians. last gets the output of each tool's last good run, for the
// load phase; only that one is kept on disk unless -keep.
func (s *snapshotBench) logicalPhase(ctx context.Context, b *bench, last map[string]string) error {
	tools := []string{toolOurs, s.toolDump(), toolMydumper}
	if s.compareBin != "" {
		tools = append(tools, toolCompare)
	}
	kit.Logf("logical snapshots: %d runs each, %d threads, alternating", s.runs, s.threads)
	runs, err := kit.Alternate(ctx, s.runs, tools, func(order int, tool string) kit.Run {
		dir := filepath.Join(b.dir, "dump", fmt.Sprintf("%02d-%s", order, kit.Slug(tool)))
		r := s.dump(ctx, b, dir, tool)
		if prev := last[tool]; r.Err == nil && prev != "" && !s.keep {
			os.RemoveAll(filepath.Dir(prev))
		}
		if r.Err == nil {
			last[tool] = filepath.Join(dir, "out")
		} else if !s.keep {
			os.RemoveAll(dir)
		}
		return r
	})
	if err != nil {
		return err
	}
	s.reportLogical(&b.rep, kit.SummarizeAll(runs, tools))
	return nil
}

// timed runs a tool's pipeline against srv: output files are fsynced
// inside the timed window, as the file store does for ours.
func timed(ctx context.Context, srv *kit.Server, stages []kit.Stage, stdin, stdout, syncDir string) kit.Run {
	var r kit.Run
	meter, begin := kit.StartMeter(srv.CPU), time.Now()
	r.Usage, r.Err = kit.Pipeline(ctx, stages, stdin, stdout)
	if r.Err == nil && syncDir != "" {
		r.Err = kit.SyncTree(syncDir)
	}
	r.Time = time.Since(begin)
	r.ServerCPU, r.Load = meter.Stop(r.Usage.CPU)
	return r
}

// dump takes one logical snapshot by tool into dir/out.
func (s *snapshotBench) dump(ctx context.Context, b *bench, dir, tool string) kit.Run {
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return kit.Run{Err: err}
	}
	var r kit.Run
	switch tool {
	case toolOurs, toolCompare:
		return s.ours(ctx, b, dir, tool, catalog.MethodLogical)
	case toolMydumper:
		argv := []string{s.bin["mydumper"], "--host", "127.0.0.1", "--port", strconv.Itoa(s.srv.Port()), "--user", "root",
			"--threads", strconv.Itoa(s.threads), "--database", "sbtest", "--outputdir", out, "--verbose", "2"}
		if s.mydumperRows > 0 {
			argv = append(argv, "--rows", strconv.Itoa(s.mydumperRows))
		}
		if s.mydumperCompress {
			argv = append(argv, "--compress")
		}
		r = timed(ctx, s.srv, []kit.Stage{{Argv: argv, Log: filepath.Join(dir, "mydumper.log")}}, "", "", out)
	default:
		// The dump records its binlog position, as a dump for PITR must,
		// with a moment of FLUSH TABLES WITH READ LOCK, as ours takes.
		argv := append([]string{s.bin[s.dumpProgram()], "--no-defaults"}, s.srv.RootFlags()...)
		if s.flavor.MySQL() {
			argv = append(argv, "--single-transaction", "--source-data=2", "--databases", "sbtest")
		} else {
			argv = append(argv, "--single-transaction", "--master-data=2", "--gtid", "--databases", "sbtest")
		}
		r = timed(ctx, s.srv, []kit.Stage{
			{Argv: argv, Log: filepath.Join(dir, "dump.log")},
			{Argv: []string{s.bin["zstd"], "-1", "-T" + strconv.Itoa(s.threads), "-q"}, Log: filepath.Join(dir, "zstd.log")},
		}, "", filepath.Join(out, "dump.sql.zst"), out)
	}
	r.Bytes = s.ds.Bytes
	if r.Err == nil {
		r.Stored, r.Err = kit.DirSize(out)
	}
	return r
}

// ours times `mysql-pitr snapshot` (the -compare build's for the compare
// tools) into a fresh file:// archive, dir/out.
func (s *snapshotBench) ours(ctx context.Context, b *bench, dir, tool, method string) kit.Run {
	bin, out := b.mp, filepath.Join(dir, "out")
	if tool == toolCompare || tool == toolComparePhys {
		bin = s.compareBin
	}
	argv := append([]string{bin, "snapshot", "--storage", "file://" + out, "--method", method,
		"--threads", strconv.Itoa(s.threads), "--log-format", "json"}, s.srv.PitrArgs()...)
	r := timed(ctx, s.srv, []kit.Stage{{Argv: argv, Env: s.srv.PitrEnv(), Log: filepath.Join(dir, "mysql-pitr.log")}}, "", "", "")
	r.Bytes = s.ds.Bytes
	if r.Err != nil {
		return r
	}
	snaps, err := kit.Snapshots(ctx, out)
	if err == nil && len(snaps) != 1 {
		err = fmt.Errorf("%s holds %d complete snapshots, want 1", out, len(snaps))
	}
	if r.Err = err; err != nil {
		return r
	}
	r.Stored = snaps[0].StoredBytes
	r.Note = fmt.Sprintf("(%s uncompressed) writes blocked %s", kit.MB(snaps[0].Bytes), kit.Ms(snaps[0].WritesBlocked))
	if method == catalog.MethodPhysical && s.flavor.MySQL() {
		r.Note += "; " + clonePhases(filepath.Join(dir, "mysql-pitr.log"), r.Time)
	}
	return r
}

// clonePhases splits a physical snapshot of MySQL that took total by its
// log lines: CLONE LOCAL, the one start of mysqld that finishes the clone,
// storing the copy, and the rest (start-up, checks, the manifest).
func clonePhases(log string, total time.Duration) string {
	t, err := kit.LogFileTimes(log)
	if err != nil {
		return err.Error()
	}
	p := []time.Time{t["cloning"], t["cloned"], t["the clone is consistent with"], t["stored the clone"]}
	if slices.ContainsFunc(p, time.Time.IsZero) {
		return "no clone phases in " + log
	}
	return fmt.Sprintf("clone %.2f s, finish %.2f s, store %.2f s, the rest %.2f s", p[1].Sub(p[0]).Seconds(),
		p[2].Sub(p[1]).Seconds(), p[3].Sub(p[2]).Seconds(), (total - p[3].Sub(p[0])).Seconds())
}

func (s *snapshotBench) reportLogical(rep *kit.Report, st map[string]kit.Stats) {
	for _, t := range []string{toolOurs, s.toolDump(), toolMydumper, toolCompare} {
		if x, ok := st[t]; ok {
			rep.Row("Logical snapshot, "+t, "%s", x.Result())
		}
	}
	ours := st[toolOurs]
	rep.Ratio("Logical snapshot throughput, mysql-pitr / "+s.toolDump(), ours.MBps/st[s.toolDump()].MBps, goalVsDump, true)
	rep.Ratio("Logical snapshot throughput, mysql-pitr / mydumper", ours.MBps/st[toolMydumper].MBps, goalVsMydumper, true)
	rep.Row("CPU per GB, mysql-pitr / "+s.toolDump()+" and / mydumper", "%.2f, %.2f",
		ours.CPU/st[s.toolDump()].CPU, ours.CPU/st[toolMydumper].CPU)
	if c, ok := st[toolCompare]; ok {
		rep.Row("Logical snapshot throughput, mysql-pitr / the -compare build", "%.2f", ours.MBps/c.MBps)
	}
	rep.Goal("mysql-pitr peak RSS during logical snapshots (max)", kit.MB(ours.PeakRSS), "≤ "+kit.MB(goalSnapshotMB), ours.PeakRSS > 0 && ours.PeakRSS <= goalSnapshotMB)
}

// physicalPhase times mysql-pitr's physical snapshots against the
// reference, after one uncounted reference run that warms the page cache
// with the datadir.
func (s *snapshotBench) physicalPhase(ctx context.Context, b *bench) error {
	if err := s.srv.WaitFlushed(ctx, 5*time.Minute); err != nil {
		return err
	}
	kit.Logf("physical snapshots: one warm-up %s run (not counted), then %d runs each, alternating", s.toolBackup(), s.runs)
	dir, done, err := b.mkdir("physical", "warmup")
	if err != nil {
		return err
	}
	if r := s.backup(ctx, dir, s.toolBackup()); r.Err != nil {
		return fmt.Errorf("warm-up: %w", r.Err)
	}
	os.RemoveAll(dir)
	done()
	tools := []string{toolOursPhys, s.toolBackup()}
	if s.flavor.MySQL() {
		tools = append(tools, toolCloneZstd)
	}
	if s.compareBin != "" {
		tools = append(tools, toolComparePhys)
	}
	runs, err := kit.Alternate(ctx, s.runs, tools, func(order int, tool string) kit.Run {
		dir, done, err := b.mkdir("physical", fmt.Sprintf("%02d-%s", order, kit.Slug(tool)))
		if err != nil {
			return kit.Run{Err: err}
		}
		defer done()
		if tool == s.toolBackup() || tool == toolCloneZstd {
			return s.backup(ctx, dir, tool)
		}
		return s.ours(ctx, b, dir, tool, catalog.MethodPhysical)
	})
	if err != nil {
		return err
	}
	st := kit.SummarizeAll(runs, tools)
	for _, t := range tools {
		b.rep.Row("Physical snapshot, "+t, "%s", st[t].Result())
	}
	over := st[toolOursPhys].Seconds/st[s.toolBackup()].Seconds - 1
	b.rep.Goal("Physical snapshot overhead, mysql-pitr over "+s.toolBackup()+", wall time", fmt.Sprintf("%+.1f%%", over*100),
		fmt.Sprintf("≤ +%.0f%%", goalPhysOverhead*100), over <= goalPhysOverhead)
	if z, ok := st[toolCloneZstd]; ok {
		b.rep.Row("Physical snapshot overhead, mysql-pitr over "+toolCloneZstd+" (the same copy, compressed and stored), wall time",
			"%+.1f%%", (st[toolOursPhys].Seconds/z.Seconds-1)*100)
	}
	if c, ok := st[toolComparePhys]; ok {
		b.rep.Row("Physical snapshot, mysql-pitr over the -compare build, wall time", "%+.1f%%", (st[toolOursPhys].Seconds/c.Seconds-1)*100)
	}
	return nil
}

// backup is a reference physical backup into dir/out: mariabackup's
// stream piped through zstd -1 (what a physical snapshot does on MariaDB,
// by hand); on MySQL the bare CLONE LOCAL DATA DIRECTORY a physical
// snapshot starts with, fsynced, or (toolCloneZstd) that clone made into a
// staging directory, archived by tar | zstd -1 into a fsynced file and
// removed: the work a physical snapshot does but for finishing the clone
// with a start of mysqld, hashing, and the manifest.
func (s *snapshotBench) backup(ctx context.Context, dir, tool string) kit.Run {
	out := filepath.Join(dir, "out")
	var r kit.Run
	switch {
	case tool == toolCloneZstd:
		r = s.cloneZstd(ctx, dir, out)
	case s.flavor.MySQL():
		// The server creates the directory itself.
		meter, begin := kit.StartMeter(s.srv.CPU), time.Now()
		r.Err = s.clone(ctx, out)
		if r.Err == nil {
			r.Err = kit.SyncTree(out)
		}
		r.Time = time.Since(begin)
		r.ServerCPU, r.Load = meter.Stop(0)
		r.Usage.CPU, r.Note = r.ServerCPU, "(cpu: the server's)"
	default:
		if r.Err = os.MkdirAll(out, 0o755); r.Err != nil {
			return r
		}
		log := filepath.Join(dir, "mariabackup.log")
		r = timed(ctx, s.srv, []kit.Stage{
			{Argv: append([]string{s.bin["mariadb-backup"], "--no-defaults", "--backup", "--stream=xbstream", "--target-dir=" + dir, "--protocol=tcp"},
				s.srv.RootFlags()...), Log: log},
			{Argv: []string{s.bin["zstd"], "-1", "-T" + strconv.Itoa(s.threads), "-q"}, Log: filepath.Join(dir, "zstd.log")},
		}, "", filepath.Join(out, "backup.xbstream.zst"), out)
		if r.Err == nil && !strings.Contains(kit.Tail(log, 3), "completed OK!") {
			r.Err = fmt.Errorf("mariabackup did not report completed OK:\n%s", kit.Tail(log, 8))
		}
	}
	r.Bytes = s.ds.Bytes
	if r.Err == nil {
		r.Stored, r.Err = kit.DirSize(out)
	}
	return r
}

func (s *snapshotBench) clone(ctx context.Context, dir string) error {
	if _, err := s.srv.DB.ExecContext(ctx, "CLONE LOCAL DATA DIRECTORY = '"+dir+"'"); err != nil {
		return fmt.Errorf("clone local: %w", err)
	}
	return nil
}

// cloneZstd is the toolCloneZstd reference; its CPU is tar's and zstd's,
// the clone's is the server's.
func (s *snapshotBench) cloneZstd(ctx context.Context, dir, out string) kit.Run {
	var r kit.Run
	staging := filepath.Join(dir, "clone")
	if r.Err = os.MkdirAll(out, 0o755); r.Err != nil {
		return r
	}
	meter, begin := kit.StartMeter(s.srv.CPU), time.Now()
	if r.Err = s.clone(ctx, staging); r.Err == nil {
		r.Usage, r.Err = kit.Pipeline(ctx, []kit.Stage{
			{Argv: []string{s.bin["tar"], "-C", staging, "-cf", "-", "."}, Log: filepath.Join(dir, "tar.log")},
			{Argv: []string{s.bin["zstd"], "-1", "-T" + strconv.Itoa(s.threads), "-q"}, Log: filepath.Join(dir, "zstd.log")},
		}, "", filepath.Join(out, "clone.tar.zst"))
	}
	if r.Err == nil {
		r.Err = errors.Join(kit.SyncTree(out), os.RemoveAll(staging))
	}
	r.Time = time.Since(begin)
	r.ServerCPU, r.Load = meter.Stop(r.Usage.CPU)
	r.Note = "(cpu: tar's and zstd's)"
	return r
}

// loadPhase loads the kept output of each dump tool into fresh servers,
// alternating loaders.
func (s *snapshotBench) loadPhase(ctx context.Context, b *bench, last map[string]string) error {
	dir, _, err := b.mkdir("load")
	if err != nil {
		return err
	}
	inputs := map[string]string{toolLoadOurs: last[toolOurs], toolMyloader: last[toolMydumper]}
	if d := last[s.toolDump()]; d != "" {
		// Decompressed beforehand, not timed: the client reads plain SQL.
		sql := filepath.Join(dir, "dump.sql")
		zstd := []string{s.bin["zstd"], "-d", "-q", "-c", filepath.Join(d, "dump.sql.zst")}
		if _, err := kit.Pipeline(ctx, []kit.Stage{{Argv: zstd, Log: filepath.Join(dir, "unzstd.log")}}, "", sql); err != nil {
			return err
		}
		inputs[s.toolLoadSQL()] = sql
	}
	tools := []string{toolLoadOurs, s.toolLoadSQL(), toolMyloader}
	kit.Logf("loads: %d runs each into fresh servers, %d threads, alternating", s.runs, s.threads)
	runs, err := kit.Alternate(ctx, s.runs, tools, func(order int, tool string) kit.Run {
		if inputs[tool] == "" {
			return kit.Run{Err: errors.New("no dump to load: every dump run of its tool failed")}
		}
		rdir, done, err := b.mkdir("load", fmt.Sprintf("%02d-%s", order, kit.Slug(tool)))
		if err != nil {
			return kit.Run{Err: err}
		}
		defer done()
		return s.loadOne(ctx, b, rdir, tool, inputs[tool])
	})
	if err != nil {
		return err
	}
	st := kit.SummarizeAll(runs, tools)
	for _, t := range tools {
		b.rep.Row("Load into a fresh server, "+t, "%s", st[t].Result())
	}
	ours := st[toolLoadOurs].Seconds
	b.rep.Ratio("Load speed-up, mysql-pitr over "+s.toolLoadSQL()+" (time ratio)", st[s.toolLoadSQL()].Seconds/ours, goalLoadVsSQL, true)
	b.rep.Ratio("Load speed-up, mysql-pitr over myloader (time ratio)", st[toolMyloader].Seconds/ours, goalLoadVsMyload, true)
	return nil
}

// loadOne times loading one tool's dump into a fresh server with the
// source's settings, then checks that its tables equal the source's. Every
// loader keeps the load out of the binlog, so none pays for it.
func (s *snapshotBench) loadOne(ctx context.Context, b *bench, dir, tool, input string) kit.Run {
	dst, err := b.startServer(s.serverArgs())
	if err != nil {
		return kit.Run{Err: err}
	}
	defer dst.Close()
	var stage kit.Stage
	stdin := ""
	switch tool {
	case toolLoadOurs:
		// This program again, as a child, so that its CPU and RSS are its own.
		stage.Argv = []string{s.self, "load-worker", "-storage", input, "-dsn", dst.DSN(), "-threads", strconv.Itoa(s.threads)}
	case toolMyloader:
		stage.Argv = []string{s.bin["myloader"], "--host", "127.0.0.1", "--port", strconv.Itoa(dst.Port()), "--user", "root",
			"--threads", strconv.Itoa(s.threads), "--directory", input, "--verbose", "2"}
	default:
		stage.Argv = append(append([]string{s.bin[s.flavor.ClientProgram()], "--no-defaults"}, dst.RootFlags()...),
			"--init-command=SET SESSION sql_log_bin = 0")
		stdin = input
	}
	stage.Log = filepath.Join(dir, kit.Slug(tool)+".log")
	r := timed(ctx, dst, []kit.Stage{stage}, stdin, "", "")
	r.Bytes = s.ds.Bytes
	if r.Err != nil {
		return r
	}
	// Not timed: the loaded tables must equal the source's, row for row.
	sums, err := kit.Checksums(ctx, dst.DB, s.tables)
	if r.Err = err; err == nil && fmt.Sprint(sums) != fmt.Sprint(s.ds.Sums) {
		r.Err = fmt.Errorf("loaded tables differ from the source: CHECKSUM TABLE %v, source %v", sums, s.ds.Sums)
	}
	return r
}

// loadWorker is this program run again as a child, loading one logical
// snapshot with snapshot.LoadLogical, so that its CPU time and peak RSS
// are its own and not the benchmark's.
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
	snaps, err := kit.Snapshots(ctx, *dir)
	if err != nil || len(snaps) != 1 {
		return fmt.Errorf("%s: want one snapshot (%d, %v)", *dir, len(snaps), err)
	}
	target, err := mysql.ParseDSN(*dsn)
	if err != nil {
		return fmt.Errorf("parse -dsn: %w", err)
	}
	return snapshot.LoadLogical(ctx, st, snaps[0], target, snapshot.LoadOptions{Threads: *threads})
}
