package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
)

// datadirDest is the datadir a restore builds, checked before any work,
// and the temporary server the snapshot is materialised and replayed on.
type datadirDest struct {
	path   string
	server mysqld.Options
}

// checkDatadir refuses, before anything is fetched or changed, whatever
// would stop a restore into the datadir at its end: a dot-named datadir for
// MySQL, a running restore into it, its contents (without --force) or
// contents that cannot be moved aside or deleted, and missing server
// programs of the snapshot's release. What a killed restore left goes
// first: it would make the datadir look used (when the staging directory
// is inside it) and hold space.
func (r *run) checkDatadir(ctx context.Context) (*datadirDest, error) {
	datadir, err := filepath.Abs(r.opts.Datadir)
	if err != nil {
		return nil, fmt.Errorf("datadir %s: %w", r.opts.Datadir, err)
	}
	if r.flavor == mysqld.MySQL && strings.HasPrefix(filepath.Base(datadir), ".") {
		return nil, fmt.Errorf("%w: restore into another directory than %s; nothing was changed", mysqld.ErrDotDatadir, datadir)
	}
	wait := r.opts.LeftoverWait
	if wait <= 0 {
		wait = DefaultLeftoverWait
	}
	if err := removeLeftovers(ctx, datadir, wait, r.log); err != nil {
		return nil, err
	}
	used, err := datadirEntries(datadir, r.opts.Force, "")
	if err != nil {
		return nil, err
	}
	if err := checkEmptying(datadir, used, r.opts.DiscardExisting); err != nil {
		return nil, err
	}
	// The programs of the snapshot's release, before anything is fetched.
	server := r.serverOptions()
	if err := mysqld.Check(ctx, server, r.plan.Snapshot.Method == catalog.MethodLogical); err != nil {
		return nil, err
	}
	if r.opts.Replay == ReplayMysqlbinlog {
		if _, _, err := r.tools().find(ctx); err != nil {
			return nil, err
		}
	}
	return &datadirDest{path: datadir, server: server}, nil
}

// moveIn empties the datadir as the options allow and moves the datadir
// built in stage into it. It returns where the old contents went, if
// anywhere.
func (r *run) moveIn(d *datadirDest, stage *staging) (string, error) {
	aside, err := prepareDatadir(d.path, r.opts.Force, r.opts.DiscardExisting, stage.root)
	if err != nil {
		return "", err
	}
	if err := snapshot.MoveInto(stage.datadir(), d.path); err != nil {
		return "", err
	}
	stage.movedIn(r.log)
	return aside, nil
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
