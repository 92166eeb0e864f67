package restore

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
)

// serverOptions describe the temporary server a datadir restore runs: of
// the snapshot's release, from initialising its datadir (a logical
// snapshot) to its last start, with the same InnoDB settings throughout,
// listening only on a socket in the work directory.
func (r *run) serverOptions() mysqld.Options {
	pool := r.opts.BufferPool
	if pool == 0 {
		pool = DefaultBufferPool
	}
	m := r.plan.Snapshot
	return mysqld.Options{Flavor: r.flavor, RunDir: filepath.Join(r.work, "run"), BufferPool: max(pool, 0),
		ServerID: replayServerID(m.ServerID), SkipGrants: m.Method == catalog.MethodPhysical,
		Release: m.ServerVersion, Programs: r.opts.Programs, Logger: r.log,
		LowerCaseTableNames: m.LowerCaseTableNames, PageSize: m.InnoDBPageSize}
}

// tempServer is the temporary server of a datadir restore.
type tempServer struct {
	*mysqld.Server
	stopped bool
}

// materialise is the snapshot step of a datadir restore: it builds the
// snapshot's datadir in stage (a physical snapshot extracted, a logical
// one's datadir initialised) and starts the temporary server on it, which
// then holds exactly the snapshot (a logical one loaded).
func (r *run) materialise(ctx context.Context, server mysqld.Options, stage *staging) (*tempServer, error) {
	server.Datadir, server.TmpDir = stage.datadir(), stage.tmpdir()
	switch r.plan.Snapshot.Method {
	case catalog.MethodPhysical:
		if err := r.extractPhysical(ctx, server.Datadir); err != nil {
			return nil, err
		}
	case catalog.MethodLogical:
		r.log.Info("initializing datadir for logical snapshot", "snapshot", string(r.plan.Snapshot.ID))
		if err := mysqld.Init(ctx, server); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("snapshot %s has unknown method %q", r.plan.Snapshot.ID, r.plan.Snapshot.Method)
	}
	srv, err := mysqld.Start(ctx, server)
	if err != nil {
		return nil, err
	}
	ts := &tempServer{Server: srv}
	if r.plan.Snapshot.Method == catalog.MethodLogical {
		r.log.Info("loading logical snapshot")
		if err := r.loadLogical(ctx, srv.Config()); err != nil {
			ts.close(ctx)
			return nil, err
		}
	}
	return ts, nil
}

// extractPhysical restores a physical snapshot into datadir. The backup
// tool and its extractor come from the programs' directory when one is
// named; otherwise the snapshot package finds them (on PATH and in the
// sbin directories) and says how to install them. A MySQL clone's snapshot
// needs neither.
func (r *run) extractPhysical(ctx context.Context, datadir string) error {
	m := r.plan.Snapshot
	r.log.Info("restoring physical snapshot", "snapshot", string(m.ID))
	var tool, extractor string
	if r.opts.Programs.Dir != "" && physical.NeedsTool(m) {
		var err error
		if tool, err = r.opts.Programs.Look(programs.Names(r.flavor, programs.Backup)...); err != nil {
			return err
		}
		if extractor, err = r.opts.Programs.Look(programs.Names(r.flavor, programs.Extractor)...); err != nil {
			return err
		}
	}
	_, err := physical.Restore(ctx, r.opts.Store, m, datadir, physical.RestoreOptions{Logger: r.log,
		ToolPath: tool, ExtractorPath: extractor,
		Progress: func(done int64) { r.progress.report(PhaseSnapshot, done, m.Bytes) }})
	return err
}

// loadLogical loads the logical snapshot into the server at cfg.
func (r *run) loadLogical(ctx context.Context, cfg *mysql.Config) error {
	return snapshot.LoadLogical(ctx, r.opts.Store, r.plan.Snapshot, cfg,
		snapshot.LoadOptions{Threads: r.opts.Threads, Logger: r.log, Progress: loadProgress(r.log, r.progress)})
}

// shutDown stops the temporary server cleanly, its last use.
func (s *tempServer) shutDown(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	s.stopped = true
	return s.Stop(sctx)
}

// close stops the temporary server after a failure; once shutDown has run
// it does nothing.
func (s *tempServer) close(ctx context.Context) {
	if s.stopped {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	s.Stop(sctx)
}

// loadProgress reports a logical load's progress, and logs it every 10 seconds.
func loadProgress(log *slog.Logger, progress reporter) func(snapshot.Progress) {
	begin, last := time.Now(), time.Now()
	return func(p snapshot.Progress) {
		progress.report(PhaseSnapshot, p.Bytes, p.BytesTotal)
		if time.Since(last) < 10*time.Second && p.ChunksDone != p.ChunksTotal {
			return
		}
		last = time.Now()
		log.Info("loading", "tables_done", p.TablesDone, "tables", p.TablesTotal, "chunks_done", p.ChunksDone, "chunks", p.ChunksTotal,
			"rows", p.Rows, "mib", p.Bytes>>20, "elapsed", time.Since(begin).Round(time.Second).String())
	}
}

// snapshotFlavor is the mysqld flavor of the server a snapshot was taken of.
func snapshotFlavor(m *catalog.Manifest) string {
	if m.Flavor == string(binlog.MySQL) {
		return mysqld.MySQL
	}
	return mysqld.MariaDB
}

// replayServerID picks a server_id for the temporary server that differs
// from the source's, whose events it would otherwise skip as its own.
func replayServerID(source uint32) uint32 {
	if source == 4294967000 {
		return 4294967001
	}
	return 4294967000
}
