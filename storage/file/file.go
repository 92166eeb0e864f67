// Package file is the storage backend on a local directory (the embedded
// default, file:///path): each object is one file at ROOT/KEY.
//
// A Put writes a hidden temporary file beside its target, fsyncs it, records
// its CRC32C in the extended attribute user.mysqlpitr.crc32c, renames it into
// place and fsyncs the directory, so an object is either wholly there, with
// its checksum, or not there at all, even across a crash. Put with
// IfNotExists renames with RENAME_NOREPLACE (or links, where the kernel or
// filesystem lacks it), which is atomic against other writers, in this
// process or another.
//
// The root must be on a filesystem with user extended attributes (ext4, XFS,
// btrfs, ZFS, tmpfs since Linux 6.6); New refuses one without. A file that
// lost its attribute, say to a copy without --preserve=xattr, is read
// unverified and reported with a zero CRC32C, rather than made unreadable.
//
// Because keys are paths, a key cannot also be a directory of other keys:
// with "a/b" stored, a Put of "a" fails.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Store is a storage.Storage on a local directory. It is safe for
// concurrent use, also by several processes sharing the directory.
type Store struct {
	root string
}

var _ storage.Storage = (*Store)(nil)

const (
	// tempPrefix starts the names of files that a Put is still writing. List
	// skips them and keys may not use the prefix, so they are never seen.
	tempPrefix = ".tmp-"
	// staleTemp is how old an untouched temporary file must be for New to
	// remove it as the leftover of a crashed Put: a live Put writes often.
	staleTemp = time.Hour
	// xattrCRC names the extended attribute holding an object's CRC32C as
	// eight hex digits.
	xattrCRC = "user.mysqlpitr.crc32c"
	// copyBufferSize is the Put copy buffer; large enough that syscalls cost
	// little next to the disk.
	copyBufferSize = 1 << 20
)

// New returns a Store rooted at the directory root, creating it if needed.
// It checks that the filesystem keeps extended attributes and removes
// temporary files that crashed Puts left more than an hour ago.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("file store: empty root directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("file store root %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("file store root: %w", err)
	}
	s := &Store{root: abs}
	if err := s.checkXattr(); err != nil {
		return nil, err
	}
	if err := s.sweep(time.Now().Add(-staleTemp)); err != nil {
		return nil, err
	}
	return s, nil
}

// Open returns a Store over the existing directory root for reading: it
// creates nothing, probes nothing and removes nothing, so it works on a
// read-only mount. A missing root is an error wrapping fs.ErrNotExist.
// Its Put and Delete work as New's, where the filesystem allows them.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("file store: empty root directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("file store root %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("file store root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("file store root %s is not a directory", abs)
	}
	return &Store{root: abs}, nil
}

// Root returns the absolute directory the store keeps its objects in.
func (s *Store) Root() string { return s.root }

// checkXattr fails early on a filesystem that would make every Put fail.
func (s *Store) checkXattr() error {
	f, err := os.CreateTemp(s.root, tempPrefix+"xattr-*")
	if err != nil {
		return fmt.Errorf("file store root %s: %w", s.root, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := setCRC(f, 0); err != nil {
		return fmt.Errorf("file store root %s: filesystem does not keep user extended attributes: %w", s.root, err)
	}
	return nil
}

// sweep removes temporary files not modified since before.
func (s *Store) sweep(before time.Time) error {
	err := filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().Before(before) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("file store: remove stale temporary files: %w", err)
	}
	return nil
}

// path checks key and returns its file.
func (s *Store) path(key string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(seg, tempPrefix) {
			return "", fmt.Errorf("key %q: %w: segment starts with %q, reserved for temporary files", key, storage.ErrInvalidKey, tempPrefix)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put implements storage.Storage.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	path, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	info, err := s.put(ctx, key, path, r, opts)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	return info, nil
}

func (s *Store) put(ctx context.Context, key, path string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if opts.IfNotExists {
		// Spare writing a copy that the rename would refuse. The rename
		// still decides: the key may appear in between.
		if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() {
			return storage.ObjectInfo{}, storage.ErrExist
		}
	}
	dir := filepath.Dir(path)
	f, err := createTemp(dir)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	tmp := f.Name()
	published := false
	defer func() {
		if !published {
			f.Close()
			os.Remove(tmp)
		}
	}()

	crc, size, err := copyCRC(f, &ctxReader{ctx: ctx, r: r})
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := setCRC(f, crc); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("record checksum: %w", err)
	}
	if err := f.Sync(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("sync: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := f.Close(); err != nil {
		return storage.ObjectInfo{}, err
	}
	// Last chance to honour a cancellation: after the rename the object is
	// visible and the Put has happened.
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, err
	}
	if opts.IfNotExists {
		err = renameNoReplace(tmp, path)
	} else {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return storage.ObjectInfo{}, s.publishError(path, err)
	}
	published = true
	// The rename is durable only once the directory entry is: without this a
	// crash could lose an object whose Put returned.
	if err := syncDir(dir); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("sync directory: %w", err)
	}
	return storage.ObjectInfo{Key: key, Size: size, ModTime: fi.ModTime(), CRC32C: crc}, nil
}

// publishError explains why the rename into path failed.
func (s *Store) publishError(path string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Lstat(path); serr == nil && fi.IsDir() {
			return fmt.Errorf("a directory of other keys has this name: %w", err)
		}
		return storage.ErrExist
	}
	if errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTEMPTY) {
		return fmt.Errorf("a directory of other keys has this name: %w", err)
	}
	return err
}

// createTemp creates a temporary file in dir, creating dir if needed. A
// concurrent Delete may remove dir as empty between the two steps, so a
// vanished directory is recreated a few times before giving up.
func createTemp(dir string) (*os.File, error) {
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o755); err != nil {
			if errors.Is(err, syscall.ENOTDIR) {
				return nil, fmt.Errorf("a parent of the key is another key: %w", err)
			}
			return nil, err
		}
		var f *os.File
		f, err = os.CreateTemp(dir, tempPrefix+"*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// copyCRC copies r to w and returns the CRC32C and length of what it copied.
func copyCRC(w io.Writer, r io.Reader) (crc uint32, n int64, err error) {
	buf := make([]byte, copyBufferSize)
	for {
		nr, rerr := r.Read(buf)
		if nr > 0 {
			crc = storage.UpdateCRC32C(crc, buf[:nr])
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return 0, n, fmt.Errorf("write: %w", werr)
			}
		}
		if rerr == io.EOF {
			return crc, n, nil
		}
		if rerr != nil {
			return 0, n, fmt.Errorf("read source: %w", rerr)
		}
	}
}

// ctxReader stops a copy once its context ends: readers such as pipes
// would otherwise keep a cancelled Put going.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Open implements storage.Storage.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	f, crc, ok, err := s.open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	if !ok {
		return f, nil
	}
	return storage.NewVerifyingReader(f, key, crc), nil
}

// OpenRange implements storage.Storage. An offset at or past the end reads
// nothing.
func (s *Store) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("open %s: negative offset %d", key, offset)
	}
	f, _, _, err := s.open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	if length < 0 {
		length = math.MaxInt64 // NewSectionReader caps offset+length
	}
	return &sectionCloser{SectionReader: io.NewSectionReader(f, offset, length), f: f}, nil
}

type sectionCloser struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionCloser) Close() error { return s.f.Close() }

// open opens key's file and reads its recorded checksum; ok is false when
// the file has none. Its errors name the key but not the operation.
func (s *Store) open(ctx context.Context, key string) (f *os.File, crc uint32, ok bool, err error) {
	path, err := s.path(key)
	if err != nil {
		return nil, 0, false, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, false, fmt.Errorf("%s: %w", key, err)
	}
	f, err = os.Open(path)
	if err != nil {
		return nil, 0, false, fmt.Errorf("%s: %w", key, notExist(err))
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = storage.ErrNotExist // a directory of other keys
	}
	if err == nil {
		crc, ok, err = getCRC(f)
	}
	if err != nil {
		f.Close()
		return nil, 0, false, fmt.Errorf("%s: %w", key, err)
	}
	return f, crc, ok, nil
}

// Stat implements storage.Storage.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	f, crc, _, err := s.open(ctx, key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), CRC32C: crc}, nil
}

// List implements storage.Storage. It reads each file's checksum attribute,
// so ObjectInfo.CRC32C is set.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	// Only the directory named by the prefix's completed segments can hold
	// matches; walking just it keeps listing one stream's segments cheap.
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	var out []storage.ObjectInfo
	err := filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			// Gone (a concurrent Delete) or not a directory (the prefix
			// names an object): nothing to list there.
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if path == start && !d.IsDir() {
			return nil // the prefix's directory part is an object, not a directory
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.root, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := statFile(key, path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// WalkDir visits names in directory order, which is not key order when
	// a name sorts before "/" (e.g. "a-x" against "a/b").
	slices.SortFunc(out, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

func statFile(key, path string) (storage.ObjectInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	crc, _, err := getCRC(f)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), CRC32C: crc}, nil
}

// Delete implements storage.Storage. It also removes the key's parent
// directories that it leaves empty, up to the root, so that deleting old
// segments does not leave a tree of empty directories to walk.
func (s *Store) Delete(ctx context.Context, key string) error {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(notExist(err), storage.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if fi.IsDir() {
		return nil // a directory of other keys, not an object
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	// Best effort: the deletion stands even if its directory entry is not
	// yet durable; a crash at worst brings back an object meant to go.
	_ = syncDir(dir)
	for dir != s.root && strings.HasPrefix(dir, s.root+string(filepath.Separator)) {
		// rmdir fails on a non-empty directory, which is where to stop.
		if unix.Rmdir(dir) != nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// notExist turns the errors meaning "no such file" into storage.ErrNotExist.
// ENOTDIR means a parent is a file: no object can be under it.
func notExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return storage.ErrNotExist
	}
	return err
}

// syncDir fsyncs a directory, making the entries created or removed in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// setCRC records crc on f.
func setCRC(f *os.File, crc uint32) error {
	v := fmt.Appendf(nil, "%08x", crc)
	return unix.Fsetxattr(int(f.Fd()), xattrCRC, v, 0)
}

// getCRC reads f's recorded checksum; ok is false when it has none.
func getCRC(f *os.File) (crc uint32, ok bool, err error) {
	var buf [16]byte
	n, err := unix.Fgetxattr(int(f.Fd()), xattrCRC, buf[:])
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read checksum attribute: %w", err)
	}
	v, err := strconv.ParseUint(string(buf[:n]), 16, 32)
	if err != nil {
		// A damaged attribute cannot vouch for the bytes: report it as
		// a checksum failure rather than serve them unverified.
		return 0, false, fmt.Errorf("%w: checksum attribute %q is not hex", storage.ErrChecksum, buf[:n])
	}
	return uint32(v), true, nil
}
