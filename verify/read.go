package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// dataReads reads the archive's data in one bounded group of goroutines,
// adding up in the report the bytes read.
type dataReads struct {
	g  *errgroup.Group
	st storage.Storage
	mu sync.Mutex // guards r and segments
	r  *Report
	// segments is what reading each segment found.
	segments map[*catalog.Segment]segmentRead
}

// snapshotPoints returns, for each segment that holds a snapshot's position
// inside it, those positions: where readSegment notes the GTIDs on either
// side, for gtidStateMismatch.
func snapshotPoints(arch *catalog.Archive, snaps []*snapshotState) map[*catalog.Segment][]uint64 {
	points := map[*catalog.Segment][]uint64{}
	for _, s := range snaps {
		if s.m == nil {
			continue
		}
		if _, seg := place(arch, s.m); seg != nil && seg.Start < s.m.Binlog.Pos && s.m.Binlog.Pos < seg.End {
			points[seg] = append(points[seg], s.m.Binlog.Pos)
		}
	}
	return points
}

// readSegments reads every segment Load kept.
func (d *dataReads) readSegments(ctx context.Context, arch *catalog.Archive, points map[*catalog.Segment][]uint64) {
	for _, tl := range arch.Timelines {
		for _, seg := range tl.Segments {
			d.g.Go(func() error {
				res, err := readSegment(ctx, d.st, seg, points[seg])
				if err != nil {
					return err
				}
				d.mu.Lock()
				defer d.mu.Unlock()
				d.r.Bytes += res.n
				d.segments[seg] = res
				return nil
			})
		}
	}
}

// readSnapshotObjects reads every object of every snapshot of ours whose
// listed size matches its manifest's, and adds an unusable object to its
// snapshot's problems.
func (d *dataReads) readSnapshotObjects(ctx context.Context, snaps []*snapshotState, listing []storage.ObjectInfo) {
	sizes := map[string]int64{}
	for _, o := range listing {
		sizes[o.Key] = o.Size
	}
	for _, s := range snaps {
		if s.report.Foreign || s.m == nil {
			continue
		}
		for _, o := range s.m.Objects {
			key := catalog.SnapshotObjectKey(s.m.ID, o.Name)
			if issue := sizeIssue(key, sizes, o.StoredSize, "the manifest"); issue != nil {
				d.mu.Lock()
				s.add(*issue)
				d.mu.Unlock()
				continue
			}
			d.g.Go(func() error {
				n, issue := readObject(ctx, d.st, s.m.ID, o)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d.mu.Lock()
				defer d.mu.Unlock()
				d.r.Bytes += n
				if issue != nil {
					s.add(*issue)
				}
				return nil
			})
		}
	}
}

// segmentRead is what reading one segment's data found.
type segmentRead struct {
	n int64
	// gtids are the GTID ranges of the GTID events in the bytes; unknown
	// counts the GTID events whose GTID could not be read (see
	// catalog.Segment.UnknownGTIDs).
	gtids   []catalog.GTIDRange
	unknown int
	// issue is set when the segment cannot be used.
	issue *catalog.Issue
	// at and after hold, for each position asked for inside the segment
	// that is the start of an event, the GTID ranges of the bytes before it
	// and of the bytes from it on.
	at, after map[uint64][]catalog.GTIDRange
}

// readSegment reads a segment's data through: the reader checks its length
// and SHA-256 against the index record, and every event must sit where its
// own header says it ends, so that bytes filed at another position (or
// another file's bytes) are found even when they match their record.
// For each position in points (inside the segment) it also keeps the GTIDs
// before it and after it, when an event starts there.
func readSegment(ctx context.Context, st storage.Storage, seg *catalog.Segment, points []uint64) (segmentRead, error) {
	key := seg.Ref().DataKey()
	rc, err := binlog.OpenSegment(ctx, st, seg)
	if err != nil {
		return segmentRead{issue: classify(key, err)}, ctx.Err()
	}
	defer rc.Close()
	src := &firstErr{r: rc}
	sc := binlog.NewScanner(src, seg.Start)
	var out segmentRead
	for {
		ev, pos, err := sc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if src.err != nil {
				err = src.err
			}
			out.issue = classify(key, err)
			return out, ctx.Err()
		}
		out.n += int64(len(ev))
		if slices.Contains(points, pos) {
			if out.at == nil {
				out.at, out.after = map[uint64][]catalog.GTIDRange{}, map[uint64][]catalog.GTIDRange{}
			}
			out.at[pos] = slices.Clone(out.gtids)
			out.after[pos] = nil
		}
		h, err := binlog.ParseHeader(ev)
		if err != nil {
			out.issue = &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf("event at %d: %v", pos, err)}
			return out, nil
		}
		// log_pos is 32 bits wide: past 4 GiB it wraps, and so does this check.
		if h.NextPos != 0 && h.NextPos != uint32(pos+uint64(h.Size)) {
			out.issue = &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf(
				"the event at %d of %s ends at %d by its header, not at %d: these bytes are not %s's at this position",
				pos, seg.File, h.NextPos, pos+uint64(h.Size), seg.File)}
			return out, nil
		}
		if h.Type == binlog.MariaDBGTIDEvent || h.Type == binlog.GTIDEvent || h.Type == binlog.GTIDTaggedEvent {
			g, ok, err := binlog.EventGTID(ev)
			switch {
			case errors.Is(err, binlog.ErrUnreadableGTID):
				// The bytes match their checksum: the event is the
				// server's, in a form this version does not know.
				out.unknown++
			case err != nil:
				out.issue = &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf("GTID event at %d: %v", pos, err)}
				return out, nil
			case ok:
				out.gtids = catalog.AddGTID(out.gtids, g.Catalog())
				for p, rs := range out.after {
					out.after[p] = catalog.AddGTID(rs, g.Catalog())
				}
			}
		}
	}
	return out, nil
}

// classify turns a read error into the issue it shows.
func classify(key string, err error) *catalog.Issue {
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return &catalog.Issue{Key: key, Kind: catalog.IssueMissing, Detail: "the object is missing"}
	case errors.Is(err, binlog.ErrCorrupt), errors.Is(err, storage.ErrChecksum), errors.Is(err, binlog.ErrMalformed),
		errors.Is(err, io.ErrUnexpectedEOF):
		return &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: trimKey(err.Error(), key)}
	}
	return &catalog.Issue{Key: key, Kind: catalog.IssueUnreadable, Detail: trimKey(err.Error(), key)}
}

// trimKey drops the key from an error message that the issue already names.
func trimKey(msg, key string) string {
	msg = strings.ReplaceAll(msg, key+": ", "")
	return strings.ReplaceAll(msg, " "+key, "")
}

// firstErr remembers the first error other than io.EOF that its reader
// returned: the scanner reports any failure inside an event as a short
// read, and the reason (a checksum, a missing object) is this one.
type firstErr struct {
	r   io.Reader
	err error
}

func (f *firstErr) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && f.err == nil {
		f.err = err
	}
	return n, err
}

// readObject reads a snapshot object, decompressing it, and checks its
// size and SHA-256 against the manifest.
func readObject(ctx context.Context, st storage.Storage, id catalog.SnapshotID, o catalog.SnapshotObject) (int64, *catalog.Issue) {
	key := catalog.SnapshotObjectKey(id, o.Name)
	rc, err := st.Open(ctx, key)
	if err != nil {
		return 0, classify(key, err)
	}
	defer rc.Close()
	stored := &firstErr{r: rc}
	var src io.Reader = stored
	if strings.HasSuffix(o.Name, ".zst") {
		dec, err := zstd.NewReader(stored, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return 0, classify(key, err)
		}
		defer dec.Close()
		src = dec
	}
	h := sha256.New()
	n, err := io.Copy(h, src)
	if err != nil {
		if stored.err == nil {
			// The store checks the object's checksum at its end, which the
			// decoder stopped before: reading the rest tells bytes changed
			// in storage from bytes stored as written.
			_, _ = io.Copy(io.Discard, stored)
		}
		if stored.err != nil {
			return n, classify(key, stored.err)
		}
		// The store returned the bytes it holds; they do not decompress.
		return n, &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf("does not decompress: %v", err)}
	}
	if n != o.Size {
		return n, &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf("holds %d bytes, the manifest says %d", n, o.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != o.SHA256 {
		return n, &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf("sha256 %s, the manifest says %s", got, o.SHA256)}
	}
	return n, nil
}
