package physical

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// Physical snapshot tools, as Tool names them.
const (
	ToolMariaDBBackup = "mariadb-backup"
	ToolXtrabackup    = "xtrabackup"
	ToolClone         = "clone"
)

// Tool names what a physical snapshot of a server of flavor f is taken
// with: mariadb-backup on MariaDB; on MySQL xtrabackup when toolPath is set
// or xtrabackup is on PATH or in the sbin directories (an image built with
// it), else the server's clone plugin, which needs no tool.
func Tool(f binlog.Flavor, toolPath string) string {
	if f == binlog.MariaDB {
		return ToolMariaDBBackup
	}
	if toolPath != "" {
		return ToolXtrabackup
	}
	if _, err := (programs.Finder{}).Look(programs.Names(programs.MySQL, programs.Backup)...); err == nil {
		return ToolXtrabackup
	}
	return ToolClone
}

// ErrCloneNoRoom is returned (wrapped) when the clone directory's
// filesystem has less free space than a copy of the server's data needs.
var ErrCloneNoRoom = errors.New("not enough free space for the clone")

// cloneReserve is added to the data's size in the space check: the redo
// files and the doublewrite buffer the clone's one start creates.
const cloneReserve = 64 << 20

// clonePlan is what the checks before a clone found.
type clonePlan struct {
	// location is the clone directory; datadir the server's datadir, both
	// as this process sees them.
	location, datadir string
	mysqld, version   string
	// install is set when the clone plugin is not loaded yet.
	install bool
	// settings are the server's options the clone's one start must share:
	// its GTID settings (the clone records its GTID set only with GTIDs
	// on), and those fixed when the data was made, which a server started
	// with others refuses.
	settings []string
	// lowerCase and pageSize are lower_case_table_names and
	// innodb_page_size, for the manifest.
	lowerCase, pageSize int
	// need is the estimated size of the copy; free the filesystem's.
	need, free uint64
}

// cloneCheckError lists every reason a clone cannot start.
type cloneCheckError struct{ errs []error }

func (e *cloneCheckError) Error() string {
	s := make([]string, len(e.errs))
	for i, err := range e.errs {
		s[i] = err.Error()
	}
	return "cannot take a physical snapshot with the clone plugin: " + strings.Join(s, "; ")
}

func (e *cloneCheckError) Unwrap() []error { return e.errs }

// Check checks, before any work, what Take needs and can know in
// advance: the backup tool and its version; for a MySQL clone (Tool) the
// clone plugin, mysqld for the server's release, the clone directory, user
// tables in engines a clone does not copy, and free space for a copy of
// the data in the clone directory. It first removes
// what interrupted clones left there, which would hold that space. The
// account's privileges are the preflight package's to check. Every problem
// found is named in one error. Storage need not be set.
func Check(ctx context.Context, opts Options) error {
	if opts.Source == nil || opts.Source.Config == nil {
		return errors.New("physical snapshot options: Source is not set")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger.With("component", "snapshot", "method", catalog.MethodPhysical)
	si, err := serverInfo(ctx, opts.Source)
	if err != nil {
		return err
	}
	if Tool(si.Flavor, opts.ToolPath) == ToolClone {
		_, err := cloneCheck(ctx, opts, si, log)
		return err
	}
	_, _, err = snapshotTool(ctx, opts.ToolPath, si)
	return err
}

// cloneCheck runs Check's checks for a clone, in the order a reader
// meets them in the error: where the clone goes, the mysqld that finishes
// it, the clone plugin, what a clone leaves out and the room it needs.
func cloneCheck(ctx context.Context, opts Options, si binlog.ServerInfo, log *slog.Logger) (*clonePlan, error) {
	db := opts.Source.DB()
	qctx, cancel := context.WithTimeout(ctx, tablesTimeout)
	defer cancel()
	plan := &clonePlan{datadir: opts.Datadir, location: opts.CloneDir}
	if plan.datadir == "" {
		var d string
		if err := db.QueryRowContext(qctx, "SELECT @@datadir").Scan(&d); err != nil {
			return nil, fmt.Errorf("physical snapshot: read the server's datadir: %w", err)
		}
		plan.datadir = filepath.Clean(d)
	}
	if plan.location == "" {
		plan.location = filepath.Dir(plan.datadir)
	}
	var errs []error
	locationErr := checkCloneDir(plan.location)
	if locationErr != nil {
		errs = append(errs, locationErr)
	} else if err := removeCloneLeftovers(ctx, db, plan.location, log); err != nil {
		return nil, fmt.Errorf("physical snapshot: %w", err)
	}
	if mysqld, err := cloneMysqld(ctx, opts.ServerPath, si.Version); err != nil {
		errs = append(errs, err)
	} else {
		plan.mysqld, plan.version = mysqld.Path, mysqld.Version
	}
	if err := readCloneSettings(qctx, db, plan); err != nil {
		return nil, fmt.Errorf("physical snapshot: %w", err)
	}

	var status string
	switch err := db.QueryRowContext(qctx, "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'").Scan(&status); {
	case errors.Is(err, sql.ErrNoRows):
		plan.install = true
	case err != nil:
		return nil, fmt.Errorf("physical snapshot: read the clone plugin's status: %w", err)
	case status != "ACTIVE":
		errs = append(errs, fmt.Errorf("the clone plugin is installed but %s", status))
	}

	if others, err := cloneUncopied(qctx, db); err != nil {
		return nil, fmt.Errorf("physical snapshot: %w", err)
	} else if len(others) > 0 {
		errs = append(errs, fmt.Errorf("a clone copies only InnoDB tables, and these would be restored empty: %s; convert them to InnoDB or take logical snapshots",
			strings.Join(others, ", ")))
	}

	if locationErr == nil {
		if noRoom, err := checkCloneSpace(qctx, db, plan); err != nil {
			return nil, fmt.Errorf("physical snapshot: %w", err)
		} else if noRoom != nil {
			errs = append(errs, noRoom)
		}
	}
	if len(errs) > 0 {
		return nil, &cloneCheckError{errs: errs}
	}
	return plan, nil
}

// checkCloneDir says what, if anything, keeps location from being the
// clone directory.
func checkCloneDir(location string) error {
	switch fi, err := os.Stat(location); {
	case !filepath.IsAbs(location):
		return fmt.Errorf("the clone directory %q is not an absolute path", location)
	case err != nil:
		return fmt.Errorf("the clone directory %s: %w (the clone is written on the server's host and read back here: "+
			"run on that host, or in a container that mounts the server's volume at the same path, and choose the directory with --clone-dir)", location, err)
	case !fi.IsDir():
		return fmt.Errorf("the clone directory %s is not a directory", location)
	case strings.ContainsAny(location, "'\\\x00"):
		// CLONE takes the path as a literal, whose escaping sql_mode
		// changes (NO_BACKSLASH_ESCAPES).
		return fmt.Errorf("the clone directory %q holds a quote or a backslash; choose another with --clone-dir", location)
	}
	return nil
}

// cloneMysqld finds the mysqld that finishes the clone: serverPath, or
// MySQL's server found on PATH or in the sbin directories, which must be
// the server's own release.
func cloneMysqld(ctx context.Context, serverPath, serverVersion string) (programs.Program, error) {
	var p programs.Program
	var err error
	if serverPath != "" {
		p, err = (programs.Finder{}).Identify(ctx, serverPath)
	} else {
		serverPath = "mysqld"
		p, err = (programs.Finder{}).Find(ctx, programs.MySQL, programs.Server)
	}
	switch {
	case errors.Is(err, programs.ErrNotFound):
		return p, fmt.Errorf("%w: %s: %v; it starts the clone once to finish it: use an image that has the server's own mysqld "+
			"(Dockerfile.physical with the server's image as BASE)", ErrToolMissing, serverPath, err)
	case err != nil:
		return p, err
	}
	if p.Version == "" {
		return p, fmt.Errorf("%s --version names no release; a clone is finished with the server's own release", p.Path)
	}
	if want := programs.Release(serverVersion); want == "" || want != p.Version {
		return p, fmt.Errorf("%w: %s is %s but the server is %s; a clone is finished with the server's own release",
			ErrToolVersion, p.Path, p.Version, serverVersion)
	}
	return p, nil
}

// readCloneSettings reads the server's settings the clone's one start must
// share into plan.
func readCloneSettings(ctx context.Context, db *sql.DB, plan *clonePlan) error {
	var gtidMode, enforce, lowerCase, pageSize, dataFilePath string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_mode, @@enforce_gtid_consistency, @@lower_case_table_names, @@innodb_page_size, @@innodb_data_file_path").
		Scan(&gtidMode, &enforce, &lowerCase, &pageSize, &dataFilePath); err != nil {
		return fmt.Errorf("read the server's settings: %w", err)
	}
	plan.settings = []string{"--gtid-mode=" + gtidMode, "--enforce-gtid-consistency=" + enforce,
		"--lower-case-table-names=" + lowerCase, "--innodb-page-size=" + pageSize, "--innodb-data-file-path=" + dataFilePath}
	var err error
	if plan.lowerCase, err = strconv.Atoi(lowerCase); err != nil {
		return fmt.Errorf("lower_case_table_names %q: %w", lowerCase, err)
	}
	if plan.pageSize, err = strconv.Atoi(pageSize); err != nil {
		return fmt.Errorf("innodb_page_size %q: %w", pageSize, err)
	}
	return nil
}

// checkCloneSpace sets plan's need, the size of a copy of the data, and
// free, the clone directory's free space. noRoom, wrapping ErrCloneNoRoom,
// is set when the one is short of the other; err when either is unknown.
func checkCloneSpace(ctx context.Context, db *sql.DB, plan *clonePlan) (noRoom, err error) {
	var tablespaces, redo int64
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(SUM(FILE_SIZE), 0) FROM information_schema.INNODB_TABLESPACES").Scan(&tablespaces); err != nil {
		return nil, fmt.Errorf("read the size of the data (information_schema.INNODB_TABLESPACES): %w", err)
	}
	// The clone copies the redo written while it runs, and its one
	// start creates redo files of this capacity.
	if err := db.QueryRowContext(ctx, "SELECT @@innodb_redo_log_capacity").Scan(&redo); err != nil {
		redo = 0
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(plan.location, &fs); err != nil {
		return nil, fmt.Errorf("free space of %s: %w", plan.location, err)
	}
	plan.need = uint64(tablespaces) + uint64(redo) + cloneReserve
	plan.free = fs.Bavail * uint64(fs.Bsize)
	if plan.free < plan.need {
		return fmt.Errorf("%w in %s: a copy of the data needs about %s (tablespaces %s, redo log %s, %s more) and the filesystem has %s free; "+
			"free space there or choose a directory on a larger filesystem with --clone-dir (writable by the server's OS user)",
			ErrCloneNoRoom, plan.location, mib(plan.need), mib(uint64(tablespaces)), mib(uint64(redo)), mib(cloneReserve), mib(plan.free)), nil
	}
	return nil, nil
}

// cloneUncopied lists user tables in engines other than InnoDB: a clone
// creates them but copies none of their rows.
func cloneUncopied(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(ENGINE, '') FROM information_schema.TABLES "+
		"WHERE TABLE_TYPE = 'BASE TABLE' AND COALESCE(ENGINE, '') <> 'InnoDB' "+
		"AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2")
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var schema, name, engine string
		if err := rows.Scan(&schema, &name, &engine); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		if len(out) == 5 {
			out = append(out, "…")
			break
		}
		out = append(out, fmt.Sprintf("%s.%s (%s)", schema, name, engine))
	}
	return out, rows.Err()
}

func mib(n uint64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// cloneTransient are the paths in a finished clone that every start of the
// server makes anew, or that belong to the one start that finished it
// rather than to the data: its identity (auto.cnf: each restored server
// takes its own, as a clone's does), the key pairs it generated (private
// keys that no archive needs), the temporary tablespaces and the spare redo
// files.
func cloneTransient(rel string, d fs.DirEntry) bool {
	switch {
	case rel == "auto.cnf", rel == "ibtmp1", rel == "#innodb_temp":
		return true
	case !strings.Contains(rel, "/") && strings.HasSuffix(rel, ".pem"):
		return true
	case strings.HasPrefix(rel, "#innodb_redo/") && strings.HasSuffix(rel, "_tmp"):
		return true
	}
	return false
}

// takeClone takes a physical snapshot of a MySQL server with its clone
// plugin: CLONE LOCAL DATA DIRECTORY into a staging directory in the clone
// directory, one start of mysqld on the copy to finish it (see cloneFinish)
// and learn its binlog position, then the copy as a tar stream into the
// snapshot's parts. The staging directory is removed at the end, whatever
// the outcome; a snapshot killed before that leaves it for the next one to
// remove.
func takeClone(ctx context.Context, opts Options, si binlog.ServerInfo, log *slog.Logger) (*catalog.Manifest, error) {
	plan, err := cloneCheck(ctx, opts, si, log)
	if err != nil {
		return nil, err
	}
	db := opts.Source.DB()
	if plan.install {
		if err := installClonePlugin(ctx, db, log); err != nil {
			return nil, fmt.Errorf("physical snapshot: %w", err)
		}
	}

	started := time.Now().UTC()
	id := opts.snapshotID(started)
	log = log.With("id", string(id))
	stage, err := newCloneStaging(plan.location, plan.datadir, opts.Source.Address())
	if err != nil {
		return nil, fmt.Errorf("physical snapshot %s: %w", id, err)
	}
	defer func() {
		if err := stage.remove(); err != nil {
			log.Warn("cannot remove the clone staging directory; the next physical snapshot removes it", "path", stage.root, "err", err)
		}
	}()
	work, err := cloneWorkDir(opts.TempDir)
	if err != nil {
		return nil, fmt.Errorf("physical snapshot: scratch directory: %w", err)
	}
	defer os.RemoveAll(work)
	log.Info("cloning", "into", stage.data(), "estimated_bytes", plan.need, "free_bytes", plan.free)

	objects, cs, consistent, err := cloneRun(ctx, db, stage, plan, work, id, opts, log)
	finished := time.Now().UTC()
	if err != nil {
		return nil, abandoned(ctx, log, id, objects, err)
	}
	m := &catalog.Manifest{
		ID:            id,
		Method:        catalog.MethodPhysical,
		Flavor:        string(si.Flavor),
		ServerVersion: si.Version,
		ServerID:      si.ServerID,
		ServerUUID:    si.UUID,
		Binlog:        cs.Binlog,
		ConsistentAt:  consistent,
		GTIDSet:       cs.GTID,
		Timeline:      opts.Timeline,
		TimelineUID:   catalog.TimelineUIDOf(ctx, opts.Storage, opts.Timeline),
		Started:       started,
		Finished:      finished,
		Tool:          "mysql clone plugin (mysqld " + plan.version + ")",
		Objects:       objects,
		Agent:         opts.Agent,

		LowerCaseTableNames: plan.lowerCase,
		InnoDBPageSize:      plan.pageSize,
	}
	if err := storeManifest(ctx, opts, m, log); err != nil {
		return nil, err
	}
	return m, nil
}

// installClonePlugin installs the clone plugin, which cloneCheck found
// missing.
func installClonePlugin(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, tablesTimeout)
	defer cancel()
	if _, err := db.ExecContext(ctx, "INSTALL PLUGIN clone SONAME 'mysql_clone.so'"); err != nil {
		return fmt.Errorf("install the clone plugin: %w", err)
	}
	log.Info("installed the clone plugin (INSTALL PLUGIN clone SONAME 'mysql_clone.so')")
	return nil
}

// cloneWorkDir makes the scratch directory of the server that finishes the
// clone, in tempDir. Its socket goes there, and a socket's path is at most
// 107 bytes: a tempDir too deep for it gives way to the system's.
func cloneWorkDir(tempDir string) (string, error) {
	if len(filepath.Join(tempDir, "mysql-pitr-physical-0123456789", "mysqld.sock")) > 100 {
		tempDir = ""
	}
	return os.MkdirTemp(tempDir, "mysql-pitr-physical-")
}

// cloneRun clones, finishes the clone and stores it. It returns the stored
// parts (also on error, for the log), the clone's position and when the
// clone ended: every transaction it holds committed before.
func cloneRun(ctx context.Context, db *sql.DB, stage *cloneStaging, plan *clonePlan, work string, id catalog.SnapshotID,
	opts Options, log *slog.Logger) ([]catalog.SnapshotObject, cloneStatus, time.Time, error) {
	begin := time.Now()
	if err := cloneLocal(ctx, db, stage, log); err != nil {
		return nil, cloneStatus{}, time.Time{}, err
	}
	consistent := time.Now().UTC()
	log.Info("cloned", "took", time.Since(begin).Round(time.Millisecond))
	if err := cloneFinish(ctx, plan.mysqld, stage.data(), work, plan.settings, log); err != nil {
		return nil, cloneStatus{}, time.Time{}, err
	}
	cs, err := readCloneStatus(stage.data())
	if err != nil {
		return nil, cloneStatus{}, time.Time{}, err
	}
	log.Info("the clone is consistent with", "binlog", cs.Binlog.String(), "gtid", cs.GTID)

	parts, err := newPartWriter(ctx, opts.Storage, id, formatTar, opts.PartSize, opts.Level, opts.Concurrency)
	if err != nil {
		return nil, cloneStatus{}, time.Time{}, err
	}
	begin = time.Now()
	files, err := writeTree(ctx, stage.data(), parts, cloneTransient)
	if err != nil {
		parts.Abort(err)
		return parts.objects, cloneStatus{}, time.Time{}, fmt.Errorf("store the clone: %w", err)
	}
	if err := parts.Close(); err != nil {
		return parts.objects, cloneStatus{}, time.Time{}, fmt.Errorf("store the clone: %w", err)
	}
	log.Info("stored the clone", "files", files, "took", time.Since(begin).Round(time.Millisecond))
	return parts.objects, cs, consistent, nil
}

// cloneLocal runs CLONE LOCAL DATA DIRECTORY into the staging directory.
// The server goes on with a statement whose client went away, so a
// cancelled snapshot stops the clone with KILL QUERY and waits until the
// server has stopped writing, before the staging directory is removed.
func cloneLocal(ctx context.Context, db *sql.DB, stage *cloneStaging, log *slog.Logger) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	defer conn.Close()
	var connID int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&connID); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	stmt := "CLONE LOCAL DATA DIRECTORY = " + sqlString(stage.data())
	done := make(chan error, 1)
	go func() {
		_, err := conn.ExecContext(context.WithoutCancel(ctx), stmt)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w (the server creates that directory on its host as its OS user: the clone directory must be "+
				"at the same path there as here, and writable by that user)", stmt, err)
		}
		return nil
	case <-ctx.Done():
	}
	log.Info("snapshot cancelled; stopping the clone", "connection", connID)
	kerr := killClone(ctx, db, connID, stage.root)
	<-done
	if kerr != nil {
		return errors.Join(ctx.Err(), kerr)
	}
	return ctx.Err()
}

// sqlString quotes s, which holds no quote, backslash or NUL (cloneCheck
// refuses such a clone directory), as an SQL string literal.
func sqlString(s string) string { return "'" + s + "'" }
