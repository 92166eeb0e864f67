package binlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// DefaultCompactInterval is how often the agent compacts closed binlog files.
const DefaultCompactInterval = 10 * time.Minute

// Compactor merges the many small segments of a closed binlog file (one a
// second under load) into one object, so that listing and restoring a day
// of archive reads a few hundred objects, not tens of thousands. It writes
// the merged segment (data, then record, create-only) before deleting the
// small ones (records, then data); readers prefer the widest segment, so the
// archive is whole at every moment, and a crash in between leaves covered
// segments that the next run deletes.
//
// The compactor writes under the writer generation of the agent's uploader
// (Gen), and before it deletes anything it checkpoints (Checkpoint): it
// claims a new generation fenced at the uploader's exact end, which fails if
// another writer took the archive over meanwhile. A superseded agent so
// never deletes what the archive's writer relies on.
type Compactor struct {
	Store   storage.Storage
	Logger  *slog.Logger
	Metrics *Metrics
	// Interval between runs (default DefaultCompactInterval).
	Interval time.Duration
	// Gen returns the writer generation to store under (0: none yet, and
	// nothing is compacted).
	Gen func() catalog.Generation
	// Checkpoint claims a new writer generation before deletions (see
	// Uploader.Checkpoint).
	Checkpoint func(ctx context.Context) error

	checkpointed bool // in this run
}

// Run compacts every Interval until ctx ends.
func (c *Compactor) Run(ctx context.Context) error {
	if c.Interval <= 0 {
		c.Interval = DefaultCompactInterval
	}
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := c.Compact(ctx); errors.Is(err, catalog.ErrFenced) {
			return err
		} else if err != nil && ctx.Err() == nil {
			c.logger().Warn("compaction", "err", err)
			c.Metrics.error("compact")
		} else if n > 0 {
			c.logger().Info("compacted closed binlog files", "files", n)
		}
	}
}

func (c *Compactor) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Compact merges the segments of every closed file and removes segments a
// wider one covers. It returns the number of files merged.
func (c *Compactor) Compact(ctx context.Context) (int, error) {
	if c.Gen == nil || c.Gen() == 0 || c.Checkpoint == nil {
		return 0, nil
	}
	c.checkpointed = false
	arch, err := catalog.Load(ctx, c.Store, catalog.LoadOptions{})
	if err != nil {
		return 0, err
	}
	merged := 0
	for _, tl := range arch.Timelines {
		if issues := arch.IssuesOn(tl.ID); len(issues) > 0 {
			c.logger().Warn("not compacting a timeline with objects that cannot be used (run mysql-pitr verify)",
				"timeline", tl.ID.String(), "first", issues[0].String(), "issues", len(issues))
			continue
		}
		if err := c.dropCovered(ctx, tl); err != nil {
			return merged, err
		}
		byFile := map[uint64][]*catalog.Segment{}
		var order []uint64
		for _, s := range tl.Segments {
			if _, ok := byFile[s.FileNum]; !ok {
				order = append(order, s.FileNum)
			}
			byFile[s.FileNum] = append(byFile[s.FileNum], s)
		}
		// The newest file of the timeline may still grow: leave it.
		for i := 0; i+1 < len(order); i++ {
			segs := byFile[order[i]]
			if len(segs) < 2 || !contiguous(segs) {
				continue
			}
			if err := c.merge(ctx, segs); err != nil {
				return merged, err
			}
			merged++
		}
	}
	return merged, nil
}

func contiguous(segs []*catalog.Segment) bool {
	for i := 1; i < len(segs); i++ {
		if segs[i].Start != segs[i-1].End {
			return false
		}
	}
	return true
}

// dropCovered deletes segments that a wider segment of the same file covers.
func (c *Compactor) dropCovered(ctx context.Context, tl *catalog.TimelineState) error {
	objs, err := c.Store.List(ctx, catalog.TimelinePrefix(tl.ID))
	if err != nil {
		return err
	}
	for _, o := range objs {
		ref, isRecord, err := catalog.ParseSegmentKey(o.Key)
		if err != nil || !isRecord {
			continue
		}
		for _, s := range tl.Segments {
			r := s.Ref()
			if r != ref && r.FileNum == ref.FileNum && r.Start <= ref.Start && ref.End <= r.End {
				if err := c.remove(ctx, ref); err != nil {
					return err
				}
				break
			}
		}
	}
	return nil
}

// remove deletes a segment, after a checkpoint proved in this run that no
// other writer has taken the archive over.
func (c *Compactor) remove(ctx context.Context, ref catalog.SegmentRef) error {
	if !c.checkpointed {
		if err := c.Checkpoint(ctx); err != nil {
			return err
		}
		c.checkpointed = true
	}
	if err := c.Store.Delete(ctx, ref.RecordKey()); err != nil {
		return err
	}
	return c.Store.Delete(ctx, ref.DataKey())
}

// merge writes one segment covering segs, then deletes them.
func (c *Compactor) merge(ctx context.Context, segs []*catalog.Segment) error {
	first := segs[0]
	rec := mergedRecord(segs, c.Gen())
	ref := rec.Ref()
	info, sum, err := c.putMergedData(ctx, segs, ref.DataKey())
	if err != nil && !errors.Is(err, storage.ErrExist) {
		return fmt.Errorf("compact %s: %w", first.File, err)
	}
	if errors.Is(err, storage.ErrExist) {
		if rec, err = c.leftMerged(ctx, ref, first.File); err != nil {
			return err
		}
	} else {
		rec.SHA256 = sum
		rec.StoredSize = info.Size
		rec.ArchivedAt = time.Now().UTC()
		if err := catalog.PutJSON(ctx, c.Store, ref.RecordKey(), &rec, true); err != nil {
			return fmt.Errorf("compact %s: %w", first.File, err)
		}
	}
	for _, s := range segs {
		if s.Ref() == ref {
			continue
		}
		if err := c.remove(ctx, s.Ref()); err != nil {
			return fmt.Errorf("compact %s: remove merged segment: %w", first.File, err)
		}
	}
	return nil
}

// mergedRecord is the record of one segment covering the contiguous
// segments segs, to be stored under writer generation gen; what only the
// stored data can tell (digest, size, time) is left to fill in.
func mergedRecord(segs []*catalog.Segment, gen catalog.Generation) catalog.Segment {
	first, last := segs[0], segs[len(segs)-1]
	rec := *last
	rec.Start, rec.Prev, rec.Gen = first.Start, first.Prev, gen
	rec.Events, rec.Transactions = 0, 0
	rec.FirstEventTime, rec.FirstCommitTime, rec.FirstGTID = first.FirstEventTime, time.Time{}, ""
	rec.LastCommitTime, rec.LastGTID, rec.GTIDs, rec.UnknownGTIDs = time.Time{}, "", nil, 0
	for _, s := range segs {
		rec.GTIDs = catalog.MergeGTIDRanges(rec.GTIDs, s.GTIDs)
		rec.UnknownGTIDs += s.UnknownGTIDs
		rec.Events += s.Events
		rec.Transactions += s.Transactions
		if rec.FirstCommitTime.IsZero() {
			rec.FirstCommitTime = s.FirstCommitTime
		}
		if !s.LastCommitTime.IsZero() {
			rec.LastCommitTime = s.LastCommitTime
		}
		if rec.FirstGTID == "" {
			rec.FirstGTID = s.FirstGTID
		}
		if s.LastGTID != "" {
			rec.LastGTID = s.LastGTID
		}
	}
	if rec.TxnEnd == 0 {
		for i := len(segs) - 1; i >= 0 && rec.TxnEnd == 0; i-- {
			rec.TxnEnd = segs[i].TxnEnd
		}
	}
	return rec
}

// putMergedData stores the data of segs, one after the other and
// compressed again as one object, under key, create-only. It returns the
// stored object and the hex SHA-256 of the uncompressed bytes.
func (c *Compactor) putMergedData(ctx context.Context, segs []*catalog.Segment, key string) (storage.ObjectInfo, string, error) {
	pr, pw := io.Pipe()
	sha := sha256.New()
	go func() {
		pw.CloseWithError(c.compressSegments(ctx, segs, pw, sha))
	}()
	info, err := c.Store.Put(ctx, key, pr, storage.PutOptions{IfNotExists: true})
	pr.CloseWithError(errors.New("put ended"))
	if err != nil {
		return info, "", err
	}
	return info, hex.EncodeToString(sha.Sum(nil)), nil
}

// compressSegments writes the data of segs to dst as one zstd stream, and
// their uncompressed bytes to sum.
func (c *Compactor) compressSegments(ctx context.Context, segs []*catalog.Segment, dst io.Writer, sum hash.Hash) error {
	enc, err := zstd.NewWriter(dst, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	for _, s := range segs {
		rc, err := OpenSegment(ctx, c.Store, s)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.MultiWriter(enc, sum), rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return enc.Close()
}

// leftMerged returns the record of a merged object, at ref, that an
// interrupted run left: its record decides whether it is whole. Data
// without a record is not part of the archive: it is dropped, to be merged
// again next run, and merging file fails for now.
func (c *Compactor) leftMerged(ctx context.Context, ref catalog.SegmentRef, file string) (catalog.Segment, error) {
	var have catalog.Segment
	if gerr := catalog.GetJSON(ctx, c.Store, ref.RecordKey(), &have); gerr != nil {
		if errors.Is(gerr, storage.ErrNotExist) {
			if derr := c.Store.Delete(ctx, ref.DataKey()); derr != nil {
				return have, derr
			}
			return have, fmt.Errorf("compact %s: removed a merged object left without its record; retrying later", file)
		}
		return have, gerr
	}
	return have, nil
}
