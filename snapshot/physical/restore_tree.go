package physical

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// restoreTree is Restore for a snapshot whose stream is a tar of a
// finished clone: the parts are checked and unpacked into a staging
// directory beside datadir, the clone's own record of its binlog position
// is compared with the manifest's, and the files are moved into datadir
// only then. The server starts on them as they are (its first start
// recovers them as after a crash).
func restoreTree(ctx context.Context, st storage.Storage, m *catalog.Manifest, datadir string, opts RestoreOptions, log *slog.Logger) (catalog.Position, error) {
	return restoreStaged(ctx, m, datadir, opts, log, func(staging string) error {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return fmt.Errorf("zstd decoder: %w", err)
		}
		defer dec.Close()
		r := &partReader{ctx: ctx, st: st, m: m, dec: dec, sum: sha256.New(), progress: opts.Progress}
		defer r.close()
		if err := extractTree(ctx, r, staging); err != nil {
			// A damaged part explains a broken stream best.
			if rerr := r.err; rerr != nil {
				err = rerr
			}
			return err
		}
		// What follows the tar's end is part of the last part's checksum.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		cs, err := readCloneStatus(staging)
		if err != nil {
			return err
		}
		if cs.Binlog != m.Binlog || cs.GTID != m.GTIDSet {
			return fmt.Errorf("the clone says binlog position %s, GTID set %q; the manifest says %s, %q",
				cs.Binlog, cs.GTID, m.Binlog, m.GTIDSet)
		}
		return nil
	})
}

// partReader reads a snapshot's parts, decompressed, as one stream,
// checking each part's size and SHA-256 at its end: a mismatch is the
// stream's error, wrapping storage.ErrChecksum, and stays in err.
type partReader struct {
	ctx      context.Context
	st       storage.Storage
	m        *catalog.Manifest
	dec      *zstd.Decoder
	sum      hash.Hash
	progress func(int64)

	i    int           // the part being read
	rc   io.ReadCloser // nil between parts
	n    int64         // bytes of part i so far
	done int64         // bytes of the stream so far
	err  error
}

func (r *partReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		if r.rc == nil {
			if r.i == len(r.m.Objects) {
				return 0, io.EOF
			}
			key := catalog.SnapshotObjectKey(r.m.ID, r.m.Objects[r.i].Name)
			rc, err := r.st.Open(r.ctx, key)
			if err != nil {
				r.err = fmt.Errorf("open %s: %w", key, err)
				return 0, r.err
			}
			if err := r.dec.Reset(rc); err != nil {
				rc.Close()
				r.err = fmt.Errorf("read %s: %w", key, err)
				return 0, r.err
			}
			r.rc, r.n = rc, 0
			r.sum.Reset()
		}
		o := r.m.Objects[r.i]
		key := catalog.SnapshotObjectKey(r.m.ID, o.Name)
		n, err := r.dec.Read(p)
		r.sum.Write(p[:n])
		r.n += int64(n)
		r.done += int64(n)
		if n > 0 && r.progress != nil {
			r.progress(r.done)
		}
		if errors.Is(err, io.EOF) {
			r.rc.Close()
			r.rc = nil
			r.i++
			if r.n != o.Size {
				r.err = fmt.Errorf("read %s: %w: %d bytes, manifest says %d", key, storage.ErrChecksum, r.n, o.Size)
				return n, r.err
			}
			if got := hex.EncodeToString(r.sum.Sum(nil)); got != o.SHA256 {
				r.err = fmt.Errorf("read %s: %w: sha256 %s, manifest says %s", key, storage.ErrChecksum, got, o.SHA256)
				return n, r.err
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			r.err = fmt.Errorf("read %s: %w", key, err)
			return n, r.err
		}
		return n, nil
	}
}

func (r *partReader) close() {
	if r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
}
