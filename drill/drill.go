// Package drill runs restore drills: it restores the newest restorable
// snapshot and the archived binlog after it into scratch space on a
// temporary server, checks the result against what the archive says it
// holds, and records the outcome in the archive, so that "can we actually
// restore?" has a dated answer.
//
// A drill checks, in order:
//
//  1. that a restore can be planned (a snapshot, and an unbroken chain of
//     segments from it to the target);
//  2. at the snapshot's position, before any binlog is replayed: every
//     table of a logical snapshot's manifest exists with the row count and
//     row digest the manifest records (physical snapshots record estimates
//     only and are not checked here);
//  3. after replay: the server's GTID state holds the GTID of the last
//     archived transaction up to the target, as the index records it.
//
// Every object read is also verified against its checksum by the restore.
package drill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ErrFailed is wrapped by the error of a drill that ran and failed: the
// archive could not be restored, or the restore did not hold what the
// archive records. The error's text is the record's Reason.
var ErrFailed = errors.New("restore drill failed")

// maxSocketPath is the longest Unix socket path a server accepts.
const maxSocketPath = 107

// Options configure Run.
type Options struct {
	Store storage.Storage
	// Target is what to restore to; the zero value is restore.Latest.
	Target restore.Target
	// Scratch is the directory under which the drill makes its own
	// directory for the datadir and the fetched binlog; empty means
	// os.TempDir(). Keep it short: the temporary server's socket lives
	// there and a socket path is limited to 107 bytes.
	Scratch string
	// KeepScratch leaves the restored datadir in place for inspection.
	KeepScratch bool
	// Threads loads the snapshot and applies the binlog in parallel (0: the number of CPUs).
	Threads int
	// Host is recorded as where the drill ran.
	Host string
	// Record writes the drill's record to storage (under drills/), where
	// list and the agent's metrics show it. Without it the drill only
	// reads the archive.
	Record bool
	// Programs finds the server programs the restore runs.
	Programs programs.Finder
	Logger   *slog.Logger
}

// Run performs one drill and, with Record, writes its record to storage.
// It returns the record, and an error wrapping ErrFailed when the drill
// failed (the record is written all the same), or the error of writing the
// record. A drill cancelled through ctx is not recorded.
func Run(ctx context.Context, opts Options) (*catalog.Drill, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "drill")
	rec := &catalog.Drill{Started: time.Now().UTC(), Target: opts.Target.String(), Host: opts.Host}
	log.Info("restore drill starting", "target", rec.Target)
	failure := run(ctx, opts, rec, log)
	rec.Finished = time.Now().UTC()
	if ctx.Err() != nil {
		return rec, ctx.Err()
	}
	if failure != nil {
		rec.Reason = failure.Error()
		log.Error("restore drill failed", "snapshot", string(rec.Snapshot), "reason", rec.Reason)
	} else {
		rec.Success = true
		log.Info("restore drill passed", "snapshot", string(rec.Snapshot), "tables_checked", rec.TablesChecked,
			"transactions", rec.Transactions, "last_gtid", rec.LastGTID, "restore_duration", rec.RestoreDuration.Round(time.Millisecond).String(),
			"restored_bytes", rec.RestoredBytes)
	}
	if !opts.Record {
		if failure != nil {
			return rec, fmt.Errorf("%w: %w", ErrFailed, failure)
		}
		return rec, nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := catalog.WriteDrill(wctx, opts.Store, rec); err != nil {
		err = fmt.Errorf("record the drill: %w", err)
		if failure != nil {
			return rec, errors.Join(fmt.Errorf("%w: %w", ErrFailed, failure), err)
		}
		return rec, err
	}
	if failure != nil {
		return rec, fmt.Errorf("%w: %w", ErrFailed, failure)
	}
	return rec, nil
}

// run restores and checks, filling rec; it returns why the drill failed.
func run(ctx context.Context, opts Options, rec *catalog.Drill, log *slog.Logger) error {
	begin := time.Now()
	p, err := plan(ctx, opts, rec, log)
	if err != nil {
		return err
	}
	dir, cleanup, err := makeScratch(opts, log)
	if err != nil {
		return err
	}
	defer cleanup()
	c := &checks{snapshot: p.Snapshot, rec: rec}
	res, err := restore.Apply(ctx, p, restore.Options{
		Store: opts.Store, Datadir: dir.datadir(), WorkDir: dir.workdir(),
		Replay: restore.ReplayServer, Threads: opts.Threads, Logger: log, Programs: opts.Programs,
		AfterSnapshot: c.afterSnapshot,
		AfterReplay:   c.afterReplay,
	})
	if c.stop != nil {
		rec.Transactions = c.stop.Transactions
		pos := c.stop.Position
		rec.Stop = &pos
		rec.RestoredBytes = p.Snapshot.Bytes
		for _, f := range c.stop.Files {
			rec.RestoredBytes += int64(f.To - f.From)
		}
	}
	rec.RestoreDuration = time.Since(begin) - c.took
	if err != nil {
		return err
	}
	rec.Transactions = res.Marker.Transactions
	if len(p.Skipped) > 0 {
		// The restore worked, from an older snapshot than it should have.
		is := p.Skipped[len(p.Skipped)-1]
		return fmt.Errorf("restored from snapshot %s, but a newer one cannot be used: %s: %s", p.Snapshot.ID, is.Key, is.Detail)
	}
	return nil
}

// plan reads the archive and plans the drill's restore, recording in rec
// the snapshot it starts from and the last GTID it must reach.
func plan(ctx context.Context, opts Options, rec *catalog.Drill, log *slog.Logger) (*restore.Plan, error) {
	arch, err := catalog.Load(ctx, opts.Store, catalog.LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("read the archive: %w", err)
	}
	snaps, err := catalog.LoadSnapshots(ctx, opts.Store)
	if err != nil {
		return nil, fmt.Errorf("read the snapshots: %w", err)
	}
	p, err := restore.Make(arch, snaps.Complete, opts.Target, time.Now())
	if err != nil {
		return nil, err
	}
	p.NoteSkipped(snaps)
	for _, is := range p.Skipped {
		log.Warn("restore drill skips a snapshot it cannot use", "manifest", is.Key, "why", is.Detail)
	}
	rec.Snapshot, rec.Method, rec.FetchedBytes = p.Snapshot.ID, p.Snapshot.Method, p.FetchBytes
	rec.LastGTID = lastArchivedGTID(p)
	log.Info("restore drill planned", "snapshot", string(p.Snapshot.ID), "method", p.Snapshot.Method,
		"timeline", p.Timeline, "segments", len(p.Segments), "fetch_bytes", p.FetchBytes, "last_gtid", rec.LastGTID)
	return p, nil
}

// scratch is a drill's own scratch directory: it holds the restored datadir
// and the restore's work directory, where the temporary server's socket
// lives.
type scratch string

func (s scratch) datadir() string { return filepath.Join(string(s), "data") }
func (s scratch) workdir() string { return filepath.Join(string(s), "w") }

// makeScratch makes the drill's scratch directory under opts.Scratch, so
// that the temporary server's socket path fits its limit, and returns it
// with the function that removes it (or, with KeepScratch, leaves it).
func makeScratch(opts Options, log *slog.Logger) (scratch, func(), error) {
	if opts.Scratch != "" {
		if err := os.MkdirAll(opts.Scratch, 0o750); err != nil {
			return "", nil, fmt.Errorf("scratch directory: %w", err)
		}
	}
	d, err := os.MkdirTemp(opts.Scratch, "drill-")
	if err != nil {
		return "", nil, fmt.Errorf("scratch directory: %w", err)
	}
	dir := scratch(d)
	if sock := filepath.Join(dir.workdir(), "run", "mysqld.sock"); len(sock) > maxSocketPath {
		os.Remove(d)
		return "", nil, fmt.Errorf("scratch directory %s is too deep: the temporary server's socket %s would pass the %d-byte limit; use a shorter path",
			opts.Scratch, sock, maxSocketPath)
	}
	if opts.KeepScratch {
		log.Info("the restored datadir is kept", "datadir", dir.datadir())
		return dir, func() {}, nil
	}
	return dir, func() {
		if err := os.RemoveAll(d); err != nil {
			log.Warn("remove the drill's scratch directory", "dir", d, "err", err)
		}
	}, nil
}

// checks are the drill's checks, which the restore runs on its temporary
// server. They fill the record, and time themselves so that the restore's
// duration leaves them out.
type checks struct {
	snapshot *catalog.Manifest
	rec      *catalog.Drill
	took     time.Duration
	// stop is where replay stopped, once it has.
	stop *restore.Stop
}

// afterSnapshot checks the tables at the snapshot's position, before any
// binlog is replayed.
func (c *checks) afterSnapshot(ctx context.Context, srv *mysql.Config) error {
	t := time.Now()
	defer func() { c.took += time.Since(t) }()
	n, err := checkTables(ctx, srv, c.snapshot)
	c.rec.TablesChecked = n
	return err
}

// afterReplay checks the server's GTID state once the binlog is replayed.
func (c *checks) afterReplay(ctx context.Context, srv *mysql.Config, s *restore.Stop) error {
	t := time.Now()
	defer func() { c.took += time.Since(t) }()
	c.stop = s
	state, err := checkGTID(ctx, srv, c.snapshot, c.rec.LastGTID)
	c.rec.GTIDState = state
	return err
}
