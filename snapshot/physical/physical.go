package physical

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Defaults for Options fields left at their zero value.
const (
	// DefaultPartSize is the uncompressed size of each stored part
	// of the backup stream.
	DefaultPartSize int64 = 1 << 30
	// DefaultConcurrency is how many goroutines compress the
	// stream, each its own 4 MiB zstd frames. Two keep up with
	// mariadb-backup on local disks at the fastest level without taking
	// the database server's CPUs.
	DefaultConcurrency = 2
	// DefaultLevel is the zstd level: the fastest, as zstd -1.
	DefaultLevel = zstd.SpeedFastest
)

// copyBuffer is the read size from the tool's stdout.
const copyBuffer = 1 << 20

// Options configures Take.
type Options struct {
	// Source is the server to back up. The tool connects with its address,
	// user and password; it must run on the server's host (or share its
	// datadir), since it reads the datadir's files.
	Source *binlog.Source
	// TLS are the settings the Source's Config.TLS was made with
	// (mysqltls.Settings.Apply): the tool gets them as options, Preferred
	// settled by whether the Source's own connection is encrypted.
	TLS mysqltls.Settings
	// Storage receives the snapshot.
	Storage storage.Storage
	// ID names the snapshot; empty means catalog.NewSnapshotID(start time).
	ID catalog.SnapshotID
	// Timeline is the archive timeline being written, recorded in the manifest.
	Timeline catalog.TimelineID
	// Agent names who takes the snapshot, recorded in the manifest.
	Agent string
	// ToolPath is the backup tool (mariadb-backup or xtrabackup); empty
	// means the flavor's tool found on PATH, and on MySQL the clone plugin
	// when xtrabackup is not there (see Tool).
	ToolPath string
	// CloneDir is where a MySQL clone's staging directory is made: on the
	// server's host, writable by the server's OS user, seen at the same
	// path by this process, with room for a copy of the data. Empty means
	// the parent of Datadir.
	CloneDir string
	// Datadir is the server's datadir as this process sees it; empty means
	// the server's @@datadir. Its owner, the server's OS user, is given the
	// clone's staging directory when this process runs as root.
	Datadir string
	// ServerPath is the mysqld that starts a clone once to finish it; it
	// must be the server's release. Empty means mysqld on PATH or in the
	// sbin directories.
	ServerPath string
	// TempDir holds the tool's option file and scratch target directory,
	// which a streaming backup leaves nearly empty; empty means os.TempDir().
	TempDir string
	// PartSize is the uncompressed size of each stored part; 0 means
	// DefaultPartSize.
	PartSize int64
	// Concurrency is the number of compressing goroutines; 0 means
	// DefaultConcurrency.
	Concurrency int
	// Level is the zstd level; 0 means DefaultLevel.
	Level zstd.EncoderLevel
	// Parallel is the tool's --parallel (files copied at once); 0 leaves
	// the tool's default.
	Parallel int
	// ExtraArgs are appended to the tool's command line. They must not
	// carry secrets.
	ExtraArgs []string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	switch {
	case o.Source == nil || o.Source.Config == nil:
		return o, errors.New("physical snapshot options: Source is not set")
	case o.Storage == nil:
		return o, errors.New("physical snapshot options: Storage is not set")
	case o.PartSize < 0 || (o.PartSize > 0 && o.PartSize < 1<<20):
		return o, fmt.Errorf("physical snapshot options: PartSize %d is below 1 MiB", o.PartSize)
	case o.Concurrency < 0:
		return o, fmt.Errorf("physical snapshot options: Concurrency %d is negative", o.Concurrency)
	case o.Parallel < 0:
		return o, fmt.Errorf("physical snapshot options: Parallel %d is negative", o.Parallel)
	}
	if o.ID != "" {
		if _, err := catalog.ParseSnapshotID(string(o.ID)); err != nil {
			return o, fmt.Errorf("physical snapshot options: ID: %w", err)
		}
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Take takes a physical snapshot of the server with mariadb-backup
// (MariaDB) or xtrabackup (MySQL), streaming the tool's xbstream output
// through zstd into storage without staging it on local disk, and returns
// its manifest once written. On MySQL without xtrabackup it uses the
// server's clone plugin instead (see Tool and takeClone), which stages a
// copy of the data in CloneDir. The tool must be built for the server's
// major.minor release; its absence or a mismatch is an error wrapping
// ErrToolMissing or ErrToolVersion.
//
// The manifest's binlog position and GTID set are the tool's, read while
// commits were blocked, so replaying the binlog from there reproduces every
// later transaction. WritesBlocked is how long commits were blocked, from the
// tool's BACKUP STAGE BLOCK_COMMIT (or FLUSH TABLES WITH READ LOCK) until it
// unlocked. Tables lists the user tables as the server reports them right
// after the backup, with information_schema's row estimates (RowsEstimated):
// the exact counts at the snapshot's position are not known without
// restoring it. Failing to read that list only leaves Tables empty.
//
// The manifest is written last. On error or cancellation no manifest is
// written, the tool's process group is killed, and the parts already stored
// remain as a partial snapshot (catalog.Snapshots.Partial) to be collected.
func Take(ctx context.Context, opts Options) (*catalog.Manifest, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "snapshot", "method", catalog.MethodPhysical)
	si, err := serverInfo(ctx, opts.Source)
	if err != nil {
		return nil, err
	}
	if Tool(si.Flavor, opts.ToolPath) == ToolClone {
		return takeClone(ctx, opts, si, log)
	}
	tool, tv, err := snapshotTool(ctx, opts.ToolPath, si)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(opts.TempDir, "mysql-pitr-physical-")
	if err != nil {
		return nil, fmt.Errorf("physical snapshot: scratch directory: %w", err)
	}
	defer os.RemoveAll(work)
	args, err := backupCommand(ctx, opts, si.Flavor, work)
	if err != nil {
		return nil, fmt.Errorf("physical snapshot: %w", err)
	}

	started := time.Now().UTC()
	id := opts.snapshotID(started)
	log = log.With("id", string(id))
	objects, se, err := runBackup(ctx, log, tool, args, work, id, opts)
	finished := time.Now().UTC()
	if err != nil {
		return nil, abandoned(ctx, log, id, objects, err)
	}
	lt := se.locks(finished)
	if !lt.Seen {
		log.Warn("the tool's log has no lock marks; writes-blocked time is unknown and recorded as zero")
	}
	m := &catalog.Manifest{
		ID:            id,
		Method:        catalog.MethodPhysical,
		Flavor:        string(si.Flavor),
		ServerVersion: si.Version,
		ServerID:      si.ServerID,
		ServerUUID:    si.UUID,
		Binlog:        se.pos,
		ConsistentAt:  lt.Unlocked.UTC(),
		GTIDSet:       se.gtid,
		Timeline:      opts.Timeline,
		TimelineUID:   catalog.TimelineUIDOf(ctx, opts.Storage, opts.Timeline),
		Started:       started,
		Finished:      finished,
		WritesBlocked: lt.Commits,
		Tool:          tv.Label,
		Objects:       objects,
		Agent:         opts.Agent,
	}
	if err := storeManifest(ctx, opts, m, log, "commits_blocked", lt.Commits, "ddl_blocked", lt.DDL); err != nil {
		return nil, err
	}
	return m, nil
}

// serverInfo reads what the server is and checks that it can be
// snapshotted.
func serverInfo(ctx context.Context, src *binlog.Source) (binlog.ServerInfo, error) {
	si, err := src.Info(ctx)
	if err != nil {
		return si, fmt.Errorf("physical snapshot: %w", err)
	}
	if _, err := si.Check(); err != nil {
		return si, fmt.Errorf("physical snapshot: %w", err)
	}
	return si, nil
}

// snapshotTool finds the backup tool for the server, toolPath if set, and
// checks that it was built for the server's release.
func snapshotTool(ctx context.Context, toolPath string, si binlog.ServerInfo) (string, toolVersion, error) {
	tool, err := backupToolFor(si.Flavor).find(toolPath)
	if err != nil {
		return "", toolVersion{}, fmt.Errorf("physical snapshot of %s %s: %w", si.Flavor, si.Version, err)
	}
	tv, err := checkedVersion(ctx, tool, si.Version)
	if err != nil {
		return "", toolVersion{}, fmt.Errorf("physical snapshot: %w", err)
	}
	return tool, tv, nil
}

// backupCommand writes the tool's option file into the scratch directory
// work, makes its target directory there, and returns its arguments.
func backupCommand(ctx context.Context, opts Options, f binlog.Flavor, work string) ([]string, error) {
	tlsLines, err := tlsOptions(ctx, opts, f)
	if err != nil {
		return nil, err
	}
	cnf, err := defaultsFile(work, opts.Source.Config.Passwd, tlsLines...)
	if err != nil {
		return nil, err
	}
	target := filepath.Join(work, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	return backupArgs(cnf, target, opts.Source.Config, opts.Parallel, opts.ExtraArgs)
}

// snapshotID is the snapshot's ID: opts.ID, or one made of its start time.
func (o Options) snapshotID(started time.Time) catalog.SnapshotID {
	if o.ID != "" {
		return o.ID
	}
	return catalog.NewSnapshotID(started)
}

// abandoned logs a snapshot given up after its parts began to be stored
// and returns its error: the context's, when it was cancelled.
func abandoned(ctx context.Context, log *slog.Logger, id catalog.SnapshotID, objects []catalog.SnapshotObject, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		err = cerr
	}
	log.Warn("physical snapshot abandoned; its stored parts are a partial snapshot", "err", err, "parts", len(objects))
	return fmt.Errorf("physical snapshot %s: %w", id, err)
}

// storeManifest completes m with its sizes and the server's tables and
// writes it, which makes the snapshot exist; attrs are logged with the
// rest.
func storeManifest(ctx context.Context, opts Options, m *catalog.Manifest, log *slog.Logger, attrs ...any) error {
	for _, o := range m.Objects {
		m.Bytes += o.Size
		m.StoredBytes += o.StoredSize
	}
	var err error
	if m.Tables, err = listTables(ctx, opts.Source.DB()); err != nil {
		log.Warn("cannot list the tables for the manifest; it records none", "err", err)
	}
	if err := catalog.WriteManifest(ctx, opts.Storage, m); err != nil {
		return fmt.Errorf("physical snapshot %s: write manifest: %w", m.ID, err)
	}
	log.Info("physical snapshot taken", append([]any{
		"binlog", m.Binlog.String(), "gtid", m.GTIDSet,
		"bytes", m.Bytes, "stored_bytes", m.StoredBytes, "parts", len(m.Objects),
		"duration", m.Finished.Sub(m.Started)}, attrs...)...)
	return nil
}

// runBackup runs the tool and stores its stream. It returns the stored
// parts (also on error, for the log) and what the tool's log said.
func runBackup(ctx context.Context, log *slog.Logger, tool string, args []string, dir string, id catalog.SnapshotID, opts Options) ([]catalog.SnapshotObject, *toolLog, error) {
	// Cancelling runCtx kills the tool's process group: on the caller's
	// cancel, and when storing fails so that the tool stops reading the
	// server's files.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(runCtx, tool, args...)
	ownGroup(cmd)
	cmd.Dir = dir
	// The option file is the only way the password travels.
	cmd.Env = childenv.Environ()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("%s stdout: %w", filepath.Base(tool), err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("%s stderr: %w", filepath.Base(tool), err)
	}
	parts, err := newPartWriter(runCtx, opts.Storage, id, formatXbstream, opts.PartSize, opts.Level, opts.Concurrency)
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", filepath.Base(tool), err)
	}
	log.Info("physical backup started", "tool", tool, "pid", cmd.Process.Pid)

	se := &toolLog{}
	var wg sync.WaitGroup
	wg.Go(func() { se.consume(stderr) })

	// The struct hides *os.File's WriteTo, which would copy in 32 KiB
	// pieces instead of copyBuffer.
	_, copyErr := io.CopyBuffer(parts, struct{ io.Reader }{stdout}, make([]byte, copyBuffer))
	if copyErr != nil {
		cancel()
		parts.Abort(copyErr)
		_, _ = io.Copy(io.Discard, stdout)
	}
	wg.Wait()
	waitErr := cmd.Wait()
	base := filepath.Base(tool)
	switch {
	case copyErr != nil:
		return parts.objects, se, fmt.Errorf("store backup stream: %w", copyErr)
	case waitErr != nil:
		parts.Abort(waitErr)
		return parts.objects, se, fmt.Errorf("%s: %w; its log ends:\n%s", base, waitErr, se.Tail())
	}
	if err := parts.Close(); err != nil {
		return parts.objects, se, fmt.Errorf("store backup stream: %w", err)
	}
	if !se.completed {
		return parts.objects, se, fmt.Errorf("%s exited without reporting \"completed OK!\"; its log ends:\n%s", base, se.Tail())
	}
	if !se.found {
		return parts.objects, se, fmt.Errorf("%s reported no binlog position; its log ends:\n%s", base, se.Tail())
	}
	return parts.objects, se, nil
}

// tlsOptions returns the option-file lines that make the tool connect
// with the Source's TLS settings. MariaDB's tool would fall back to
// plaintext with verify-ca and skip-verify; the Source's own connection,
// made with those settings just before, has shown that the server offers
// TLS, and the tool runs on the server's host.
func tlsOptions(ctx context.Context, opts Options, f binlog.Flavor) ([]string, error) {
	cipher, err := mysqltls.Cipher(ctx, opts.Source.DB())
	if err != nil {
		return nil, err
	}
	client := mysqltls.MariaDBClient
	if f == binlog.MySQL {
		client = mysqltls.MySQLClient
	}
	return opts.TLS.Effective(cipher != "").OptionLines(client, opts.Source.Config), nil
}

// backupArgs builds the tool's command line. --defaults-extra-file must
// come first or the tool ignores it; it carries the password.
func backupArgs(cnf, target string, cfg *mysql.Config, parallel int, extra []string) ([]string, error) {
	args := []string{
		"--defaults-extra-file=" + cnf,
		"--backup",
		"--stream=xbstream",
		"--target-dir=" + target,
	}
	switch cfg.Net {
	case "unix":
		args = append(args, "--socket="+cfg.Addr)
	case "tcp", "tcp4", "tcp6", "":
		host, port, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("server address %q: %w", cfg.Addr, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("server port %q: %w", port, err)
		}
		// --protocol=tcp keeps "localhost" from meaning the default socket.
		args = append(args, "--host="+host, "--port="+port, "--protocol=tcp")
	default:
		return nil, fmt.Errorf("server network %q is not tcp or unix", cfg.Net)
	}
	if cfg.User != "" {
		args = append(args, "--user="+cfg.User)
	}
	if parallel > 0 {
		args = append(args, "--parallel="+strconv.Itoa(parallel))
	}
	return append(args, extra...), nil
}

// tablesTimeout bounds the listing of tables for a physical snapshot's
// manifest, which is informational.
const tablesTimeout = 30 * time.Second

// listTables lists the server's user tables with information_schema's row
// estimates.
func listTables(ctx context.Context, db *sql.DB) ([]catalog.TableInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, tablesTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES "+
		"WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') "+
		"ORDER BY TABLE_SCHEMA, TABLE_NAME")
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var out []catalog.TableInfo
	for rows.Next() {
		ti := catalog.TableInfo{RowsEstimated: true}
		if err := rows.Scan(&ti.Schema, &ti.Name, &ti.Rows); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		out = append(out, ti)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return out, nil
}
