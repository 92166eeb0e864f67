package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

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
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// bench holds what every phase needs.
type bench struct {
	cfg config
	src *server // nil once the restores start
	mp  string  // the mysql-pitr binary
	// archive is the file:// archive the agent writes and the snapshots go
	// to; physArchive a copy of it without the logical snapshot.
	archive, physArchive string
	agent                *benchkit.Child
}

// pitrEnv carries the pitr account's password to mysql-pitr; it never goes
// in argv.
func (b *bench) pitrEnv() []string {
	return []string{"MYSQL_PITR_PASSWORD=" + b.src.PitrPassword()}
}

// startAgent starts `mysql-pitr agent` on the source, archiving to a new
// file:// archive, with its HTTP listener off (nothing reads it, and a
// fixed port could collide with another program's).
func (b *bench) startAgent() error {
	if err := os.MkdirAll(b.archive, 0o755); err != nil {
		return err
	}
	argv := []string{b.mp, "agent",
		"--dsn", b.src.DSNFor(testbed.PitrUser, ""),
		"--storage", "file://" + b.archive,
		"--listen=",
		"--spool-dir", filepath.Join(b.cfg.workDir, "spool"),
		"--server-id", "1001",
		"--log-format", "json",
	}
	var err error
	b.agent, err = benchkit.StartChild("agent", argv, b.pitrEnv(), filepath.Join(b.cfg.workDir, "agent.log"))
	return err
}

func (b *bench) stopAgent() {
	if b.agent != nil {
		b.agent.Stop(30 * time.Second)
	}
}

// archiveEnd is where the archive's newest timeline ends; empty before the
// agent has written anything.
func archiveEnd(ctx context.Context, dir string) (catalog.Position, error) {
	st, err := file.New(dir)
	if err != nil {
		return catalog.Position{}, err
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return catalog.Position{}, err
	}
	tl := arch.Last()
	if tl == nil || len(tl.Segments) == 0 {
		return catalog.Position{}, nil
	}
	end, _ := tl.End()
	return end, nil
}

// archiveTimeout bounds the wait for the agent to archive what the source
// has written.
const archiveTimeout = 15 * time.Minute

// waitArchived waits until the archive reaches the source's binlog end.
func (b *bench) waitArchived(ctx context.Context) error {
	end, err := benchkit.MasterStatus(ctx, b.src.DB)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(archiveTimeout)
	var last catalog.Position
	for {
		if last, err = archiveEnd(ctx, b.archive); err != nil {
			return err
		}
		if benchkit.PosAtLeast(last, end) {
			return nil
		}
		if done, err := b.agent.Exited(); done {
			return fmt.Errorf("the agent exited (%v) with the archive at %s of %s:\n%s", err, last, end, b.agent.LogTail(15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the archive is at %s, not %s, after %s:\n%s", last, end, archiveTimeout, b.agent.LogTail(15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// snapshotInfo is a snapshot the benchmark took.
type snapshotInfo struct {
	ID     catalog.SnapshotID
	Method string
	Binlog catalog.Position
	// Bytes is the manifest's uncompressed size, Stored what the archive
	// holds.
	Bytes, Stored int64
	Took          time.Duration
}

func (s snapshotInfo) String() string {
	return fmt.Sprintf("%s snapshot %s at %s: %s, stored %s, took %.1f s", s.Method, s.ID, s.Binlog,
		mb(float64(s.Bytes)), mb(float64(s.Stored)), s.Took.Seconds())
}

// takeSnapshot runs `mysql-pitr snapshot` into the archive and returns the
// snapshot it added.
func (b *bench) takeSnapshot(ctx context.Context, method string) (snapshotInfo, error) {
	info := snapshotInfo{Method: method}
	argv := []string{b.mp, "snapshot",
		"--dsn", b.src.DSNFor(testbed.PitrUser, ""),
		"--storage", "file://" + b.archive,
		"--method", method,
		"--threads", strconv.Itoa(b.cfg.threads),
		"--log-format", "json",
	}
	begin := time.Now()
	c, err := benchkit.StartChild("snapshot", argv, b.pitrEnv(), filepath.Join(b.cfg.workDir, "snapshot-"+method+".log"))
	if err != nil {
		return info, err
	}
	<-c.Done()
	info.Took = time.Since(begin)
	if c.Err() != nil {
		return info, fmt.Errorf("mysql-pitr snapshot --method %s: %w:\n%s", method, c.Err(), c.LogTail(15))
	}
	st, err := file.New(b.archive)
	if err != nil {
		return info, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return info, err
	}
	var m *catalog.Manifest
	for _, s := range snaps.Complete {
		if s.Method == method && (m == nil || s.ID > m.ID) {
			m = s
		}
	}
	if m == nil {
		return info, fmt.Errorf("the archive holds no complete %s snapshot after mysql-pitr snapshot", method)
	}
	info.ID, info.Binlog, info.Bytes, info.Stored = m.ID, m.Binlog, m.Bytes, m.StoredBytes
	return info, nil
}

// generated is the binlog the load wrote after the snapshot, as the
// archive holds it: what every restore replays.
type generated struct {
	// Bytes are the binlog bytes after the snapshot's position, Stored the
	// archive's compressed size of them, in Segments segments of Files
	// binlog files.
	Bytes, Stored   int64
	Segments, Files int
	// Duration is how long sysbench ran; Transactions how many it
	// committed (from the source's GTID sequence numbers).
	Duration     time.Duration
	Transactions uint64
	// CatchUp is how long the agent took to archive the rest once the
	// load stopped.
	CatchUp time.Duration
}

// TPS is the load's rate.
func (g generated) TPS() float64 {
	if g.Duration <= 0 {
		return 0
	}
	return float64(g.Transactions) / g.Duration.Seconds()
}

func (g generated) String() string {
	return fmt.Sprintf("archived %s of binlog after the snapshot (%s, %s, stored %s): sysbench ran %.0f s, %d transactions at %.0f tps; the agent caught up %.1f s after the load stopped",
		mb(float64(g.Bytes)), plural(g.Files, "file"), plural(g.Segments, "segment"), mb(float64(g.Stored)), g.Duration.Seconds(), g.Transactions, g.TPS(), g.CatchUp.Seconds())
}

// generate runs sysbench until the archive holds the wanted binlog bytes
// after from (the logical snapshot's position), then waits for the agent to
// archive everything. The source's binlog size is the cheap measure while
// the load runs; the archive's own count decides, and a short archive
// (file headers are not archived bytes) gets more load.
func (b *bench) generate(ctx context.Context, sb sysbench, from catalog.Position) (generated, error) {
	var g generated
	goal := b.cfg.binlog
	for attempt := 1; ; attempt++ {
		seq0, err := b.src.gtidSeq(ctx)
		if err != nil {
			return g, err
		}
		begin := time.Now()
		c, err := sb.start(filepath.Join(b.cfg.workDir, fmt.Sprintf("sysbench-run-%d.log", attempt)))
		if err != nil {
			return g, err
		}
		lastReport := time.Now()
		for {
			logs, err := benchkit.BinaryLogs(ctx, b.src.DB)
			if err != nil {
				c.Stop(time.Second)
				return g, err
			}
			n := bytesAfter(logs, from)
			if n >= goal {
				break
			}
			if done, err := c.Exited(); done {
				return g, fmt.Errorf("sysbench run ended early (%v):\n%s", err, c.LogTail(20))
			}
			if time.Since(lastReport) >= 10*time.Second {
				benchkit.Logf("  binlog after the snapshot: %s of %s", mb(float64(n)), mb(float64(goal)))
				lastReport = time.Now()
			}
			select {
			case <-ctx.Done():
				c.Stop(time.Second)
				return g, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		c.Stop(time.Second)
		g.Duration += time.Since(begin)
		if _, err := b.src.WaitIdle(ctx, time.Second); err != nil {
			return g, err
		}
		seq1, err := b.src.gtidSeq(ctx)
		if err != nil {
			return g, err
		}
		g.Transactions += seq1 - seq0
		catchUp := time.Now()
		if err := b.waitArchived(ctx); err != nil {
			return g, err
		}
		g.CatchUp = time.Since(catchUp)
		p, err := planLatest(ctx, b.archive)
		if err != nil {
			return g, err
		}
		g.Bytes, g.Stored, g.Segments, g.Files = replayed(p)
		if g.Bytes >= b.cfg.binlog {
			return g, nil
		}
		goal += b.cfg.binlog - g.Bytes
	}
}

// gtidSeq is the sum of the sequence numbers in @@gtid_binlog_pos: it
// grows by one per transaction a server with one domain writes.
func (s *server) gtidSeq(ctx context.Context) (uint64, error) {
	var pos string
	if err := s.DB.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&pos); err != nil {
		return 0, fmt.Errorf("read gtid_binlog_pos: %w", err)
	}
	return parseGTIDSeq(pos)
}

// parseGTIDSeq sums the sequence numbers of a MariaDB GTID list such as
// "0-1-1234,1-1-7".
func parseGTIDSeq(list string) (uint64, error) {
	var sum uint64
	for g := range strings.SplitSeq(list, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		i := strings.LastIndexByte(g, '-')
		seq, err := strconv.ParseUint(g[i+1:], 10, 64)
		if i < 0 || err != nil || strings.Count(g, "-") != 2 {
			return 0, fmt.Errorf("bad GTID %q in %q", g, list)
		}
		sum += seq
	}
	return sum, nil
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

// replayed sums what a plan replays: binlog bytes after the snapshot's
// position, their stored size, segments and binlog files.
func replayed(p *restore.Plan) (bytes, stored int64, segments, files int) {
	fromNum, _ := catalog.FileNumber(p.From.File)
	lastFile := ""
	for _, s := range p.Segments {
		start := s.Start
		if s.FileNum == fromNum {
			start = max(start, p.From.Pos)
		}
		if s.End > start {
			bytes += int64(s.End - start)
		}
		stored += s.StoredSize
		segments++
		if s.File != lastFile {
			files++
			lastFile = s.File
		}
	}
	return bytes, stored, segments, files
}

// archiveWithout makes a copy of the archive, by hard links (the file
// store never rewrites an object in place), without the snapshot id, so
// that the planner picks the other one.
func (b *bench) archiveWithout(ctx context.Context, id catalog.SnapshotID) (string, error) {
	dst := b.archive + "-without-" + string(id)
	err := filepath.WalkDir(b.archive, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(b.archive, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return os.Link(path, target)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("copy the archive: %w", err)
	}
	st, err := file.New(dst)
	if err != nil {
		return "", err
	}
	objs, err := st.List(ctx, catalog.SnapshotPrefixOf(id))
	if err != nil {
		return "", err
	}
	if len(objs) == 0 {
		return "", fmt.Errorf("the archive copy has no object of snapshot %s", id)
	}
	var errs []error
	for _, o := range objs {
		errs = append(errs, st.Delete(ctx, o.Key))
	}
	return dst, errors.Join(errs...)
}
