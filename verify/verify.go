// Package verify reads a whole archive once, read-only and without locks,
// and reports what can be believed: per snapshot whether all its objects are
// present and match their checksums, whether it can be restored, and the
// window it serves; per timeline every damaged segment and hole.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Report is what Run found.
type Report struct {
	Snapshots []SnapshotReport `json:"snapshots"`
	Timelines []TimelineReport `json:"timelines"`
	Gaps      []catalog.Gap    `json:"gaps"`
	Windows   []catalog.Window `json:"windows"`
	// Partial are snapshots without a manifest.
	Partial []catalog.SnapshotID `json:"partial_snapshots,omitempty"`
	// Damaged is set when any snapshot or segment is bad or a timeline has a hole.
	Damaged bool `json:"damaged"`
	// Bytes is how much was read.
	Bytes    int64         `json:"bytes_read"`
	Duration time.Duration `json:"duration_ns"`
}

// SnapshotReport is one snapshot's verdict.
type SnapshotReport struct {
	ID     catalog.SnapshotID `json:"id"`
	Method string             `json:"method"`
	// Consistent: every object is present and matches its size and SHA-256.
	Consistent bool `json:"consistent"`
	// Restorable: consistent, and the archive reaches from its position on.
	Restorable bool     `json:"restorable"`
	Problems   []string `json:"problems,omitempty"`
	// Window is the recoverable window the snapshot starts, when restorable.
	Window *catalog.Window `json:"window,omitempty"`
}

// TimelineReport is one timeline's verdict.
type TimelineReport struct {
	ID       catalog.TimelineID `json:"timeline"`
	Segments int                `json:"segments"`
	// Bad lists segments whose bytes do not match their index record.
	Bad     []string       `json:"bad_segments,omitempty"`
	Holes   []catalog.Hole `json:"holes,omitempty"`
	Orphans []string       `json:"orphans,omitempty"`
}

// Options adjust Run.
type Options struct {
	// Concurrency bounds parallel reads (default 4).
	Concurrency int
	Logger      *slog.Logger
}

// Run verifies everything the archive holds.
func Run(ctx context.Context, st storage.Storage, opts Options) (*Report, error) {
	begin := time.Now()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return nil, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return nil, err
	}
	r := &Report{Gaps: arch.Gaps(), Partial: snaps.Partial}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	bad := map[catalog.SegmentRef]string{}
	for _, tl := range arch.Timelines {
		for _, seg := range tl.Segments {
			g.Go(func() error {
				n, err := readSegment(gctx, st, seg)
				mu.Lock()
				defer mu.Unlock()
				r.Bytes += n
				if err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					bad[seg.Ref()] = err.Error()
				}
				return nil
			})
		}
	}
	snapProblems := make([][]string, len(snaps.Complete))
	for i, m := range snaps.Complete {
		for _, o := range m.Objects {
			g.Go(func() error {
				n, err := readObject(gctx, st, m.ID, o)
				mu.Lock()
				defer mu.Unlock()
				r.Bytes += n
				if err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					snapProblems[i] = append(snapProblems[i], err.Error())
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	// A damaged segment breaks the chain just as a missing one does: judge
	// restorability on the archive without them.
	whole := &catalog.Archive{}
	for _, tl := range arch.Timelines {
		tr := TimelineReport{ID: tl.ID, Segments: len(tl.Segments), Holes: tl.Holes(), Orphans: tl.Orphans}
		kept := *tl
		kept.Segments = nil
		for _, seg := range tl.Segments {
			if why, ok := bad[seg.Ref()]; ok {
				tr.Bad = append(tr.Bad, fmt.Sprintf("%s: %s", seg.Ref().DataKey(), why))
				continue
			}
			kept.Segments = append(kept.Segments, seg)
		}
		if len(tr.Bad) > 0 || len(tr.Holes) > 0 {
			r.Damaged = true
		}
		r.Timelines = append(r.Timelines, tr)
		whole.Timelines = append(whole.Timelines, &kept)
	}
	var good []*catalog.Manifest
	for i, m := range snaps.Complete {
		sr := SnapshotReport{ID: m.ID, Method: m.Method, Problems: snapProblems[i], Consistent: len(snapProblems[i]) == 0}
		if sr.Consistent {
			good = append(good, m)
			if _, err := restore.Make(whole, []*catalog.Manifest{m}, restore.Target{Kind: restore.Latest}, time.Now()); err != nil {
				sr.Problems = append(sr.Problems, strings.TrimPrefix(err.Error(), restore.ErrRefused.Error()+": "))
			} else {
				sr.Restorable = true
			}
		} else {
			r.Damaged = true
		}
		r.Snapshots = append(r.Snapshots, sr)
	}
	r.Windows = catalog.Windows(whole, good)
	for i := range r.Snapshots {
		for _, w := range r.Windows {
			for _, id := range w.Snapshots {
				if id == r.Snapshots[i].ID && r.Snapshots[i].Restorable {
					win := w
					r.Snapshots[i].Window = &win
				}
			}
		}
	}
	r.Duration = time.Since(begin)
	return r, nil
}

// readSegment reads a segment through, which checks its length and SHA-256.
func readSegment(ctx context.Context, st storage.Storage, seg *catalog.Segment) (int64, error) {
	rc, err := binlog.OpenSegment(ctx, st, seg)
	if err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return 0, errors.New("data object is missing")
		}
		return 0, err
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	return n, err
}

// readObject reads a snapshot object, decompressing it, and checks its
// size and SHA-256 against the manifest.
func readObject(ctx context.Context, st storage.Storage, id catalog.SnapshotID, o catalog.SnapshotObject) (int64, error) {
	key := catalog.SnapshotObjectKey(id, o.Name)
	rc, err := st.Open(ctx, key)
	if err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return 0, fmt.Errorf("%s is missing", key)
		}
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	defer rc.Close()
	var src io.Reader = rc
	if strings.HasSuffix(o.Name, ".zst") {
		dec, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		defer dec.Close()
		src = dec
	}
	h := sha256.New()
	n, err := io.Copy(h, src)
	if err != nil {
		return n, fmt.Errorf("%s: %w", key, err)
	}
	if n != o.Size {
		return n, fmt.Errorf("%s holds %d bytes, the manifest says %d", key, n, o.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != o.SHA256 {
		return n, fmt.Errorf("%s: sha256 %s, the manifest says %s", key, got, o.SHA256)
	}
	return n, nil
}
