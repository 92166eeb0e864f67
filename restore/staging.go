package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/snapshot"
)

// StagingMarker is the file inside every staging directory a restore
// builds a datadir in. It names the restore that owns the directory and is
// locked while that restore, or any program it started, lives: the next
// restore into the same datadir removes a staging directory only when it
// holds this file naming that datadir and nobody holds its lock, so a
// killed restore's leftovers go and nothing else is ever removed because
// of its name alone.
const StagingMarker = "mysql-pitr-staging.json"

// stagingOwner is the content of StagingMarker.
type stagingOwner struct {
	Program string    `json:"program"`
	Datadir string    `json:"datadir"`
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
}

// stagingProgram is stagingOwner.Program of a restore's staging directory.
const stagingProgram = "mysql-pitr restore"

// DefaultLeftoverWait is how long a restore waits for the programs a killed
// restore started (its temporary server shutting down, a prepare or a
// replay client running on) to let go of the staging directory it left.
const DefaultLeftoverWait = 5 * time.Minute

// staging is the directory a restore works in on the datadir's filesystem
// (see snapshot.Staging): the marker, the new datadir and the temporary
// server's tmpdir, so that one directory holds everything a killed restore
// can leave on the volume.
type staging struct {
	root string
	lock *os.File
	// moved says the new datadir has been moved into place.
	moved bool
}

// newStaging makes datadir's staging directory and its locked marker.
func newStaging(datadir string) (*staging, error) {
	root, err := snapshot.Staging(datadir)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	b, _ := json.MarshalIndent(stagingOwner{Program: stagingProgram, Datadir: datadir, PID: os.Getpid(), Host: host,
		Started: time.Now().UTC()}, "", "  ")
	// Opened without O_CLOEXEC, so that every program the restore starts
	// holds the lock too: it outlives a killed restore until its temporary
	// server, which is sent SIGTERM when the restore dies, has shut down.
	path := filepath.Join(root, StagingMarker)
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o600)
	if err != nil {
		os.Remove(root)
		return nil, fmt.Errorf("staging directory marker %s: %w", path, err)
	}
	lock := os.NewFile(uintptr(fd), path)
	s := &staging{root: root, lock: lock}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		s.remove()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if _, err := lock.Write(append(b, '\n')); err != nil {
		s.remove()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := lock.Sync(); err != nil {
		s.remove()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return s, nil
}

// datadir is where the new datadir is built. Its own name must not start
// with a dot, as the staging directory's does: MySQL initialises such a
// datadir and then fails at every start on it (mysqld.ErrDotDatadir).
func (s *staging) datadir() string { return filepath.Join(s.root, "datadir") }

// tmpdir is the temporary server's tmpdir: beside the new datadir, on the
// volume sized for it, where a bulk load sorts its secondary indexes.
func (s *staging) tmpdir() string { return filepath.Join(s.root, "tmp") }

// remove deletes the staging directory, the marker last, and lets go of
// the lock.
func (s *staging) remove() error {
	defer s.lock.Close()
	return removeStaging(s.root)
}

// discard removes the staging directory of a restore that failed, leaving
// the target directory exactly as it was; once the new datadir has been
// moved in it does nothing. It is deferred as soon as the directory exists.
func (s *staging) discard(log *slog.Logger) {
	if s.moved {
		return
	}
	if err := s.remove(); err != nil {
		log.Warn("the next restore into this datadir removes what this one left", "err", err)
	}
}

// movedIn removes what is left of the staging directory once the new
// datadir has been moved into place.
func (s *staging) movedIn(log *slog.Logger) {
	s.moved = true
	if err := s.remove(); err != nil {
		log.Warn("the restore is done; the next restore into this datadir removes what is left of its staging directory", "err", err)
	}
}

// removeStaging deletes a staging directory, its marker last: a removal
// that is itself interrupted still leaves a directory the next restore
// recognises.
func removeStaging(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove staging directory: %w", err)
	}
	for _, e := range ents {
		if e.Name() == StagingMarker {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			return fmt.Errorf("remove staging directory: %w", err)
		}
	}
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("remove staging directory: %w", err)
	}
	return nil
}

// removeLeftovers removes the staging directories that killed restores into
// datadir left: beside it, or inside it when it is a volume's root. A
// directory of that name without a marker naming datadir is left alone and
// logged. A staging directory whose lock is held belongs to a running
// restore, which is an error, or to the programs of a killed one, which are
// given up to wait to exit.
func removeLeftovers(ctx context.Context, datadir string, wait time.Duration, log *slog.Logger) error {
	lv := leftovers{datadir: datadir, wait: wait, log: log}
	prefix := "." + filepath.Base(datadir) + ".restore-"
	for _, dir := range []string{filepath.Dir(datadir), datadir} {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look for leftovers of earlier restores: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
				continue
			}
			if err := lv.remove(ctx, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// leftovers are what removeLeftovers looks for: the staging directories of
// killed restores into datadir.
type leftovers struct {
	datadir string
	// wait is how long the programs of a killed restore get to exit.
	wait time.Duration
	log  *slog.Logger
}

// remove removes one staging directory if it is a killed restore's.
func (lv leftovers) remove(ctx context.Context, path string) error {
	datadir, log := lv.datadir, lv.log
	markerPath := filepath.Join(path, StagingMarker)
	b, err := os.ReadFile(markerPath)
	if errors.Is(err, fs.ErrNotExist) {
		// An empty one (a restore killed as it made it) loses nothing.
		if os.Remove(path) == nil {
			log.Info("removed an empty staging directory an earlier restore left", "path", path)
			return nil
		}
		log.Warn("left alone: named like a restore's staging directory but holds no "+StagingMarker+" (made by an older version or by something else); "+
			"remove it if it is an interrupted restore's", "path", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", markerPath, err)
	}
	var owner stagingOwner
	if err := json.Unmarshal(b, &owner); err != nil || owner.Program != stagingProgram || owner.Datadir != datadir {
		log.Warn("left alone: its "+StagingMarker+" does not name this datadir", "path", path, "datadir", datadir)
		return nil
	}
	f, err := os.OpenFile(markerPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", markerPath, err)
	}
	defer f.Close()
	if err := lv.awaitLock(ctx, f, owner, path); err != nil {
		return err
	}
	log.Info("removing what an interrupted restore left", "path", path, "pid", owner.PID, "host", owner.Host,
		"started", owner.Started.Format(time.RFC3339))
	if err := removeStaging(path); err != nil {
		return fmt.Errorf("the staging directory %s of an interrupted restore: %w", path, err)
	}
	return nil
}

// awaitLock takes the lock of a staging directory's marker f. A running
// owner is an error at once; the programs of a dead one get wait to exit.
func (lv leftovers) awaitLock(ctx context.Context, f *os.File, owner stagingOwner, path string) error {
	wait, log := lv.wait, lv.log
	deadline := time.Now().Add(wait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if owner.running() {
			return fmt.Errorf("another restore into %s is running (pid %d on %s, since %s; staging directory %s)",
				owner.Datadir, owner.PID, owner.Host, owner.Started.Format(time.RFC3339), path)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the staging directory %s of an interrupted restore (pid %d) is still in use after %s by a program it started "+
				"(fuser -v %s names it): stop that program and run the restore again", path, owner.PID, wait, f.Name())
		}
		if !logged {
			log.Info("waiting for the programs of an interrupted restore to exit", "path", path, "pid", owner.PID)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// running reports whether the owner process is alive on this host (and is
// not this process, which can have the pid of a killed restore in another
// container).
func (o stagingOwner) running() bool {
	host, _ := os.Hostname()
	if o.Host != host || o.PID <= 0 || o.PID == os.Getpid() {
		return false
	}
	err := syscall.Kill(o.PID, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
