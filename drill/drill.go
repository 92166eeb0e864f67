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
	arch, err := catalog.Load(ctx, opts.Store, catalog.LoadOptions{})
	if err != nil {
		return fmt.Errorf("read the archive: %w", err)
	}
	snaps, err := catalog.LoadSnapshots(ctx, opts.Store)
	if err != nil {
		return fmt.Errorf("read the snapshots: %w", err)
	}
	p, err := restore.Make(arch, snaps.Complete, opts.Target, time.Now())
	if err != nil {
		return err
	}
	p.NoteSkipped(snaps)
	for _, is := range p.Skipped {
		log.Warn("restore drill skips a snapshot it cannot use", "manifest", is.Key, "why", is.Detail)
	}
	rec.Snapshot, rec.Method, rec.FetchedBytes = p.Snapshot.ID, p.Snapshot.Method, p.FetchBytes
	rec.LastGTID = lastArchivedGTID(p)
	log.Info("restore drill planned", "snapshot", string(p.Snapshot.ID), "method", p.Snapshot.Method,
		"timeline", p.Timeline, "segments", len(p.Segments), "fetch_bytes", p.FetchBytes, "last_gtid", rec.LastGTID)

	if opts.Scratch != "" {
		if err := os.MkdirAll(opts.Scratch, 0o750); err != nil {
			return fmt.Errorf("scratch directory: %w", err)
		}
	}
	dir, err := os.MkdirTemp(opts.Scratch, "drill-")
	if err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	work := filepath.Join(dir, "w")
	if sock := filepath.Join(work, "run", "mysqld.sock"); len(sock) > maxSocketPath {
		os.Remove(dir)
		return fmt.Errorf("scratch directory %s is too deep: the temporary server's socket %s would pass the %d-byte limit; use a shorter path",
			opts.Scratch, sock, maxSocketPath)
	}
	if opts.KeepScratch {
		log.Info("the restored datadir is kept", "datadir", filepath.Join(dir, "data"))
	} else {
		defer func() {
			if err := os.RemoveAll(dir); err != nil {
				log.Warn("remove the drill's scratch directory", "dir", dir, "err", err)
			}
		}()
	}
	var checking time.Duration // spent in checks, not restoring
	var stop *restore.Stop
	res, err := restore.Apply(ctx, p, restore.Options{
		Store: opts.Store, Datadir: filepath.Join(dir, "data"), WorkDir: work,
		Replay: restore.ReplayServer, Threads: opts.Threads, Logger: log, Programs: opts.Programs,
		AfterSnapshot: func(ctx context.Context, srv *mysql.Config) error {
			t := time.Now()
			defer func() { checking += time.Since(t) }()
			n, err := checkTables(ctx, srv, p.Snapshot)
			rec.TablesChecked = n
			return err
		},
		AfterReplay: func(ctx context.Context, srv *mysql.Config, s *restore.Stop) error {
			t := time.Now()
			defer func() { checking += time.Since(t) }()
			stop = s
			state, err := checkGTID(ctx, srv, p.Snapshot, rec.LastGTID)
			rec.GTIDState = state
			return err
		},
	})
	if stop != nil {
		rec.Transactions = stop.Transactions
		pos := stop.Position
		rec.Stop = &pos
		rec.RestoredBytes = p.Snapshot.Bytes
		for _, f := range stop.Files {
			rec.RestoredBytes += int64(f.To - f.From)
		}
	}
	rec.RestoreDuration = time.Since(begin) - checking
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
