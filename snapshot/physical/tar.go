package physical

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// tarBuffer is the read and write size of a file's contents.
const tarBuffer = 1 << 20

// writeTree writes every directory and regular file under dir into w as a
// tar stream, in lexical order, with paths relative to dir, modes and
// modification times but no owners (a restore gives the files to the
// server's account). skip, if set, leaves out the relative paths it
// reports. Anything but directories and regular files is an error: a
// datadir holds nothing else. It returns the files written.
func writeTree(ctx context.Context, dir string, w io.Writer, skip func(rel string, d fs.DirEntry) bool) (int, error) {
	tw := tar.NewWriter(w)
	buf := make([]byte, tarBuffer)
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if skip != nil && skip(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime()})
		case fi.Mode().IsRegular():
			files++
			return writeTarFile(tw, p, rel, fi, buf)
		}
		return fmt.Errorf("%s is a %s, not a directory or a regular file", p, fi.Mode().Type())
	})
	if err != nil {
		return files, err
	}
	return files, tw.Close()
}

// writeTarFile writes one regular file; a file that changes size while it
// is read is an error. The pages it read are dropped from the page cache:
// the copy is read once, and the server's own pages matter more.
func writeTarFile(tw *tar.Writer, p, rel string, fi fs.FileInfo, buf []byte) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime()}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// The struct hides tar.Writer's ReadFrom, which would read in its
	// own, smaller pieces.
	n, err := io.CopyBuffer(struct{ io.Writer }{tw}, io.LimitReader(f, fi.Size()), buf)
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if n != fi.Size() {
		return fmt.Errorf("read %s: %d bytes, it had %d when the copy began", p, n, fi.Size())
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return nil
}

// extractTree unpacks a stream writeTree wrote into dir, which exists. Only
// directories and regular files are accepted, and only at relative paths
// that stay inside dir; files are created, never overwritten. It returns
// once the tar stream ends, leaving whatever follows it in r unread.
func extractTree(ctx context.Context, r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	buf := make([]byte, tarBuffer)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the stream: %w", err)
		}
		name, err := tarPath(hdr.Name)
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		perm := os.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, perm|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case tar.TypeReg:
			if err := extractFile(tr, target, perm, hdr.Size, buf); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the stream holds %s of type %q: only directories and regular files belong in a datadir", hdr.Name, hdr.Typeflag)
		}
	}
}

func extractFile(r io.Reader, target string, perm os.FileMode, size int64, buf []byte) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm|0o600)
	if err != nil {
		return err
	}
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, r, buf)
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes, the stream said %d", n, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	return nil
}

// tarPath cleans a name from the stream, refusing anything that would land
// outside the directory being filled.
func tarPath(name string) (string, error) {
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	if name == "" || path.IsAbs(name) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(name, "\\") {
		return "", fmt.Errorf("the stream holds an entry named %q, which is not a path inside the datadir", name)
	}
	return clean, nil
}
