package binlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ErrCorrupt is wrapped by errors about archived bytes that do not match their index record.
var ErrCorrupt = errors.New("archived segment is corrupt")

// OpenSegment returns the segment's uncompressed binlog bytes. The reader
// checks the length and SHA-256 recorded in the index record and fails
// with ErrCorrupt instead of returning io.EOF when they differ.
func OpenSegment(ctx context.Context, st storage.Storage, seg *catalog.Segment) (io.ReadCloser, error) {
	rc, err := st.Open(ctx, seg.Ref().DataKey())
	if err != nil {
		return nil, fmt.Errorf("open segment %s: %w", seg.Ref().DataKey(), err)
	}
	src := &errRecorder{r: rc}
	dec, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("open segment %s: %w", seg.Ref().DataKey(), err)
	}
	return &segmentReader{seg: seg, rc: rc, src: src, dec: dec, sha: sha256.New()}, nil
}

// errRecorder remembers whether reading from storage itself failed, to tell
// an unreachable object from a damaged one.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

type segmentReader struct {
	seg *catalog.Segment
	rc  io.ReadCloser
	src *errRecorder
	dec *zstd.Decoder
	sha hash.Hash
	n   uint64
}

func (r *segmentReader) Read(p []byte) (int, error) {
	n, err := r.dec.Read(p)
	r.sha.Write(p[:n])
	r.n += uint64(n)
	if r.n > r.seg.Size() {
		return n, fmt.Errorf("%w: %s holds more than the %d bytes recorded", ErrCorrupt, r.seg.Ref().DataKey(), r.seg.Size())
	}
	if errors.Is(err, io.EOF) {
		if r.n != r.seg.Size() {
			return n, fmt.Errorf("%w: %s holds %d bytes, the record says %d", ErrCorrupt, r.seg.Ref().DataKey(), r.n, r.seg.Size())
		}
		if got := hex.EncodeToString(r.sha.Sum(nil)); got != r.seg.SHA256 {
			return n, fmt.Errorf("%w: %s sha256 %s, the record says %s", ErrCorrupt, r.seg.Ref().DataKey(), got, r.seg.SHA256)
		}
		return n, io.EOF
	}
	if err != nil {
		if r.src.err == nil {
			// The decoder stops at damage before the store reaches the end,
			// where it checks the object's checksum: reading the rest tells
			// bytes changed in storage from bytes stored as written.
			_, _ = io.Copy(io.Discard, r.src)
		}
		if r.src.err == nil {
			return n, fmt.Errorf("%w: %s does not decompress: %v", ErrCorrupt, r.seg.Ref().DataKey(), err)
		}
		return n, fmt.Errorf("read segment %s: %w", r.seg.Ref().DataKey(), r.src.err)
	}
	return n, nil
}

func (r *segmentReader) Close() error {
	r.dec.Close()
	return r.rc.Close()
}

// FetchResult describes one binlog file written by Fetch.
type FetchResult struct {
	Name  string
	Path  string
	Start uint64
	End   uint64
	// Partial is set when the archive holds only part of the file (it
	// continues on the server, or the file's head is older than the timeline).
	Partial bool
}

// Fetch writes a timeline's archived binlog back out as ordinary binlog
// files in dir, with the server's file names, verifying every segment. A
// file whose archive starts after position 4 cannot be made readable and is
// an error; a hole inside the timeline is an error.
func Fetch(ctx context.Context, st storage.Storage, tl *catalog.TimelineState, dir string) ([]FetchResult, error) {
	return FetchProgress(ctx, st, tl, dir, nil)
}

// FetchProgress is Fetch calling progress, when not nil, after each segment
// with the binlog bytes written so far.
func FetchProgress(ctx context.Context, st storage.Storage, tl *catalog.TimelineState, dir string, progress func(done int64)) ([]FetchResult, error) {
	if holes := tl.Holes(); len(holes) > 0 {
		return nil, fmt.Errorf("timeline %s has a hole between %s and %s", tl.ID, holes[0].After, holes[0].Before)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []FetchResult
	var f *os.File
	var cur *FetchResult
	var done int64
	finish := func() error {
		if f == nil {
			return nil
		}
		err := f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), cur.Path)
		}
		f = nil
		out = append(out, *cur)
		return err
	}
	for _, seg := range tl.Segments {
		if cur == nil || cur.Name != seg.File {
			if err := finish(); err != nil {
				return out, err
			}
			if seg.Start != FirstEventPos {
				return out, fmt.Errorf("timeline %s holds %s only from position %d; a binlog file cannot start there", tl.ID, seg.File, seg.Start)
			}
			if filepath.Base(seg.File) != seg.File {
				return out, fmt.Errorf("segment record names an unsafe file %q", seg.File)
			}
			path := filepath.Join(dir, seg.File)
			var err error
			f, err = os.Create(path + ".partial")
			if err != nil {
				return out, err
			}
			if _, err := f.Write(Magic); err != nil {
				return out, err
			}
			cur = &FetchResult{Name: seg.File, Path: path, Start: seg.Start, End: seg.Start, Partial: true}
		}
		rc, err := OpenSegment(ctx, st, seg)
		if err != nil {
			return out, err
		}
		_, err = io.Copy(f, rc)
		rc.Close()
		if err != nil {
			return out, err
		}
		cur.End = seg.End
		cur.Partial = !seg.FileEnds
		if progress != nil {
			done += int64(seg.End - seg.Start)
			progress(done)
		}
	}
	if err := finish(); err != nil {
		return out, err
	}
	return out, nil
}
