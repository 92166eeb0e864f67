// Package verify reads a whole archive once, read-only and without locks,
// and reports what can be believed: per snapshot whether all its objects are
// present and match their sizes and checksums, whether it can be restored,
// and the window it serves; per timeline every unusable segment and every
// break in the chain, judged by byte position and by GTID; and every object
// that does not belong to this archive.
package verify

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

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
	// Superseded are objects a superseded writer generation stored after
	// another writer took the archive over: ignored, not damage.
	Superseded []string `json:"superseded,omitempty"`
	// Objects names every object that cannot be used (missing, truncated,
	// corrupt, unreadable, a bad record) or that is foreign (of another
	// archive, or a key not of this archive's layout), in key order.
	Objects []catalog.Issue `json:"objects,omitempty"`
	// Damaged is set when any object is bad or foreign, or a timeline breaks.
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
	Restorable bool `json:"restorable"`
	// Foreign: the manifest belongs to another archive.
	Foreign  bool     `json:"foreign,omitempty"`
	Problems []string `json:"problems,omitempty"`
	// Window is the recoverable window the snapshot starts, when restorable.
	Window *catalog.Window `json:"window,omitempty"`
}

// TimelineReport is one timeline's verdict.
type TimelineReport struct {
	ID catalog.TimelineID `json:"timeline"`
	// Segments counts the usable segments (unusable ones are in Bad).
	Segments int `json:"segments"`
	// Bad lists the timeline's unusable segment objects, as "KEY: kind: what".
	Bad []string `json:"bad_segments,omitempty"`
	// Holes are where the byte positions of the usable segments break;
	// Breaks are every break, by position or by GTID, with the GTIDs missing.
	Holes  []catalog.Hole  `json:"holes,omitempty"`
	Breaks []catalog.Break `json:"breaks,omitempty"`
	// GTIDs says whether the timeline's transactions carry GTIDs, so that
	// continuity was judged by GTID as well as by position.
	GTIDs bool `json:"gtids"`
	// UnknownGTIDs counts the GTID events whose GTID could not be read (see
	// catalog.Segment.UnknownGTIDs): around them, continuity was judged by
	// position only.
	UnknownGTIDs int `json:"unknown_gtids,omitempty"`
	// GTIDJumps are segments whose server-written bytes skip GTID numbers
	// inside them: reported, not damage (see catalog.GTIDJump).
	GTIDJumps []catalog.GTIDJump `json:"gtid_jumps,omitempty"`
	Orphans   []string           `json:"orphans,omitempty"`
	// CompleteAt is how far the timeline's writer recorded it complete.
	CompleteAt time.Time `json:"complete_at,omitzero"`
}

// Options adjust Run.
type Options struct {
	// Concurrency bounds parallel reads (default 4).
	Concurrency int
	Logger      *slog.Logger
}

// Run verifies everything the archive holds. It lists the storage once,
// reads every object once, and writes nothing.
func Run(ctx context.Context, st storage.Storage, opts Options) (*Report, error) {
	begin := time.Now()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	listing, err := st.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list the archive: %w", err)
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{Listing: listing, Concurrency: opts.Concurrency * 4})
	if err != nil {
		return nil, err
	}
	r := &Report{Objects: arch.Issues, Snapshots: []SnapshotReport{}, Timelines: []TimelineReport{}, Superseded: arch.Superseded}
	snaps, err := loadSnapshots(ctx, st, arch, listing, r)
	if err != nil {
		return nil, err
	}
	for _, o := range listing {
		if !ourKey(o.Key) {
			r.Objects = append(r.Objects, catalog.Issue{Key: o.Key, Kind: catalog.IssueForeign, Detail: "the key does not parse as this archive's layout"})
		}
	}
	opts.Logger.Info("verifying", "objects", len(listing), "timelines", len(arch.Timelines), "snapshots", len(snaps))

	// Read every usable segment and every object of every snapshot of ours.
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	reads := map[*catalog.Segment]segmentRead{}
	points := map[*catalog.Segment][]uint64{}
	for _, s := range snaps {
		if s.m == nil {
			continue
		}
		if _, seg := place(arch, s.m); seg != nil && seg.Start < s.m.Binlog.Pos && s.m.Binlog.Pos < seg.End {
			points[seg] = append(points[seg], s.m.Binlog.Pos)
		}
	}
	for _, tl := range arch.Timelines {
		for _, seg := range tl.Segments {
			g.Go(func() error {
				res, err := readSegment(gctx, st, seg, points[seg])
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				r.Bytes += res.n
				reads[seg] = res
				return nil
			})
		}
	}
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
				mu.Lock()
				s.add(*issue)
				mu.Unlock()
				continue
			}
			g.Go(func() error {
				n, issue := readObject(gctx, st, s.m.ID, o)
				if gctx.Err() != nil {
					return gctx.Err()
				}
				mu.Lock()
				defer mu.Unlock()
				r.Bytes += n
				if issue != nil {
					s.add(*issue)
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	// Judge the chain on the segments that can be used, with the GTIDs their
	// bytes hold: a damaged segment breaks it just as a missing one does.
	whole := &catalog.Archive{}
	for _, tl := range arch.Timelines {
		kept := *tl
		kept.Segments = nil
		for _, seg := range tl.Segments {
			res := reads[seg]
			if res.issue == nil && len(seg.GTIDs) > 0 && !slices.Equal(seg.GTIDs, res.gtids) {
				res.issue = &catalog.Issue{Key: seg.Ref().RecordKey(), Kind: catalog.IssueBadRecord, Detail: fmt.Sprintf(
					"the index record lists GTIDs %s, the segment's bytes hold %s", fmtRanges(seg.GTIDs), fmtRanges(res.gtids))}
			}
			if res.issue != nil {
				r.Objects = append(r.Objects, *res.issue)
				continue
			}
			s := *seg
			s.GTIDs, s.UnknownGTIDs = res.gtids, res.unknown
			kept.Segments = append(kept.Segments, &s)
		}
		whole.Timelines = append(whole.Timelines, &kept)
	}
	slices.SortStableFunc(r.Objects, func(a, b catalog.Issue) int { return strings.Compare(a.Key, b.Key) })
	for _, tl := range whole.Timelines {
		tr := TimelineReport{ID: tl.ID, Segments: len(tl.Segments), Holes: tl.Holes(), Orphans: tl.Orphans}
		if tl.Complete != nil {
			tr.CompleteAt = tl.Complete.At
		}
		tr.Breaks, tr.GTIDJumps = tl.Breaks()
		for _, s := range tl.Segments {
			tr.GTIDs = tr.GTIDs || len(s.GTIDs) > 0
			tr.UnknownGTIDs += s.UnknownGTIDs
		}
		prefix := catalog.TimelinePrefix(tl.ID)
		for _, o := range r.Objects {
			if strings.HasPrefix(o.Key, prefix) && o.Kind != catalog.IssueForeign {
				tr.Bad = append(tr.Bad, o.String())
			}
		}
		if len(tr.Breaks) > 0 {
			r.Damaged = true
		}
		r.Timelines = append(r.Timelines, tr)
	}
	r.Gaps = whole.Gaps()
	if r.Gaps == nil {
		r.Gaps = []catalog.Gap{}
	}

	for _, s := range snaps {
		if s.m != nil {
			if why := gtidStateMismatch(arch, whole, reads, s.m); why != "" {
				s.add(catalog.Issue{Key: catalog.ManifestKey(s.m.ID), Kind: catalog.IssueBadRecord, Detail: why})
			}
		}
	}
	var good []*catalog.Manifest
	for _, s := range snaps {
		sr := s.report
		sr.Consistent = !sr.Foreign && s.m != nil && len(sr.Problems) == 0
		if sr.Consistent {
			good = append(good, s.m)
			if _, err := restore.Make(whole, []*catalog.Manifest{s.m}, restore.Target{Kind: restore.Latest}, time.Now()); err != nil {
				sr.Problems = append(sr.Problems, strings.TrimPrefix(err.Error(), restore.ErrRefused.Error()+": "))
			} else {
				sr.Restorable = true
			}
		}
		r.Snapshots = append(r.Snapshots, sr)
	}
	r.Windows = catalog.Windows(whole, good)
	if r.Windows == nil {
		r.Windows = []catalog.Window{}
	}
	for i := range r.Snapshots {
		for _, w := range r.Windows {
			if r.Snapshots[i].Restorable && slices.Contains(w.Snapshots, r.Snapshots[i].ID) {
				win := w
				r.Snapshots[i].Window = &win
			}
		}
	}
	slices.SortStableFunc(r.Objects, func(a, b catalog.Issue) int { return strings.Compare(a.Key, b.Key) })
	if len(r.Objects) > 0 {
		r.Damaged = true
	}
	r.Duration = time.Since(begin)
	return r, nil
}

// snapshotState is a snapshot being verified.
type snapshotState struct {
	m      *catalog.Manifest // nil when the manifest is unusable
	report SnapshotReport
	rep    *Report
}

// add records an unusable object of the snapshot. Callers that run
// concurrently hold the report's lock.
func (s *snapshotState) add(i catalog.Issue) {
	s.report.Problems = append(s.report.Problems, i.Key+": "+string(i.Kind)+": "+i.Detail)
	s.rep.Objects = append(s.rep.Objects, i)
}

// loadSnapshots reads the manifests and judges whose they are: a manifest
// naming a timeline of this archive must carry that timeline's UID and its
// server's UUID, when both are known.
func loadSnapshots(ctx context.Context, st storage.Storage, arch *catalog.Archive, listing []storage.ObjectInfo, r *Report) ([]*snapshotState, error) {
	type entry struct {
		keys     []string
		manifest bool
	}
	byID := map[catalog.SnapshotID]*entry{}
	var ids []catalog.SnapshotID
	for _, o := range listing {
		rest, ok := strings.CutPrefix(o.Key, catalog.SnapshotPrefix)
		if !ok {
			continue
		}
		idStr, name, ok := strings.Cut(rest, "/")
		id, err := catalog.ParseSnapshotID(idStr)
		if !ok || err != nil || name == "" {
			r.Objects = append(r.Objects, catalog.Issue{Key: o.Key, Kind: catalog.IssueForeign, Detail: "the key does not parse as this archive's layout"})
			continue
		}
		e := byID[id]
		if e == nil {
			e = &entry{}
			byID[id] = e
			ids = append(ids, id)
		}
		e.keys = append(e.keys, o.Key)
		e.manifest = e.manifest || o.Key == catalog.ManifestKey(id)
	}
	slices.Sort(ids)
	var out []*snapshotState
	for _, id := range ids {
		e := byID[id]
		if !e.manifest {
			r.Partial = append(r.Partial, id)
			continue
		}
		s := &snapshotState{report: SnapshotReport{ID: id}, rep: r}
		out = append(out, s)
		key := catalog.ManifestKey(id)
		var m catalog.Manifest
		err := catalog.GetJSON(ctx, st, key, &m)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil {
			err = m.Check(id)
		}
		if err != nil {
			s.add(catalog.Issue{Key: key, Kind: catalog.IssueBadRecord, Detail: trimKey(err.Error(), key)})
			continue
		}
		s.report.Method = m.Method
		if why := arch.ForeignManifest(&m); why != "" {
			s.report.Foreign = true
			s.add(catalog.Issue{Key: key, Kind: catalog.IssueForeign, Detail: why})
			for _, k := range e.keys {
				if k != key {
					r.Objects = append(r.Objects, catalog.Issue{Key: k, Kind: catalog.IssueForeign, Detail: "an object of the foreign snapshot " + string(id)})
				}
			}
			continue
		}
		s.m = &m
	}
	return out, nil
}

// ourKey reports whether a key outside binlog/ and snapshots/ (which Load
// and loadSnapshots judge) is of the archive's layout: the lease and the
// drill records.
func ourKey(key string) bool {
	if key == catalog.LeaseKey || key == catalog.ArchiveKey || strings.HasPrefix(key, catalog.BinlogPrefix) || strings.HasPrefix(key, catalog.SnapshotPrefix) {
		return true
	}
	if _, _, err := catalog.ParseGenerationKey(key); err == nil {
		return true
	}
	_, err := catalog.ParseDrillKey(key)
	return err == nil
}

// place finds the timeline a snapshot replays on and the segment that holds
// its position (nil when the archive does not hold it).
func place(arch *catalog.Archive, m *catalog.Manifest) (int, *catalog.Segment) {
	n, err := catalog.FileNumber(m.Binlog.File)
	if err != nil {
		return -1, nil
	}
	for i, tl := range arch.Timelines {
		if m.Timeline != 0 && tl.ID != m.Timeline {
			continue
		}
		for _, seg := range tl.Segments {
			if seg.FileNum == n && seg.File == m.Binlog.File && seg.Start <= m.Binlog.Pos && m.Binlog.Pos <= seg.End {
				return i, seg
			}
		}
	}
	return -1, nil
}

// gtidStateMismatch compares the GTID state a manifest records with the
// archive's at the manifest's position. MariaDB's state is the last GTID of
// each domain, which must be the archive's last before the position.
// MySQL's is a set, which must hold each source's (uuid, or uuid and tag)
// last GTID before the position and not its first after it: GNOs given by
// hand need not follow one another, so the set's largest GNO need not be
// the archive's last. A snapshot is only as good as its position, and a
// manifest from another history (another archive's, written before
// manifests carried a timeline UID) does not fit. It says why they differ,
// or "" when they agree or cannot be compared (no GTIDs, the segment
// holding the position unusable).
func gtidStateMismatch(arch, whole *catalog.Archive, reads map[*catalog.Segment]segmentRead, m *catalog.Manifest) string {
	if strings.TrimSpace(m.GTIDSet) == "" {
		return ""
	}
	set, err := catalog.ParseGTIDSet(m.GTIDSet)
	if err != nil {
		return fmt.Sprintf("gtid_set %q: %v", m.GTIDSet, err)
	}
	i, seg := place(arch, m)
	if seg == nil {
		return ""
	}
	res := reads[seg]
	if res.issue != nil {
		return ""
	}
	var before, after []catalog.GTIDRange
	switch p := m.Binlog.Pos; {
	case p == seg.End:
		before = res.gtids
	case p > seg.Start:
		var ok bool
		if before, ok = res.at[p]; !ok {
			return fmt.Sprintf("position %s is not the start of an event in the archive's %s", m.Binlog, seg.Ref().DataKey())
		}
		after = res.after[p]
	default:
		after = res.gtids
	}
	// The state before the position, from the usable segments before the
	// segment (a break on the way is reported on its own), then the
	// segment's part; the first GTIDs after it, from the segment's part,
	// then the segments after.
	segs := whole.Timelines[i].Segments
	k := slices.IndexFunc(segs, func(s *catalog.Segment) bool { return s.Ref() == seg.Ref() })
	if k < 0 {
		return ""
	}
	var seq catalog.GTIDSequence
	for _, s := range segs[:k] {
		for _, r := range s.GTIDs {
			_, _, _ = seq.Range(r)
		}
	}
	for _, r := range before {
		_, _, _ = seq.Range(r)
	}
	var next []catalog.GTID
	seen := map[string]bool{}
	for _, rs := range append([][]catalog.GTIDRange{after}, gtidsOf(segs[k+1:])...) {
		for _, r := range rs {
			if g, err := catalog.ParseGTID(r.First); err == nil && !seen[g.Source()] {
				seen[g.Source()] = true
				next = append(next, g)
			}
		}
	}
	states := map[string]catalog.GTID{}
	for _, g := range set.Last() {
		states[g.Source()] = g
	}
	var diff []string
	for _, h := range seq.Last() {
		switch g, ok := states[h.Source()]; {
		case !h.MySQL && ok && g != h:
			diff = append(diff, fmt.Sprintf("says %s where the archive has %s", g, h))
		case h.MySQL && !set.Contains(h):
			diff = append(diff, fmt.Sprintf("lacks %s, which the archive has before it", h))
		}
	}
	for _, g := range next {
		if g.MySQL && set.Contains(g) {
			diff = append(diff, fmt.Sprintf("holds %s, which the archive has after it", g))
		}
	}
	if len(diff) == 0 {
		return ""
	}
	return fmt.Sprintf("the manifest's GTID state at %s %s: the snapshot is not of this archive's history at that position",
		m.Binlog, strings.Join(diff, ", "))
}

// gtidsOf returns the GTID ranges of each segment.
func gtidsOf(segs []*catalog.Segment) [][]catalog.GTIDRange {
	out := make([][]catalog.GTIDRange, len(segs))
	for i, s := range segs {
		out[i] = s.GTIDs
	}
	return out
}

// sizeIssue compares a listed object's size with the recorded one
// (unknown when zero) and names a missing object.
func sizeIssue(key string, sizes map[string]int64, recorded int64, by string) *catalog.Issue {
	size, ok := sizes[key]
	switch {
	case !ok:
		return &catalog.Issue{Key: key, Kind: catalog.IssueMissing, Detail: "the object is missing"}
	case recorded > 0 && size < recorded:
		return &catalog.Issue{Key: key, Kind: catalog.IssueTruncated, Detail: fmt.Sprintf("holds %d bytes, %s says %d", size, by, recorded)}
	case recorded > 0 && size > recorded:
		return &catalog.Issue{Key: key, Kind: catalog.IssueCorrupt, Detail: fmt.Sprintf("holds %d bytes, %s says %d", size, by, recorded)}
	}
	return nil
}

func fmtRanges(rs []catalog.GTIDRange) string {
	if len(rs) == 0 {
		return "none"
	}
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%s..%s (%d)", r.First, r.Last, r.Count))
	}
	return strings.Join(s, ", ")
}
