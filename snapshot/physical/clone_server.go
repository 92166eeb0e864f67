package physical

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// cloneFinishStart bounds the one start of mysqld that finishes a clone.
// Recovery replays only the redo written while the clone ran; the limit is
// for a slow disk, not for normal runs.
const cloneFinishStart = 30 * time.Minute

// cloneStatusFile is where the clone plugin keeps, in the cloned datadir,
// what performance_schema.clone_status shows: once the clone has been
// started, with the binlog position and GTID set its data is consistent
// with.
const cloneStatusFile = "#clone/#view_status"

// cloneFinish starts mysqld once on a clone, with the clone plugin loaded,
// and stops it as a crash would once the clone knows its position. A local
// clone does not know its binlog position when CLONE returns (clone_status
// shows none): InnoDB applies the redo the clone copied at the first start,
// and the clone plugin, once its status is read, writes the binlog position
// and GTID set the data is consistent with into cloneStatusFile. A clean
// shutdown would then only flush what the recovery changed, which the next
// start's crash recovery redoes from the redo log: the restore's temporary
// server, which shuts down cleanly. So the server is killed (its clean
// shutdown takes over a second even on a small clone). The server listens
// on a socket in runDir only, without privilege checks, binlog, events,
// replication, the performance schema, key or certificate generation or a
// buffer pool dump, with a small buffer pool and the smallest redo log:
// nothing but the recovery changes the data. settings are the source
// server's options it must share. When this process runs as root the
// server runs as the clone's owner. mysqld.Start runs it in its own process
// group, killed with this process: a server left running on the staging
// directory would keep it from being removed.
func cloneFinish(ctx context.Context, program, datadir, runDir string, settings []string, log *slog.Logger) error {
	opts := mysqld.Options{
		Flavor:       mysqld.MySQL,
		Program:      program,
		Datadir:      datadir,
		RunDir:       runDir,
		TmpDir:       runDir,
		ServerID:     4294967001,
		StartTimeout: cloneFinishStart,
		Bare:         true,
		Logger:       log,
		Args: append([]string{
			"--secure-file-priv=" + runDir,
			"--skip-grant-tables",
			"--skip-log-bin",
			"--skip-replica-start",
			"--event-scheduler=OFF",
			"--mysqlx=OFF",
			"--performance-schema=OFF",
			"--plugin-load-add=mysql_clone.so",
			"--innodb-buffer-pool-size=64M",
			"--innodb-buffer-pool-load-at-startup=OFF",
			"--innodb-buffer-pool-dump-at-shutdown=OFF",
			"--innodb-redo-log-capacity=8M",
			"--auto-generate-certs=OFF",
			"--caching-sha2-password-auto-generate-rsa-keys=OFF",
			"--max-connections=10",
		}, settings...),
	}
	if os.Geteuid() == 0 {
		owner, err := ownerName(datadir)
		if err != nil {
			return err
		}
		opts.User = owner
	}
	statusPath := filepath.Join(datadir, filepath.FromSlash(cloneStatusFile))
	before, err := os.ReadFile(statusPath)
	if err != nil {
		return fmt.Errorf("the clone: %w", err)
	}
	begin := time.Now()
	srv, err := mysqld.Start(ctx, opts)
	if err != nil {
		return fmt.Errorf("start %s on the clone: %w", program, err)
	}
	err = awaitCloneStatus(ctx, srv, statusPath, before, begin.Add(cloneFinishStart))
	srv.Kill()
	if err != nil {
		return err
	}
	log.Info("the clone started once and recovered; stopped it", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// awaitCloneStatus has the clone plugin on srv record the clone's position
// and waits until the status file at statusPath holds it: until it differs
// from before, its content at the start, and reads the same twice in a
// row, 20 ms apart.
func awaitCloneStatus(ctx context.Context, srv *mysqld.Server, statusPath string, before []byte, deadline time.Time) error {
	tail := func() string { return srv.ErrorLog(15) }
	// The clone plugin completes its status, and writes the recovered
	// position into its status file, when the status is first read (even
	// with the performance schema off, when the table shows no row).
	var state string
	if err := srv.DB().QueryRowContext(ctx, "SELECT STATE FROM performance_schema.clone_status").Scan(&state); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("mysqld on the clone: read the clone's status: %w", err)
	}
	var last []byte
	for {
		now, err := os.ReadFile(statusPath)
		if err == nil && !bytes.Equal(now, before) && bytes.Equal(now, last) {
			return nil
		}
		last = now
		if done, werr := srv.Exited(); done {
			return fmt.Errorf("mysqld exited while it started on the clone (%v); its log ends: %s", werr, tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mysqld started on the clone, but in %s the clone plugin did not record the clone's position in %s; its log ends: %s",
				cloneFinishStart, cloneStatusFile, tail())
		}
	}
}

// ownerName is the name of the user owning path, or its numeric id when
// the system knows no name for it (mysqld takes either).
func ownerName(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("%s: no owner", path)
	}
	id := strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username, nil
	}
	return id, nil
}

// cloneStatus is what cloneStatusFile says.
type cloneStatus struct {
	Binlog catalog.Position
	GTID   string
}

// readCloneStatus reads cloneStatusFile of a started clone: a version
// line, begin and end times, the source, the error number and message, then
// the binlog file, position and GTID set (which may run over several lines).
func readCloneStatus(datadir string) (cloneStatus, error) {
	b, err := os.ReadFile(filepath.Join(datadir, filepath.FromSlash(cloneStatusFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return cloneStatus{}, fmt.Errorf("%s is missing: this is not a clone", cloneStatusFile)
	}
	if err != nil {
		return cloneStatus{}, err
	}
	return parseCloneStatus(string(b))
}

var cloneVersionLine = regexp.MustCompile(`^\d+ \d+$`)

func parseCloneStatus(s string) (cloneStatus, error) {
	lines := strings.Split(s, "\n")
	if len(lines) < 7 || !cloneVersionLine.MatchString(lines[0]) {
		return cloneStatus{}, fmt.Errorf("%s %q is not the clone plugin's status", cloneStatusFile, programs.FirstLine(s))
	}
	if lines[3] != "0" {
		return cloneStatus{}, fmt.Errorf("the clone failed with error %s: %s", lines[3], lines[4])
	}
	// The file is named as the server opened it ("./binlog.000001", or
	// with log_bin's directory); the archive knows it by its base name.
	file, posText := strings.TrimSpace(lines[5]), strings.TrimSpace(lines[6])
	if file != "" {
		file = path.Base(file)
	}
	if file == "" {
		return cloneStatus{}, errors.New("the clone recorded no binlog position: the server writes no binlog (log_bin is OFF), and a snapshot without one cannot be replayed from")
	}
	pos, err := strconv.ParseUint(posText, 10, 64)
	if err != nil {
		return cloneStatus{}, fmt.Errorf("%s: binlog position %q: %w", cloneStatusFile, posText, err)
	}
	gtid := strings.Join(strings.Fields(strings.Join(lines[7:], "")), "")
	return cloneStatus{Binlog: catalog.Position{File: file, Pos: pos}, GTID: gtid}, nil
}
