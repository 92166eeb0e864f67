package physical

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ErrDatadirNotEmpty is returned (wrapped) by Restore when the target
// datadir holds files: a restore never mixes its files with others.
var ErrDatadirNotEmpty = errors.New("datadir is not empty")

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// ToolPath is the backup tool that prepares the restored files; empty
	// means the manifest flavor's tool on PATH.
	ToolPath string
	// ExtractorPath is mbstream or xbstream; empty means the one beside the
	// tool, else on PATH.
	ExtractorPath string
	// PrepareMemory is the tool's --use-memory for --prepare, e.g. "1G";
	// empty leaves the tool's default.
	PrepareMemory string
	// Progress, when set, is called with the stream's bytes extracted so
	// far, after each MiB or so, from one goroutine.
	Progress func(done int64)
	// User, when set and the process runs as root, owns the restored files
	// (the server's account, usually "mysql"). Ignored when not root.
	User string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Restore restores a physical snapshot into datadir, which must be empty
// (but for lost+found) or not exist; its parent must exist. It streams the
// snapshot's parts through SHA-256 and zstd into the extractor, into a
// staging directory beside datadir (so the final move is a rename on one
// filesystem), prepares the files with the tool, and only then moves them
// into datadir. A MySQL clone's snapshot (a tar of a recovered clone)
// needs neither extractor nor tool: it is unpacked here and needs no
// prepare. A part whose checksum, size or decompression fails stops the
// restore before datadir is touched, with an error wrapping
// storage.ErrChecksum for a checksum or size mismatch; the staging
// directory is removed on any error.
//
// It returns the binlog position the restored data is consistent with: the
// manifest's, checked against the position the tool wrote into the backup.
// The server's binlog from there on replays every later transaction.
func Restore(ctx context.Context, st storage.Storage, m *catalog.Manifest, datadir string, opts RestoreOptions) (catalog.Position, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "snapshot", "method", catalog.MethodPhysical, "id", string(m.ID))
	if err := checkRestorable(m); err != nil {
		return catalog.Position{}, err
	}
	datadir, err := filepath.Abs(datadir)
	if err != nil {
		return catalog.Position{}, fmt.Errorf("datadir %s: %w", datadir, err)
	}
	if _, err := checkEmptyDir(datadir); err != nil {
		return catalog.Position{}, err
	}
	format, err := formatOf(m)
	if err != nil {
		return catalog.Position{}, err
	}
	if format == formatTar {
		return restoreTree(ctx, st, m, datadir, opts, log)
	}
	tool, extractor, err := restoreTools(ctx, m, opts)
	if err != nil {
		return catalog.Position{}, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
	}
	return restoreStaged(ctx, m, datadir, opts, log, func(staging string) error {
		if err := extract(ctx, st, m, extractor, staging, opts.Progress); err != nil {
			return err
		}
		if err := checkBinlogInfo(staging, m.Binlog); err != nil {
			return err
		}
		return prepareBackup(ctx, tool, staging, opts.PrepareMemory)
	})
}

// checkRestorable refuses a manifest that is not of a physical snapshot
// with parts.
func checkRestorable(m *catalog.Manifest) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if m.Method != catalog.MethodPhysical {
		return fmt.Errorf("restore snapshot %s: method is %s, not %s", m.ID, m.Method, catalog.MethodPhysical)
	}
	if len(m.Objects) == 0 {
		return fmt.Errorf("restore snapshot %s: manifest lists no objects", m.ID)
	}
	return nil
}

// restoreTools finds the backup tool and its stream extractor for m,
// checking that the tool was built for the snapshot's server release.
func restoreTools(ctx context.Context, m *catalog.Manifest, opts RestoreOptions) (tool, extractor string, err error) {
	pt := backupToolFor(binlog.Flavor(m.Flavor))
	if tool, err = pt.find(opts.ToolPath); err != nil {
		return "", "", err
	}
	if _, err := checkedVersion(ctx, tool, m.ServerVersion); err != nil {
		return "", "", err
	}
	if extractor, err = pt.findExtractor(opts.ExtractorPath, tool); err != nil {
		return "", "", err
	}
	return tool, extractor, nil
}

// restoreStaged has fill write the snapshot's files into a staging
// directory beside datadir (so the final move is a rename on one
// filesystem), gives them to opts.User, and only then moves them into
// datadir. The staging directory is removed on any error.
func restoreStaged(ctx context.Context, m *catalog.Manifest, datadir string, opts RestoreOptions, log *slog.Logger,
	fill func(staging string) error) (catalog.Position, error) {
	staging, err := snapshot.Staging(datadir)
	if err != nil {
		return catalog.Position{}, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
	}
	moved := false
	defer func() {
		if !moved {
			os.RemoveAll(staging)
		}
	}()
	log.Info("restoring physical snapshot", "datadir", datadir, "staging", staging, "parts", len(m.Objects), "bytes", m.Bytes)
	if err := fill(staging); err != nil {
		return catalog.Position{}, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
	}
	if opts.User != "" && os.Geteuid() == 0 {
		if err := chownTree(staging, opts.User); err != nil {
			return catalog.Position{}, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return catalog.Position{}, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
	}
	if err := snapshot.MoveInto(staging, datadir); err != nil {
		return catalog.Position{}, fmt.Errorf("restore snapshot %s: %w", m.ID, err)
	}
	moved = true
	log.Info("physical snapshot restored", "datadir", datadir, "binlog", m.Binlog.String(), "gtid", m.GTIDSet)
	return m.Binlog, nil
}

// checkEmptyDir reports whether dir exists, failing if it holds anything
// or is not a directory. lost+found does not count: a datadir is often the
// root of its own ext4 volume.
func checkEmptyDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	entries = slices.DeleteFunc(entries, func(e fs.DirEntry) bool { return e.Name() == "lost+found" })
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("datadir %s: %w", dir, err)
	case len(entries) > 0:
		return true, fmt.Errorf("%w: %s holds %s and %d more", ErrDatadirNotEmpty, dir, entries[0].Name(), len(entries)-1)
	}
	return true, nil
}

// extract streams every part, in order, into one extractor process. Each
// part's SHA-256 and size are checked at its end; a mismatch kills the
// extractor, so the staging directory may hold a partial stream but datadir
// holds nothing of it.
func extract(ctx context.Context, st storage.Storage, m *catalog.Manifest, extractor, staging string, progress func(int64)) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(runCtx, extractor, "-x", "-C", staging)
	ownGroup(cmd)
	cmd.Env = childenv.Environ()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("%s stdin: %w", filepath.Base(extractor), err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("%s stderr: %w", filepath.Base(extractor), err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(extractor), err)
	}
	se := &toolLog{}
	var wg sync.WaitGroup
	wg.Go(func() { se.consume(stderr) })

	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2))
	if err != nil {
		cancel()
		stdin.Close()
		wg.Wait()
		_ = cmd.Wait()
		return fmt.Errorf("zstd decoder: %w", err)
	}
	defer dec.Close()

	var feedErr error
	var w io.Writer = stdin
	if progress != nil {
		w = &countingWriter{w: stdin, report: progress}
	}
	for _, o := range m.Objects {
		if feedErr = feedPart(runCtx, st, m.ID, o, dec, w); feedErr != nil {
			break
		}
	}
	if feedErr != nil {
		cancel() // kill the extractor before it sees the end of its input
	}
	closeErr := stdin.Close()
	wg.Wait()
	waitErr := cmd.Wait()
	switch {
	case feedErr != nil && errors.Is(feedErr, syscall.EPIPE):
		// The extractor quit reading: its log says why.
		return fmt.Errorf("%s quit early: %v; its log ends:\n%s", filepath.Base(extractor), waitErr, se.Tail())
	case feedErr != nil:
		return feedErr
	case waitErr != nil:
		return fmt.Errorf("%s: %w: %s", filepath.Base(extractor), waitErr, se.Tail())
	case closeErr != nil:
		return fmt.Errorf("%s stdin: %w", filepath.Base(extractor), closeErr)
	}
	return nil
}

// feedPart decompresses one part into w, checking its SHA-256 and size.
func feedPart(ctx context.Context, st storage.Storage, id catalog.SnapshotID, o catalog.SnapshotObject, dec *zstd.Decoder, w io.Writer) error {
	key := catalog.SnapshotObjectKey(id, o.Name)
	rc, err := st.Open(ctx, key)
	if err != nil {
		return fmt.Errorf("open %s: %w", key, err)
	}
	defer rc.Close()
	if err := dec.Reset(rc); err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	sum := sha256.New()
	// The writer sees bytes before they are checked. That is safe because
	// they only reach the staging directory, which a mismatch discards.
	n, err := io.CopyBuffer(io.MultiWriter(w, sum), struct{ io.Reader }{dec}, make([]byte, copyBuffer))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if n != o.Size {
		return fmt.Errorf("read %s: %w: %d bytes, manifest says %d", key, storage.ErrChecksum, n, o.Size)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != o.SHA256 {
		return fmt.Errorf("read %s: %w: sha256 %s, manifest says %s", key, storage.ErrChecksum, got, o.SHA256)
	}
	return nil
}

// checkBinlogInfo compares the coordinates the tool wrote into the backup
// (xtrabackup_binlog_info: "FILE\tPOS[\tGTID]") with the manifest's, which
// were parsed from the tool's log.
func checkBinlogInfo(staging string, want catalog.Position) error {
	b, err := os.ReadFile(filepath.Join(staging, "xtrabackup_binlog_info"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // written only with binlog enabled; the manifest is then all we have
	}
	if err != nil {
		return fmt.Errorf("read xtrabackup_binlog_info: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return fmt.Errorf("xtrabackup_binlog_info %q is not FILE POS", programs.FirstLine(string(b)))
	}
	pos, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil || f[0] != want.File || pos != want.Pos {
		return fmt.Errorf("the backup says binlog position %s:%s, manifest says %s", f[0], f[1], want)
	}
	return nil
}

// prepareBackup applies the copied redo log so that the files are consistent.
// The backup's own backup-my.cnf, not the host's option files, describes them.
func prepareBackup(ctx context.Context, tool, staging, memory string) error {
	args := []string{"--defaults-file=" + filepath.Join(staging, "backup-my.cnf"), "--prepare", "--target-dir=" + staging}
	if memory != "" {
		args = append(args, "--use-memory="+memory)
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	ownGroup(cmd)
	cmd.Env = childenv.Environ()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("%s --prepare: %w", filepath.Base(tool), err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s --prepare: %w", filepath.Base(tool), err)
	}
	se := &toolLog{}
	se.consume(stderr)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s --prepare: %w; its log ends:\n%s", filepath.Base(tool), err, se.Tail())
	}
	if !se.completed {
		return fmt.Errorf("%s --prepare exited without reporting \"completed OK!\"; its log ends:\n%s", filepath.Base(tool), se.Tail())
	}
	return nil
}

// chownTree gives every restored file to the named user and its group.
func chownTree(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", path, err)
		}
		return nil
	})
}

// countingWriter reports the bytes written through it.
type countingWriter struct {
	w      io.Writer
	n      int64
	report func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}
