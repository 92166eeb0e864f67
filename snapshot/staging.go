package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Staging makes an empty directory in which datadir's new contents can be
// built out of sight, on datadir's filesystem so that MoveInto renames
// instead of copying: beside datadir, or, when datadir is the root of its
// own filesystem (a volume mounted there), hidden inside it.
func Staging(datadir string) (string, error) {
	datadir = filepath.Clean(datadir)
	parent := filepath.Dir(datadir)
	if err := os.MkdirAll(parent, 0o750); err != nil {
		return "", fmt.Errorf("staging directory for %s: %w", datadir, err)
	}
	in := parent
	if mounted, err := isMountRoot(datadir, parent); err != nil {
		return "", err
	} else if mounted {
		in = datadir
	}
	dir, err := os.MkdirTemp(in, "."+filepath.Base(datadir)+".restore-")
	if err != nil {
		return "", fmt.Errorf("staging directory for %s: %w", datadir, err)
	}
	return dir, nil
}

// isMountRoot reports whether dir exists and lies on another device than
// its parent.
func isMountRoot(dir, parent string) (bool, error) {
	var d, p syscall.Stat_t
	if err := syscall.Stat(dir, &d); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("datadir %s: %w", dir, err)
	}
	if err := syscall.Stat(parent, &p); err != nil {
		return false, fmt.Errorf("datadir %s: %w", parent, err)
	}
	return d.Dev != p.Dev, nil
}

// MoveInto puts staging's contents into datadir and removes staging. A
// missing datadir is staging renamed; an existing one keeps its inode, mode
// and owner (it may be a mount point) and receives the entries one by one.
// Both directories must be on one filesystem, as Staging makes them.
func MoveInto(staging, datadir string) error {
	if err := os.Chmod(staging, 0o750); err != nil {
		return fmt.Errorf("chmod %s: %w", staging, err)
	}
	if _, err := os.Stat(datadir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(staging, datadir); err != nil {
			return fmt.Errorf("move %s to %s: %w", staging, datadir, err)
		}
		return syncDir(filepath.Dir(datadir))
	}
	entries, err := os.ReadDir(staging)
	if err != nil {
		return fmt.Errorf("read %s: %w", staging, err)
	}
	for _, e := range entries {
		from, to := filepath.Join(staging, e.Name()), filepath.Join(datadir, e.Name())
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("move %s to %s: %w", from, to, err)
		}
	}
	if err := os.Remove(staging); err != nil {
		return fmt.Errorf("remove %s: %w", staging, err)
	}
	return syncDir(datadir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
