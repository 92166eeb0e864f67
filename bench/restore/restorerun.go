package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

// restoreRun is one timed `mysql-pitr restore --to latest --datadir`.
type restoreRun struct {
	Mode  string
	Run   int // 1-based, per mode
	Order int // 1-based position in the alternating sequence
	// Total is the wall time from starting the restore to its exit.
	Total time.Duration
	// Replay is the restore's own account of its replay (the summary's
	// "replay" duration, Result.ReplayDuration): the same clock for both
	// modes.
	Replay       time.Duration
	Transactions int
	Phases       phases
	// CPU is the whole restore's CPU time: mysql-pitr and every process
	// it waited for (temporary server, loaders, the pipeline).
	CPU time.Duration
	// ReplayCPU is the CPU time each program used between the replay's
	// first and last log lines, from /proc samples.
	ReplayCPU map[string]time.Duration
	// PeakRSS is the largest VmHWM of each program's processes.
	PeakRSS map[string]int64
	Load    machineLoad
	Datadir string
	Err     error
}

// replayCPU sums ReplayCPU.
func (r restoreRun) replayCPU() time.Duration {
	var d time.Duration
	for _, c := range r.ReplayCPU {
		d += c
	}
	return d
}

// phases split a restore by its log lines.
type phases struct {
	// Fetch is from the start to "replay range": planning, fetching and
	// verifying the binlog, finding the stop.
	Fetch time.Duration
	// Snapshot is from there to the replay's start: restoring the
	// snapshot and starting the temporary server.
	Snapshot time.Duration
	// Replay is between the replay's first and last log lines.
	Replay time.Duration
	// Finish is from the replay's end to the exit: GTID state, clean
	// shutdown, marker.
	Finish time.Duration
}

func (p phases) String() string {
	return fmt.Sprintf("fetch %.1f s, snapshot %.1f s, replay %.1f s, finish %.1f s",
		p.Fetch.Seconds(), p.Snapshot.Seconds(), p.Replay.Seconds(), p.Finish.Seconds())
}

// samplePeriod is how often a restore's processes are read from /proc.
const samplePeriod = 100 * time.Millisecond

// runRestore times `mysql-pitr restore --to latest` into a fresh datadir
// under dir, with the mode's replay and archive.
func (b *bench) runRestore(ctx context.Context, dir, mode string) restoreRun {
	r := restoreRun{Mode: mode, Datadir: filepath.Join(dir, "datadir")}
	archive, replay := b.archive, mode
	if mode == modePhysical {
		archive, replay = b.physArchive, restore.ReplayServer
	}
	tmp := filepath.Join(b.cfg.workDir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		r.Err = err
		return r
	}
	argv := []string{b.mp, "restore",
		"--storage", "file://" + archive,
		"--to", "latest",
		"--datadir", r.Datadir,
		"--replay", replay,
		"--threads", strconv.Itoa(b.cfg.threads),
		"--log-format", "json",
	}
	out, logPath := filepath.Join(dir, "restore.out"), filepath.Join(dir, "restore.log")
	meter := startMeter()
	begin := time.Now()
	// The fetched binlog and the temporary server's socket go below the
	// work directory.
	c, err := benchkit.StartChildOut("restore", argv, []string{"TMPDIR=" + tmp}, out, logPath)
	if err != nil {
		r.Err = err
		return r
	}
	sampler := newTreeSampler(c.Pid(), samplePeriod)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { sampler.run(sctx) })
	select {
	case <-c.Done():
	case <-ctx.Done():
		c.Stop(30 * time.Second)
	}
	end := time.Now()
	cancel()
	wg.Wait()
	r.Total = end.Sub(begin)
	r.CPU = c.Usage().CPU
	r.Load = meter.stop(r.CPU)
	r.PeakRSS = sampler.peakRSS()
	if c.Err() != nil {
		r.Err = fmt.Errorf("mysql-pitr restore --replay %s: %w:\n%s", replay, c.Err(), c.LogTail(15))
		return r
	}
	stdout, err := os.ReadFile(out)
	if err != nil {
		r.Err = err
		return r
	}
	s, err := parseSummary(string(stdout))
	if err != nil {
		r.Err = err
		return r
	}
	r.Replay, r.Transactions = s.Replay, s.Transactions
	f, err := os.Open(logPath)
	if err != nil {
		r.Err = err
		return r
	}
	marks, err := parseLogMarks(f)
	f.Close()
	if err != nil {
		r.Err = err
		return r
	}
	if err := marks.complete(); err != nil {
		r.Err = fmt.Errorf("%w (log %s)", err, logPath)
		return r
	}
	r.Phases = phases{
		Fetch:    marks.Range.Sub(begin),
		Snapshot: marks.ReplayStart.Sub(marks.Range),
		Replay:   marks.ReplayEnd.Sub(marks.ReplayStart),
		Finish:   end.Sub(marks.ReplayEnd),
	}
	r.ReplayCPU = sampler.cpuBetween(marks.ReplayStart, marks.ReplayEnd)
	if _, err := os.Stat(filepath.Join(r.Datadir, restore.MarkerFile)); err != nil {
		r.Err = fmt.Errorf("the restored datadir has no %s: %w", restore.MarkerFile, err)
	}
	return r
}

// summary is what the restore's last stdout line says.
type summary struct {
	Transactions  int
	Total, Replay time.Duration
}

// summaryRE matches "restored DIR to latest: snapshot ID + N transactions,
// last committed T, stopped at P, in 1m2.5s (replay 55.1s)".
var summaryRE = regexp.MustCompile(`(?m)^restored .* \+ (\d+) transactions, .* in (\S+) \(replay (\S+)\)$`)

func parseSummary(stdout string) (summary, error) {
	var s summary
	m := summaryRE.FindStringSubmatch(stdout)
	if m == nil {
		return s, fmt.Errorf("no summary line in the restore's output:\n%s", stdout)
	}
	var errs [3]error
	s.Transactions, errs[0] = strconv.Atoi(m[1])
	s.Total, errs[1] = time.ParseDuration(m[2])
	s.Replay, errs[2] = time.ParseDuration(m[3])
	if err := errors.Join(errs[:]...); err != nil {
		return s, fmt.Errorf("summary line %q: %w", m[0], err)
	}
	return s, nil
}

// logMarks are the times of the restore's log lines that bound its phases.
type logMarks struct {
	// Range is "replay range": the binlog is fetched and the stop found.
	Range time.Time
	// ReplayStart and ReplayEnd bound the replay: "replaying by
	// replication" / "replayed by replication", or "replaying with
	// mysqlbinlog" / "replayed with mysqlbinlog".
	ReplayStart, ReplayEnd time.Time
	// Nothing is set when the restore had nothing to replay.
	Nothing bool
}

// complete says which mark is missing.
func (m logMarks) complete() error {
	switch {
	case m.Nothing:
		return errors.New("the restore had nothing to replay after the snapshot")
	case m.Range.IsZero():
		return errors.New(`no "replay range" line in the restore's log`)
	case m.ReplayStart.IsZero() || m.ReplayEnd.IsZero():
		return errors.New("the restore's log has no replay start or end line")
	}
	return nil
}

// logLine is the part of a JSON log line the benchmark reads.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
}

// parseLogMarks reads the restore's --log-format json lines; lines that
// are not JSON (a panic, a child's message) are skipped.
func parseLogMarks(r io.Reader) (logMarks, error) {
	var m logMarks
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var l logLine
		if err := json.Unmarshal(line, &l); err != nil {
			continue
		}
		switch l.Msg {
		case "replay range":
			m.Range = l.Time
		case "replaying by replication", "replaying with mysqlbinlog":
			m.ReplayStart = l.Time
		case "replayed by replication", "replayed with mysqlbinlog":
			m.ReplayEnd = l.Time
		case "nothing to replay after the snapshot":
			m.Nothing = true
		}
	}
	return m, sc.Err()
}

// setting is one server variable, as read.
type setting struct{ Name, Value string }

// tempServerVars are the settings the report states for the temporary
// server every restore replays on.
var tempServerVars = []string{
	"innodb_flush_log_at_trx_commit", "sync_binlog", "log_bin", "innodb_doublewrite",
	"innodb_buffer_pool_size", "innodb_log_file_size", "skip_networking",
}

// verifyDatadir starts a server on a restored datadir as the restore's
// temporary server is started (mysqld.Start, here without privilege checks
// and on another socket), compares CHECKSUM TABLE of every sysbench table
// with the source's, reads the settings the report states, and shuts it
// down cleanly.
func verifyDatadir(ctx context.Context, datadir, runDir string, tables int, want map[string]int64) (settings []setting, err error) {
	defer os.RemoveAll(runDir)
	// The restore's default buffer pool, as the restores ran: the settings
	// read back are the temporary server's.
	srv, err := mysqld.Start(ctx, mysqld.Options{Flavor: mysqld.MariaDB, Datadir: datadir, RunDir: runDir, ServerID: 4242, SkipGrants: true,
		BufferPool: restore.DefaultBufferPool})
	if err != nil {
		return nil, fmt.Errorf("start a server on the restored datadir: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if serr := srv.Stop(sctx); err == nil && serr != nil {
			err = serr
		}
	}()
	got, err := checksums(ctx, srv.DB(), tables)
	if err != nil {
		return nil, err
	}
	if d := diffChecksums(got, want); d != "" {
		return nil, fmt.Errorf("the restored tables differ from the source: %s", d)
	}
	for _, v := range tempServerVars {
		var val string
		if err := srv.DB().QueryRowContext(ctx, "SELECT @@GLOBAL."+v).Scan(&val); err != nil {
			return nil, fmt.Errorf("read %s: %w", v, err)
		}
		settings = append(settings, setting{v, val})
	}
	return settings, nil
}

// diffChecksums names the tables whose checksums differ; empty when none.
func diffChecksums(got, want map[string]int64) string {
	var diffs []string
	for t, w := range want {
		g, ok := got[t]
		switch {
		case !ok:
			diffs = append(diffs, t+" missing")
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s %d, source %d", t, g, w))
		}
	}
	for t := range got {
		if _, ok := want[t]; !ok {
			diffs = append(diffs, t+" not in the source")
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "; ")
}
