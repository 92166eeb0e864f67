package physical

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A clone's staging directory is cloneStagingPrefix followed by a random
// suffix, in the clone directory. It holds cloneMarkerName, locked for as
// long as the snapshot runs, and cloneDataName, which the server creates
// with the copy. The marker's name and content tell a directory an
// interrupted snapshot left from anything else there.
const (
	cloneStagingPrefix = "mysql-pitr-clone-"
	cloneMarkerName    = "mysql-pitr-clone.json"
	cloneDataName      = "data"
	cloneProgram       = "mysql-pitr snapshot"
)

// cloneStopWait bounds how long a clone that was interrupted (KILL QUERY)
// may take to stop writing before its directory is removed.
const cloneStopWait = 2 * time.Minute

// cloneOwner is what the marker says about the snapshot that made it.
type cloneOwner struct {
	Program string    `json:"program"`
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Server  string    `json:"server"`
}

// cloneStaging is one snapshot's staging directory.
type cloneStaging struct {
	root   string
	marker *os.File
}

// newCloneStaging makes a staging directory in location and locks its
// marker. The server writes the clone into it: when this process runs as
// root, it is given to the owner of ownerOf (the server's datadir), which
// is the server's OS user.
func newCloneStaging(location, ownerOf, server string) (*cloneStaging, error) {
	root, err := os.MkdirTemp(location, cloneStagingPrefix)
	if err != nil {
		return nil, fmt.Errorf("clone staging directory: %w", err)
	}
	s := &cloneStaging{root: root}
	fail := func(err error) (*cloneStaging, error) {
		_ = s.remove()
		return nil, err
	}
	if os.Geteuid() == 0 && ownerOf != "" {
		if fi, err := os.Stat(ownerOf); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if err := os.Chown(root, int(st.Uid), int(st.Gid)); err != nil {
					return fail(fmt.Errorf("clone staging directory: %w", err))
				}
			}
		}
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(cloneOwner{Program: cloneProgram, PID: os.Getpid(), Host: host, Started: time.Now().UTC(), Server: server})
	f, err := os.OpenFile(filepath.Join(root, cloneMarkerName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(fmt.Errorf("clone staging marker: %w", err))
	}
	s.marker = f
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(fmt.Errorf("lock %s: %w", f.Name(), err))
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fail(fmt.Errorf("write %s: %w", f.Name(), err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("write %s: %w", f.Name(), err))
	}
	return s, nil
}

// data is the directory the server clones into; it must not exist before.
func (s *cloneStaging) data() string { return filepath.Join(s.root, cloneDataName) }

// remove deletes the staging directory, the marker last, and releases it.
func (s *cloneStaging) remove() error {
	err := removeCloneRoot(s.root)
	if s.marker != nil {
		s.marker.Close()
	}
	return err
}

// removeCloneRoot removes a staging directory: the clone first, then the
// marker and the directory, so that a removal cut short still leaves a
// marker for the next run to find.
func removeCloneRoot(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		if e.Name() == cloneMarkerName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	return nil
}

// removeCloneLeftovers removes the staging directories in location that
// interrupted snapshots left: those named like one whose marker is not
// locked by a running snapshot. A clone the server is still writing into
// one of them (its client was killed, the statement goes on) is stopped
// first with KILL QUERY: the account may kill its own statements. A
// directory named like one but without a marker is left alone unless it is
// empty. A running snapshot's directory is an error: two clones at once
// would need room for two copies.
func removeCloneLeftovers(ctx context.Context, db *sql.DB, location string, log *slog.Logger) error {
	ents, err := os.ReadDir(location)
	if err != nil {
		return fmt.Errorf("look for what interrupted snapshots left in %s: %w", location, err)
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), cloneStagingPrefix) {
			continue
		}
		root := filepath.Join(location, e.Name())
		f, err := os.OpenFile(filepath.Join(root, cloneMarkerName), os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			if os.Remove(root) == nil {
				log.Info("removed an empty clone staging directory an earlier snapshot left", "path", root)
				continue
			}
			log.Warn("left alone: named like a clone staging directory but holds no "+cloneMarkerName+"; remove it if an interrupted snapshot left it", "path", root)
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", filepath.Join(root, cloneMarkerName), err)
		}
		var owner cloneOwner
		_ = json.NewDecoder(f).Decode(&owner)
		if owner.Program != cloneProgram {
			f.Close()
			log.Warn("left alone: its "+cloneMarkerName+" is not a mysql-pitr snapshot's", "path", root)
			continue
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return fmt.Errorf("another physical snapshot is running (pid %d on %s, since %s; staging directory %s)",
					owner.PID, owner.Host, owner.Started.Format(time.RFC3339), root)
			}
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		err = stopLeftoverClone(ctx, db, root, log)
		if err == nil {
			err = removeCloneRoot(root)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("remove the staging directory %s an interrupted snapshot left (pid %d, started %s): %w",
				root, owner.PID, owner.Started.Format(time.RFC3339), err)
		}
		log.Info("removed what an interrupted physical snapshot left", "path", root, "pid", owner.PID, "host", owner.Host,
			"started", owner.Started.Format(time.RFC3339))
	}
	return nil
}

// stopLeftoverClone stops a clone the server is still running into root.
func stopLeftoverClone(ctx context.Context, db *sql.DB, root string, log *slog.Logger) error {
	state, pid, dest, err := cloneState(ctx, db)
	if err != nil || state != "In Progress" || !strings.HasPrefix(dest, root+string(filepath.Separator)) {
		return err
	}
	log.Warn("a clone an interrupted snapshot started is still running; stopping it", "path", dest, "connection", pid)
	return killClone(ctx, db, pid, root)
}

// cloneState reads performance_schema.clone_status: the state, connection
// and destination of the last clone (empty when there was none).
func cloneState(ctx context.Context, db *sql.DB) (state string, pid int64, dest string, err error) {
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = db.QueryRowContext(qctx, "SELECT STATE, PID, DESTINATION FROM performance_schema.clone_status").Scan(&state, &pid, &dest)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, "", nil
	}
	if err != nil {
		return "", 0, "", fmt.Errorf("read performance_schema.clone_status: %w", err)
	}
	return state, pid, dest, nil
}

// killClone interrupts the CLONE statement of connection pid and waits
// until the server no longer clones into root. It runs on a context of its
// own: it is what a cancelled snapshot does last.
func killClone(ctx context.Context, db *sql.DB, pid int64, root string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cloneStopWait)
	defer cancel()
	if _, err := db.ExecContext(ctx, "KILL QUERY "+strconv.FormatInt(pid, 10)); err != nil {
		return fmt.Errorf("stop the clone (KILL QUERY %d): %w", pid, err)
	}
	for {
		state, _, dest, err := cloneState(ctx, db)
		if err != nil {
			return err
		}
		if state != "In Progress" || !strings.HasPrefix(dest, root+string(filepath.Separator)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the clone into %s still runs %s after KILL QUERY %d", dest, cloneStopWait, pid)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
