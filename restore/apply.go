package restore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sys/unix"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Replay modes.
const (
	ReplayServer      = "server"
	ReplayMysqlbinlog = "mysqlbinlog"
)

// MarkerFile is written into a restored datadir: which restore produced it.
// The agent reads it to start a new timeline for the restored server.
const MarkerFile = "mysql-pitr-restore.json"

// Marker is the content of MarkerFile.
type Marker struct {
	ID       string             `json:"id"`
	Target   string             `json:"target"`
	Snapshot catalog.SnapshotID `json:"snapshot"`
	Timeline catalog.TimelineID `json:"timeline"`
	// Stop is the first binlog byte of the source not replayed.
	Stop         catalog.Position `json:"stop"`
	Transactions int              `json:"transactions_replayed"`
	LastCommit   time.Time        `json:"last_commit,omitzero"`
	GTIDState    string           `json:"gtid_state,omitempty"`
	Finished     time.Time        `json:"finished"`
}

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

// Apply carries out a plan into a datadir: restore the snapshot, replay the
// binlog to the stop on a temporary server listening only on a private
// socket, shut it down cleanly, and record the restore in the datadir.
// With ReplayServer the temporary server replicates the binlog from a
// binlog.Server on a loopback port that lives as long as the replay.
func Apply(ctx context.Context, p *Plan, opts Options) (*Result, error) {
	begin := time.Now()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Replay == "" {
		opts.Replay = ReplayServer
	}
	if opts.Replay != ReplayServer && opts.Replay != ReplayMysqlbinlog {
		return nil, fmt.Errorf("unknown replay mode %q (use %s or %s)", opts.Replay, ReplayServer, ReplayMysqlbinlog)
	}
	log := opts.Logger
	work := opts.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "pitr-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	if opts.Target != nil {
		return applyToServer(ctx, p, opts, work, begin)
	}
	res := &Result{}
	datadir, err := filepath.Abs(opts.Datadir)
	if err != nil {
		return nil, fmt.Errorf("datadir %s: %w", opts.Datadir, err)
	}
	flavor := snapshotFlavor(p.Snapshot)
	if flavor == mysqld.MySQL && strings.HasPrefix(filepath.Base(datadir), ".") {
		return nil, fmt.Errorf("%w: restore into another directory than %s; nothing was changed", mysqld.ErrDotDatadir, datadir)
	}
	wait := opts.LeftoverWait
	if wait <= 0 {
		wait = DefaultLeftoverWait
	}
	// What a killed restore left goes first: it would make the datadir look
	// used (when the staging directory is inside it) and hold space.
	if err := removeLeftovers(ctx, datadir, wait, log); err != nil {
		return nil, err
	}
	// Everything that could refuse the restore at its end is checked
	// before any work: the datadir's emptiness, and with --force whether
	// its contents can be moved aside or deleted.
	used, err := datadirEntries(datadir, opts.Force, "")
	if err != nil {
		return nil, err
	}
	if err := checkEmptying(datadir, used, opts.DiscardExisting); err != nil {
		return nil, err
	}
	// The programs of the snapshot's release, before anything is fetched.
	pool := opts.BufferPool
	if pool == 0 {
		pool = DefaultBufferPool
	}
	server := mysqld.Options{Flavor: flavor, RunDir: filepath.Join(work, "run"), BufferPool: max(pool, 0),
		ServerID: replayServerID(p.Snapshot.ServerID), SkipGrants: p.Snapshot.Method == catalog.MethodPhysical,
		Release: p.Snapshot.ServerVersion, Programs: opts.Programs, Logger: log,
		LowerCaseTableNames: p.Snapshot.LowerCaseTableNames, PageSize: p.Snapshot.InnoDBPageSize}
	if err := mysqld.Check(ctx, server, p.Snapshot.Method == catalog.MethodLogical); err != nil {
		return nil, err
	}
	pl := pipeline{programs: opts.Programs, flavor: flavor, release: p.Snapshot.ServerVersion}
	if opts.Replay == ReplayMysqlbinlog {
		if _, _, err := pl.tools(ctx); err != nil {
			return nil, err
		}
	}
	// Fetch and verify the binlog first: a damaged archive, or one this
	// restore holds no key for, stops the restore before the datadir is
	// created or its contents moved aside.
	files, err := fetch(ctx, opts.Store, p, filepath.Join(work, "binlog"), opts.Progress)
	if err != nil {
		return nil, err
	}
	stop, err := findStop(p, files)
	if err != nil {
		return nil, err
	}
	// The new datadir is built out of place and moved in only when the
	// restore has succeeded: until then, and after any failure, the
	// target directory holds exactly what it held before.
	stage, err := newStaging(datadir)
	if err != nil {
		return nil, err
	}
	moved := false
	defer func() {
		if !moved {
			if err := stage.remove(); err != nil {
				log.Warn("the next restore into this datadir removes what this one left", "err", err)
			}
		}
	}()
	staging, tmpdir := stage.datadir(), stage.tmpdir()

	log.Info("replay range", "from", p.From.String(), "stop", stop.Position.String(), "transactions", stop.Transactions)

	// The temporary server is of the snapshot's release, from initialising
	// its datadir (a logical snapshot) to its last start, with the same
	// InnoDB settings throughout.
	server.Datadir, server.TmpDir = staging, tmpdir
	switch p.Snapshot.Method {
	case catalog.MethodPhysical:
		log.Info("restoring physical snapshot", "snapshot", string(p.Snapshot.ID))
		// The backup tool and its extractor from the programs' directory
		// when one is named; otherwise the snapshot package finds them (on
		// PATH and in the sbin directories) and says how to install them.
		// A MySQL clone's snapshot needs neither.
		var tool, extractor string
		if opts.Programs.Dir != "" && physical.NeedsTool(p.Snapshot) {
			if tool, err = opts.Programs.Look(programs.Names(flavor, programs.Backup)...); err != nil {
				return nil, err
			}
			if extractor, err = opts.Programs.Look(programs.Names(flavor, programs.Extractor)...); err != nil {
				return nil, err
			}
		}
		if _, err := physical.Restore(ctx, opts.Store, p.Snapshot, staging, physical.RestoreOptions{Logger: log,
			ToolPath: tool, ExtractorPath: extractor,
			Progress: func(done int64) { reporter(opts.Progress).report(PhaseSnapshot, done, p.Snapshot.Bytes) }}); err != nil {
			return nil, err
		}
	case catalog.MethodLogical:
		log.Info("initializing datadir for logical snapshot", "snapshot", string(p.Snapshot.ID))
		if err := mysqld.Init(ctx, server); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("snapshot %s has unknown method %q", p.Snapshot.ID, p.Snapshot.Method)
	}
	srv, err := mysqld.Start(ctx, server)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
			srv.Stop(sctx)
			cancel()
		}
	}()
	if p.Snapshot.Method == catalog.MethodLogical {
		log.Info("loading logical snapshot")
		if err := snapshot.LoadLogical(ctx, opts.Store, p.Snapshot, srv.Config(), snapshot.LoadOptions{Threads: opts.Threads, Logger: log, Progress: loadProgress(log, opts.Progress)}); err != nil {
			return nil, err
		}
	}
	if opts.AfterSnapshot != nil {
		if err := opts.AfterSnapshot(ctx, srv.Config()); err != nil {
			return nil, err
		}
	}
	replayBegin := time.Now()
	switch opts.Replay {
	case ReplayMysqlbinlog:
		err = replayMysqlbinlog(ctx, srv.Config(), clientTLS{mysqltls.Settings{Mode: mysqltls.Off}, flavor}, pl, stop, work, log, opts.Progress)
	default:
		err = replayServer(ctx, srv.DB(), flavor, stop, opts.Threads, log, opts.Progress)
	}
	if err != nil {
		return nil, err
	}
	res.ReplayDuration = time.Since(replayBegin)
	if opts.AfterReplay != nil {
		if err := opts.AfterReplay(ctx, srv.Config(), stop); err != nil {
			return nil, err
		}
	}
	gtid, err := setGTIDState(ctx, srv.DB(), flavor, p, stop)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	err = srv.Stop(sctx)
	cancel()
	stopped = true
	if err != nil {
		return nil, err
	}
	var idb [6]byte
	_, _ = rand.Read(idb[:])
	res.Marker = Marker{ID: hex.EncodeToString(idb[:]), Target: p.Target.String(), Snapshot: p.Snapshot.ID, Timeline: p.Timeline,
		Stop: stop.Position, Transactions: stop.Transactions, LastCommit: stop.LastCommit, GTIDState: gtid, Finished: time.Now().UTC()}
	b, _ := json.MarshalIndent(res.Marker, "", "  ")
	if err := os.WriteFile(filepath.Join(staging, MarkerFile), append(b, '\n'), 0o640); err != nil {
		return nil, fmt.Errorf("write restore marker: %w", err)
	}
	if res.MovedAside, err = prepareDatadir(datadir, opts.Force, opts.DiscardExisting, stage.root); err != nil {
		return nil, err
	}
	if err := snapshot.MoveInto(staging, datadir); err != nil {
		return nil, err
	}
	moved = true
	if err := stage.remove(); err != nil {
		log.Warn("the restore is done; the next restore into this datadir removes what is left of its staging directory", "err", err)
	}
	res.Duration = time.Since(begin)
	return res, nil
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

// datadirEntries returns what dir holds (nil when it does not exist),
// refusing a non-empty dir without force. It changes nothing.
func datadirEntries(dir string, force bool, staging string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read datadir: %w", err)
	}
	var used []os.DirEntry
	for _, e := range ents {
		if e.Name() != "lost+found" && filepath.Join(dir, e.Name()) != filepath.Clean(staging) {
			used = append(used, e)
		}
	}
	if len(used) > 0 && !force {
		return nil, fmt.Errorf("datadir %s is not empty (%d entries): pass --force to move its contents aside, or --force --discard-existing to delete them", dir, len(used))
	}
	return used, nil
}

// checkEmptying checks, before any work, that the entries used of dir can
// be moved aside (renamed into a sibling of dir) or, with discard, deleted
// when the restore ends: neither works across filesystems, so dir must not
// be a volume's root for a move aside, and no entry may be a mount point.
func checkEmptying(dir string, used []os.DirEntry, discard bool) error {
	if len(used) == 0 {
		return nil
	}
	var d syscall.Stat_t
	if err := syscall.Stat(dir, &d); err != nil {
		return fmt.Errorf("datadir %s: %w", dir, err)
	}
	aside := filepath.Dir(dir)
	if !discard {
		var p syscall.Stat_t
		if err := syscall.Stat(aside, &p); err != nil {
			return fmt.Errorf("datadir %s: %w", aside, err)
		}
		if p.Dev != d.Dev {
			return fmt.Errorf("--force would move the contents of %s to %s.before-restore-TIME, on another filesystem (%s is a volume's root), "+
				"which cannot be done by renaming: add --discard-existing to delete them instead, or restore into a directory below the volume's root; nothing was changed",
				dir, filepath.Clean(dir), dir)
		}
		if err := unix.Access(aside, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("--force would move the contents of %s into a new directory in %s: %w; nothing was changed", dir, aside, err)
		}
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("--force would empty %s: %w; nothing was changed", dir, err)
	}
	for _, e := range used {
		var st syscall.Stat_t
		path := filepath.Join(dir, e.Name())
		if err := syscall.Lstat(path, &st); err != nil {
			return fmt.Errorf("datadir %s: %w", dir, err)
		}
		if st.Dev != d.Dev {
			return fmt.Errorf("--force cannot move or delete %s: it is another filesystem's mount point; unmount it first; nothing was changed", path)
		}
	}
	return nil
}

// prepareDatadir checks that dir is empty, or empties it as asked. It
// returns where old contents were moved. The staging directory, which may
// lie inside dir, is left where it is.
func prepareDatadir(dir string, force, discard bool, staging string) (string, error) {
	used, err := datadirEntries(dir, force, staging)
	if err != nil {
		return "", err
	}
	if len(used) == 0 {
		return "", nil
	}
	if discard {
		for _, e := range used {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return "", fmt.Errorf("discard datadir contents: %w", err)
			}
		}
		return "", nil
	}
	aside := fmt.Sprintf("%s.before-restore-%s", filepath.Clean(dir), time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Mkdir(aside, 0o750); err != nil {
		return "", fmt.Errorf("move datadir aside: %w", err)
	}
	for _, e := range used {
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(aside, e.Name())); err != nil {
			if errors.Is(err, syscall.EXDEV) {
				return "", fmt.Errorf("move datadir aside: %s is on another filesystem than %s; use --discard-existing or a datadir below the volume's root", aside, dir)
			}
			return "", fmt.Errorf("move datadir aside: %w", err)
		}
	}
	return aside, nil
}

// fetch writes the binlog the plan needs as local files, verified.
func fetch(ctx context.Context, st storage.Storage, p *Plan, dir string, progress reporter) ([]binlog.FetchResult, error) {
	segs := append(append([]*catalog.Segment{}, p.Head...), p.Segments...)
	if len(segs) == 0 {
		return nil, nil
	}
	var total int64
	for _, s := range segs {
		total += int64(s.End - s.Start)
	}
	tl := &catalog.TimelineState{Timeline: catalog.Timeline{ID: p.Timeline, Start: catalog.Position{File: segs[0].File, Pos: segs[0].Start}}, Segments: segs}
	return binlog.FetchProgress(ctx, st, tl, dir, func(done int64) { progress.report(PhaseDownload, done, total) })
}
