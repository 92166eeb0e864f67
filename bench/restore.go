package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// restoreBench measures restores: replaying an archived sysbench binlog
// onto a restored snapshot with the built-in binlog server (`restore
// --replay server`) against the flavor's binlog reader piped into its
// client (`restore --replay mysqlbinlog`), both through the restore
// command and so against the same temporary server, and the time a whole
// `restore --to latest --datadir` takes: the RTO.
type restoreBench struct {
	common
	binlog, maxBinlogSize int64
	loadThreads           int
	physical, verify      bool

	src                  *kit.Server
	archive, physArchive string
	sums                 map[string]int64
	details              map[int]*replayRun // by run order
}

// goalReplay is the pipeline's replay time over the built-in server's.
const goalReplay = 3.0

func (r *restoreBench) flags(fs *flag.FlagSet) *common {
	r.register(fs, 100000, 1<<30)
	kit.SizeVar(fs, &r.binlog, "binlog", 1<<30, "binlog to archive after the snapshot, which every restore replays")
	kit.SizeVar(fs, &r.maxBinlogSize, "max-binlog-size", 256<<20, "the source server's max_binlog_size")
	fs.IntVar(&r.loadThreads, "load-threads", 4, "sysbench --threads of the unthrottled load that writes the binlog")
	fs.BoolVar(&r.physical, "physical", false, "also take a physical snapshot and time restores from it (default replay mode)")
	fs.BoolVar(&r.verify, "verify", true, "after each restore, start a server on the datadir and compare CHECKSUM TABLE with the source (not timed)")
	return &r.common
}

func (r *restoreBench) smoke() map[string]string {
	return map[string]string{"tables": "4", "table-size": "10000", "binlog": "30MiB", "runs": "1", "buffer-pool": "256MiB"}
}

func (r *restoreBench) validate() error {
	if r.binlog < 1<<20 || r.maxBinlogSize < 4096 || r.loadThreads < 1 {
		return errors.New("-binlog must be at least 1MiB, -max-binlog-size at least 4096, -load-threads positive")
	}
	return nil
}

// Replay modes and snapshot kinds of a restore run, as printed.
const (
	modeServer      = restore.ReplayServer
	modeMysqlbinlog = restore.ReplayMysqlbinlog
	// modePhysical restores from the physical snapshot, replaying by the
	// default mode.
	modePhysical = "physical+server"
)

func (r *restoreBench) title(mode string) string {
	switch mode {
	case modeServer:
		return "built-in binlog server (--replay server)"
	case modeMysqlbinlog:
		return fmt.Sprintf("%s | %s (--replay mysqlbinlog)", r.flavor.BinlogTool(), r.flavor.ClientProgram())
	}
	return "physical snapshot, --replay server"
}

func (r *restoreBench) run(ctx context.Context, b *bench) (err error) {
	r.archive, r.details = filepath.Join(b.dir, "archive"), map[int]*replayRun{}
	kit.Logf("starting the source %s (buffer pool %s, max_binlog_size %s)", r.flavor, kit.MB(r.bufferPool), kit.MB(r.maxBinlogSize))
	if r.src, err = b.startServer(testbed.MariaDBOptions{MaxBinlogSize: r.maxBinlogSize,
		ExtraArgs: []string{"--innodb-buffer-pool-size=" + strconv.FormatInt(r.bufferPool, 10), "--max-connections=200"}}); err != nil {
		return err
	}
	defer func() {
		if r.src != nil {
			r.src.Close()
		}
	}()
	sb, err := kit.NewSysbench(r.src, r.tables, r.tableSize, r.loadThreads)
	if err != nil {
		return err
	}
	kit.Logf("sysbench prepare: %d tables × %d rows", r.tables, r.tableSize)
	if err := sb.Prepare(ctx, r.src, filepath.Join(b.dir, "sysbench-prepare.log")); err != nil {
		return err
	}
	ds, err := r.src.MeasureDataset(ctx, r.tables)
	if err != nil {
		return err
	}
	// The source: an agent archiving its binlog, the snapshots, then the
	// load that every restore replays.
	if err := os.MkdirAll(r.archive, 0o755); err != nil {
		return err
	}
	agent, err := kit.StartAgent(b.mp, r.src, "file://"+r.archive, nil, b.dir, 1001, time.Second)
	if err != nil {
		return err
	}
	defer agent.Stop(30 * time.Second)
	if err := r.waitArchived(ctx, agent); err != nil {
		return err
	}
	phys, logical, err := r.takeSnapshots(ctx, b)
	if err != nil {
		return err
	}
	kit.Logf("sysbench oltp_write_only (%d threads, unthrottled) until the source holds %s after the snapshot", r.loadThreads, kit.MB(r.binlog))
	fill, err := sb.Fill(ctx, r.src, filepath.Join(b.dir, "sysbench-run.log"), 0,
		func(logs []kit.BinaryLog) bool { return kit.BytesAfter(logs, logical.Binlog) >= r.binlog })
	if err != nil {
		return err
	}
	kit.Logf("%s", fill)
	if err := r.waitArchived(ctx, agent); err != nil {
		return err
	}
	if r.sums, err = kit.Checksums(ctx, r.src.DB, r.tables); err != nil {
		return err
	}
	// Nothing but the restores may use the machine from here on: the agent
	// has archived everything, and the source would go on flushing pages.
	agent.Stop(30 * time.Second)
	if err := r.src.Close(); err != nil {
		return fmt.Errorf("stop the source: %w", err)
	}
	r.src = nil
	plan, err := planLatest(ctx, r.archive)
	if err != nil {
		return err
	}
	g := replayedBy(plan)
	kit.Logf("the restores replay %s of binlog in %s (%s stored)", kit.MB(g.bytes), kit.Plural(g.files, "file"), kit.MB(g.stored))
	modes, runs, err := r.restoreAll(ctx, b, logical.ID, g)
	if err != nil {
		return err
	}
	r.report(&b.rep, ds, logical, phys, fill, g, modes, runs)
	return nil
}

// takeSnapshots takes the snapshots the restores start from: the
// physical one (with -physical) first, since the planner restores from the
// newest snapshot, the logical one; the physical runs use a copy of the
// archive without it.
func (r *restoreBench) takeSnapshots(ctx context.Context, b *bench) (phys, logical *catalog.Manifest, err error) {
	if r.physical {
		if phys, err = r.takeSnapshot(ctx, b, catalog.MethodPhysical); err != nil {
			return nil, nil, err
		}
	}
	if logical, err = r.takeSnapshot(ctx, b, catalog.MethodLogical); err != nil {
		return nil, nil, err
	}
	return phys, logical, nil
}

// restoreAll times the restores of each mode, alternating, each replaying
// g. The physical mode restores from a copy of the archive without the
// logical snapshot. It returns the modes in the order they ran and the
// runs.
func (r *restoreBench) restoreAll(ctx context.Context, b *bench, logical catalog.SnapshotID, g replayed) (modes []string, runs []kit.Run, err error) {
	modes = []string{modeServer, modeMysqlbinlog}
	if r.physical {
		if r.physArchive, err = archiveWithout(ctx, r.archive, logical); err != nil {
			return nil, nil, err
		}
		modes = append(modes, modePhysical)
	}
	kit.Logf("restores: %s per mode %v, alternating, %d threads, --to latest into a fresh datadir", kit.Plural(r.runs, "run"), modes, r.threads)
	runs, err = kit.Alternate(ctx, r.runs, modes, func(order int, mode string) kit.Run {
		dir, done, err := b.mkdir("restore", fmt.Sprintf("%02d-%s", order, mode))
		if err != nil {
			return kit.Run{Err: err}
		}
		defer done()
		run, d := r.restoreOnce(ctx, b, dir, mode)
		run.Bytes, r.details[order] = g.bytes, d
		return run
	})
	if err != nil {
		return nil, nil, err
	}
	return modes, runs, nil
}

// waitArchived waits until the agent's archive is durable up to the
// source's binlog end.
func (r *restoreBench) waitArchived(ctx context.Context, agent *kit.Agent) error {
	end, err := r.src.WaitIdle(ctx, time.Second)
	if err != nil {
		return err
	}
	if err := agent.WaitDurable(ctx, end, 200*time.Millisecond, 15*time.Minute, nil); err != nil {
		return fmt.Errorf("%w:\n%s", err, agent.LogTail(15))
	}
	return nil
}

// takeSnapshot runs `mysql-pitr snapshot` into the archive and returns the
// snapshot it added.
func (r *restoreBench) takeSnapshot(ctx context.Context, b *bench, method string) (*catalog.Manifest, error) {
	argv := append([]string{b.mp, "snapshot", "--storage", "file://" + r.archive, "--method", method,
		"--threads", strconv.Itoa(r.threads), "--log-format", "json"}, r.src.PitrArgs()...)
	begin := time.Now()
	if _, err := kit.Pipeline(ctx, []kit.Stage{{Argv: argv, Env: r.src.PitrEnv(), Log: filepath.Join(b.dir, "snapshot-"+method+".log")}}, "", ""); err != nil {
		return nil, err
	}
	snaps, err := kit.Snapshots(ctx, r.archive)
	if err != nil {
		return nil, err
	}
	var m *catalog.Manifest
	for _, s := range snaps {
		if s.Method == method && (m == nil || s.ID > m.ID) {
			m = s
		}
	}
	if m == nil {
		return nil, fmt.Errorf("the archive holds no complete %s snapshot after mysql-pitr snapshot", method)
	}
	kit.Logf("%s snapshot %s at %s: %s, stored %s, took %.1f s", method, m.ID, m.Binlog, kit.MB(m.Bytes), kit.MB(m.StoredBytes), time.Since(begin).Seconds())
	return m, nil
}

// planLatest plans `restore --to latest` on the file:// archive at dir, as
// the restore command does.
func planLatest(ctx context.Context, dir string) (*restore.Plan, error) {
	st, err := file.New(dir)
	if err != nil {
		return nil, err
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return nil, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return nil, err
	}
	return restore.Make(arch, snaps.Complete, restore.Target{Kind: restore.Latest}, time.Now())
}

// replayed is what a plan replays: binlog bytes after the snapshot's
// position, their stored size, and the binlog files they are in.
type replayed struct {
	bytes, stored int64
	files         int
}

func replayedBy(p *restore.Plan) replayed {
	var g replayed
	fromNum, _ := catalog.FileNumber(p.From.File)
	lastFile := ""
	for _, s := range p.Segments {
		start := s.Start
		if s.FileNum == fromNum {
			start = max(start, p.From.Pos)
		}
		if s.End > start {
			g.bytes += int64(s.End - start)
		}
		g.stored += s.StoredSize
		if s.File != lastFile {
			g.files++
			lastFile = s.File
		}
	}
	return g
}

// archiveWithout copies the archive, by hard links (the file store never
// rewrites an object in place), without snapshot id, so that the planner
// picks the other one.
func archiveWithout(ctx context.Context, src string, id catalog.SnapshotID) (string, error) {
	dst := src + "-without-" + string(id)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		return os.Link(path, filepath.Join(dst, rel))
	})
	if err != nil {
		return "", fmt.Errorf("copy the archive: %w", err)
	}
	st, err := file.New(dst)
	if err != nil {
		return "", err
	}
	objs, err := st.List(ctx, catalog.SnapshotPrefixOf(id))
	if err == nil && len(objs) == 0 {
		err = fmt.Errorf("the archive copy has no object of snapshot %s", id)
	}
	for _, o := range objs {
		err = errors.Join(err, st.Delete(ctx, o.Key))
	}
	return dst, err
}

// replayRun is what one restore's output and /proc samples say beyond its
// wall time and rusage.
type replayRun struct {
	replay       time.Duration // the restore's own (replay …): the same clock in both modes
	transactions int
	fetch, snap  time.Duration // start to "replay range"; to the replay's first line
	phase, fin   time.Duration // the replay's first to last line; to the exit
	replayCPU    map[string]time.Duration
	peakRSS      map[string]int64
}

func (d *replayRun) cpu() (t time.Duration) {
	for _, c := range d.replayCPU {
		t += c
	}
	return t
}

// restoreOnce times `mysql-pitr restore --to latest` into a fresh datadir
// under dir, and verifies the datadir afterwards.
func (r *restoreBench) restoreOnce(ctx context.Context, b *bench, dir, mode string) (kit.Run, *replayRun) {
	var run kit.Run
	d := &replayRun{}
	archive, replay, datadir := r.archive, mode, filepath.Join(dir, "datadir")
	if mode == modePhysical {
		archive, replay = r.physArchive, restore.ReplayServer
	}
	tmp := filepath.Join(b.dir, "tmp")
	if run.Err = os.MkdirAll(tmp, 0o755); run.Err != nil {
		return run, d
	}
	argv := []string{b.mp, "restore", "--storage", "file://" + archive, "--to", "latest", "--datadir", datadir,
		"--replay", replay, "--threads", strconv.Itoa(r.threads), "--log-format", "json"}
	out, logPath := filepath.Join(dir, "restore.out"), filepath.Join(dir, "restore.log")
	meter, begin := kit.StartMeter(nil), time.Now()
	// The fetched binlog and the temporary server's socket go below the
	// work directory. The release's programs are found on PATH: with
	// --server-bindir, a restore of a MySQL clone looks there for
	// xtrabackup, which it does not need, and fails.
	c, err := kit.StartIO(argv, append(kit.BinPath(r.flavor), "TMPDIR="+tmp), "", out, logPath)
	if err != nil {
		return kit.Run{Err: err}, d
	}
	f := r.flavor
	sampler := kit.NewTreeSampler(100*time.Millisecond, "mysql-pitr", f.ServerProgram(), f.BinlogTool(), f.ClientProgram())
	sampler.Add(c.Pid())
	stop := sampler.Watch()
	select {
	case <-c.Done():
	case <-ctx.Done():
		c.Stop(30 * time.Second)
	}
	end := time.Now()
	stop()
	run.Time, run.Err = end.Sub(begin), c.Wait()
	run.Usage = kit.Usage{CPU: c.Usage().CPU, PeakRSS: sampler.MaxRSS()}
	_, run.Load = meter.Stop(run.Usage.CPU)
	d.peakRSS = sampler.PeakRSS()
	if run.Err != nil {
		return run, d
	}
	stdout, _ := os.ReadFile(out)
	if d.transactions, d.replay, run.Err = parseSummary(string(stdout)); run.Err != nil {
		return run, d
	}
	lf, err := os.Open(logPath)
	if err != nil {
		return kit.Run{Err: err}, d
	}
	m, err := parseLogMarks(lf)
	lf.Close()
	if run.Err = err; err != nil {
		run.Err = fmt.Errorf("%w (log %s)", err, logPath)
		return run, d
	}
	d.fetch, d.snap, d.phase, d.fin = m.rng.Sub(begin), m.start.Sub(m.rng), m.end.Sub(m.start), end.Sub(m.end)
	d.replayCPU = sampler.CPUBetween(m.start, m.end)
	run.Note = fmt.Sprintf("replay %.2f s (%d transactions, %.0f tx/s) [fetch %.1f s, snapshot %.1f s, replay %.1f s, finish %.1f s], replay cpu %.1f s (%s), peak rss %s",
		d.replay.Seconds(), d.transactions, float64(d.transactions)/d.replay.Seconds(), d.fetch.Seconds(), d.snap.Seconds(), d.phase.Seconds(), d.fin.Seconds(),
		d.cpu().Seconds(), breakdown(d.replayCPU), breakdown(d.peakRSS))
	if _, err := os.Stat(filepath.Join(datadir, restore.MarkerFile)); err != nil {
		run.Err = fmt.Errorf("the restored datadir has no %s: %w", restore.MarkerFile, err)
	} else if r.verify {
		run.Err = r.verifyDatadir(ctx, datadir, filepath.Join(b.dir, "v"))
	}
	return run, d
}

// summaryRE matches the restore's last stdout line, "restored DIR to
// latest: snapshot ID + N transactions, last committed T, stopped at P, in
// 1m2.5s (replay 55.1s)".
var summaryRE = regexp.MustCompile(`(?m)^restored .* \+ (\d+) transactions, .* in \S+ \(replay (\S+)\)$`)

func parseSummary(stdout string) (transactions int, replay time.Duration, err error) {
	m := summaryRE.FindStringSubmatch(stdout)
	if m == nil {
		return 0, 0, fmt.Errorf("no summary line in the restore's output:\n%s", stdout)
	}
	transactions, err1 := strconv.Atoi(m[1])
	replay, err2 := time.ParseDuration(m[2])
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("summary line %q: %w", m[0], err)
	}
	return transactions, replay, nil
}

// logMarks are the times of the restore's log lines that bound its phases:
// "replay range" (the binlog fetched and the stop found), and the replay's
// first and last lines in either mode.
type logMarks struct{ rng, start, end time.Time }

func parseLogMarks(r io.Reader) (logMarks, error) {
	t, err := kit.LogTimes(r)
	if err != nil {
		return logMarks{}, err
	}
	m := logMarks{rng: t["replay range"], start: t["replaying by replication"], end: t["replayed by replication"]}
	if m.start.IsZero() {
		m.start, m.end = t["replaying with mysqlbinlog"], t["replayed with mysqlbinlog"]
	}
	switch _, nothing := t["nothing to replay after the snapshot"]; {
	case nothing:
		return m, errors.New("the restore had nothing to replay after the snapshot")
	case m.rng.IsZero() || m.start.IsZero() || m.end.IsZero():
		return m, errors.New(`the restore's log lacks its "replay range" line or the replay's first or last line`)
	}
	return m, nil
}

// tempServerVars are the settings the report states for the temporary
// server every restore replays on (those the flavor has).
var tempServerVars = []string{"innodb_flush_log_at_trx_commit", "sync_binlog", "log_bin", "innodb_doublewrite",
	"innodb_buffer_pool_size", "innodb_log_file_size", "innodb_redo_log_capacity", "skip_networking"}

var tempServer string // read once, from the first verified datadir

// verifyDatadir starts a server on a restored datadir as the restore starts
// its temporary server (mysqld.Start, here without privilege checks and on
// another socket), compares CHECKSUM TABLE of every sysbench table with
// the source's, and shuts it down cleanly.
func (r *restoreBench) verifyDatadir(ctx context.Context, datadir, runDir string) (err error) {
	defer os.RemoveAll(runDir)
	srv, err := mysqld.Start(ctx, mysqld.Options{Flavor: r.flavor.Family(), Programs: r.flavor.Programs(), Datadir: datadir, RunDir: runDir,
		ServerID: 4242, SkipGrants: true, BufferPool: restore.DefaultBufferPool})
	if err != nil {
		return fmt.Errorf("start a server on the restored datadir: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		err = errors.Join(err, srv.Stop(sctx))
	}()
	got, err := kit.Checksums(ctx, srv.DB(), r.tables)
	if err != nil {
		return err
	}
	if fmt.Sprint(got) != fmt.Sprint(r.sums) {
		return fmt.Errorf("the restored tables differ from the source: CHECKSUM TABLE %v, source %v", got, r.sums)
	}
	if tempServer == "" {
		rows, err := srv.DB().QueryContext(ctx, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('"+strings.Join(tempServerVars, "', '")+"')")
		if err != nil {
			return err
		}
		defer rows.Close()
		var vars []string
		for rows.Next() {
			var name, val string
			if err := rows.Scan(&name, &val); err != nil {
				return err
			}
			if n, err := strconv.ParseInt(val, 10, 64); err == nil && n >= 1<<20 && n%(1<<20) == 0 {
				val = strconv.FormatInt(n>>20, 10) + " MiB"
			}
			vars = append(vars, name+"="+val)
		}
		tempServer = strings.Join(vars, ", ")
	}
	return nil
}
