package restore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Replay modes.
const (
	ReplayServer      = "server"
	ReplayMysqlbinlog = "mysqlbinlog"
)

// Options configure Apply.
type Options struct {
	Store storage.Storage
	// Datadir is where the restored server's files go; it must be empty
	// unless Force.
	Datadir string
	// Force moves an existing datadir's contents aside (to a sibling
	// directory) instead of refusing; with DiscardExisting they are deleted.
	Force, DiscardExisting bool
	// Replay is ReplayServer (the default) or ReplayMysqlbinlog.
	Replay string
	// Threads loads a logical snapshot in parallel and, with ReplayServer,
	// is the number of parallel apply threads (0: the number of CPUs; for
	// replay at least 4).
	Threads int
	// Target, when set, restores into this running, empty server instead of
	// a datadir (logical snapshots only); Datadir is then unused.
	Target *mysql.Config
	// TargetTLS are the settings Target.TLS was made with
	// (mysqltls.Settings.Apply), for the command-line client of the
	// mysqlbinlog replay.
	TargetTLS mysqltls.Settings
	// WorkDir holds fetched binlogs and the temporary server's socket;
	// empty means a new directory under os.TempDir().
	WorkDir string
	Logger  *slog.Logger
	// Progress, when set, is called as each phase advances, from one
	// goroutine at a time.
	Progress func(Progress)
	// AfterSnapshot, when set, is called with root access to the restoring
	// server once the snapshot is restored and before any binlog is
	// replayed: the server holds exactly the snapshot. An error stops the
	// restore.
	AfterSnapshot func(ctx context.Context, server *mysql.Config) error
	// AfterReplay, when set, is called once the binlog is replayed to the
	// stop, before the restore sets the GTID position and shuts the server
	// down. An error stops the restore.
	AfterReplay func(ctx context.Context, server *mysql.Config, stop *Stop) error
	// BufferPool is the temporary server's InnoDB buffer pool in bytes;
	// 0 means DefaultBufferPool, negative the server's own default.
	BufferPool int64
	// LeftoverWait bounds how long the restore waits for the programs of a
	// killed restore into the same datadir to let go of the staging
	// directory it left; 0 means DefaultLeftoverWait.
	LeftoverWait time.Duration
	// Programs finds the server programs of the snapshot's family: the
	// temporary server, and the binlog reader and client of the
	// mysqlbinlog replay.
	Programs programs.Finder
}

// DefaultBufferPool is the temporary server's buffer pool unless
// Options.BufferPool says otherwise: four times the server's default, which
// speeds up loading and replaying while fitting a modest container.
const DefaultBufferPool = 512 << 20

// Result is what a restore did.
type Result struct {
	Marker   Marker
	Duration time.Duration
	// ReplayDuration is the part of Duration spent replaying the binlog.
	ReplayDuration time.Duration
	// MovedAside is where the datadir's previous contents went, if anywhere.
	MovedAside string
}

// run is one restore under way: the plan and the options, with their
// defaults filled in, and what every step shares.
type run struct {
	plan *Plan
	opts Options
	// work holds the fetched binlog and the temporary server's socket.
	work string
	// ownWork says work was made for this restore and goes with it.
	ownWork bool
	// flavor is the source's family, and so the restored server's.
	flavor   string
	log      *slog.Logger
	progress reporter
}

// newRun fills in the options' defaults, refuses an unknown replay mode,
// and makes the work directory unless one is given.
func newRun(p *Plan, opts Options) (*run, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Replay == "" {
		opts.Replay = ReplayServer
	}
	if opts.Replay != ReplayServer && opts.Replay != ReplayMysqlbinlog {
		return nil, fmt.Errorf("unknown replay mode %q (use %s or %s)", opts.Replay, ReplayServer, ReplayMysqlbinlog)
	}
	r := &run{plan: p, opts: opts, work: opts.WorkDir, flavor: snapshotFlavor(p.Snapshot), log: opts.Logger, progress: opts.Progress}
	if r.work == "" {
		var err error
		if r.work, err = os.MkdirTemp("", "pitr-"); err != nil {
			return nil, err
		}
		r.ownWork = true
	}
	return r, nil
}

// close removes the work directory if the restore made it.
func (r *run) close() {
	if r.ownWork {
		os.RemoveAll(r.work)
	}
}

// tools are the binlog reader and client of the mysqlbinlog replay.
func (r *run) tools() binlogTools {
	return binlogTools{programs: r.opts.Programs, flavor: r.flavor, release: r.plan.Snapshot.ServerVersion}
}

// afterSnapshot calls the AfterSnapshot hook, if any, with the server
// holding exactly the snapshot.
func (r *run) afterSnapshot(ctx context.Context, server *mysql.Config) error {
	if r.opts.AfterSnapshot == nil {
		return nil
	}
	return r.opts.AfterSnapshot(ctx, server)
}

// afterReplay calls the AfterReplay hook, if any, with the server replayed
// to the stop.
func (r *run) afterReplay(ctx context.Context, server *mysql.Config, stop *Stop) error {
	if r.opts.AfterReplay == nil {
		return nil
	}
	return r.opts.AfterReplay(ctx, server, stop)
}
