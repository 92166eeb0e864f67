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
	r.Objects = append(r.Objects, foreignKeys(listing)...)
	opts.Logger.Info("verifying", "objects", len(listing), "timelines", len(arch.Timelines), "snapshots", len(snaps))

	// Read every usable segment and every object of every snapshot of ours.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	d := &dataReads{g: g, st: st, r: r, segments: map[*catalog.Segment]segmentRead{}}
	d.readSegments(gctx, arch, snapshotPoints(arch, snaps))
	d.readSnapshotObjects(gctx, snaps, listing)
	if err := g.Wait(); err != nil {
		return nil, err
	}
	reads := d.segments

	// Judge the chain on the segments that can be used, with the GTIDs their
	// bytes hold: a damaged segment breaks it just as a missing one does.
	whole, bad := usableSegments(arch, reads)
	r.Objects = append(r.Objects, bad...)
	slices.SortStableFunc(r.Objects, func(a, b catalog.Issue) int { return strings.Compare(a.Key, b.Key) })
	r.judgeTimelines(whole)
	r.Gaps = whole.Gaps()
	if r.Gaps == nil {
		r.Gaps = []catalog.Gap{}
	}

	checkGTIDStates(arch, whole, reads, snaps)
	good := r.judgeSnapshots(whole, snaps)
	r.Windows = catalog.Windows(whole, good)
	if r.Windows == nil {
		r.Windows = []catalog.Window{}
	}
	r.placeInWindows()
	slices.SortStableFunc(r.Objects, func(a, b catalog.Issue) int { return strings.Compare(a.Key, b.Key) })
	if len(r.Objects) > 0 {
		r.Damaged = true
	}
	r.Duration = time.Since(begin)
	return r, nil
}

// usableSegments returns the archive with only the segments whose bytes
// read through, each with the GTIDs its bytes hold, and the issues of the
// others. A segment whose bytes hold other GTIDs than its index record
// lists is not usable.
func usableSegments(arch *catalog.Archive, reads map[*catalog.Segment]segmentRead) (*catalog.Archive, []catalog.Issue) {
	whole := &catalog.Archive{}
	var bad []catalog.Issue
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
				bad = append(bad, *res.issue)
				continue
			}
			s := *seg
			s.GTIDs, s.UnknownGTIDs = res.gtids, res.unknown
			kept.Segments = append(kept.Segments, &s)
		}
		whole.Timelines = append(whole.Timelines, &kept)
	}
	return whole, bad
}

// judgeTimelines adds the verdict on each timeline of usable segments to
// the report, whose Objects are complete and in key order: a break in one
// damages the archive.
func (r *Report) judgeTimelines(whole *catalog.Archive) {
	for _, tl := range whole.Timelines {
		tr := timelineReport(tl, r.Objects)
		if len(tr.Breaks) > 0 {
			r.Damaged = true
		}
		r.Timelines = append(r.Timelines, tr)
	}
}

// timelineReport is the verdict on a timeline of usable segments; objects
// are the archive's unusable and foreign objects.
func timelineReport(tl *catalog.TimelineState, objects []catalog.Issue) TimelineReport {
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
	for _, o := range objects {
		if strings.HasPrefix(o.Key, prefix) && o.Kind != catalog.IssueForeign {
			tr.Bad = append(tr.Bad, o.String())
		}
	}
	return tr
}

// judgeSnapshots adds each snapshot's verdict to the report: consistent
// when all its objects are usable, restorable when a restore can be planned
// from it on the usable segments. It returns the consistent ones' manifests.
func (r *Report) judgeSnapshots(whole *catalog.Archive, snaps []*snapshotState) []*catalog.Manifest {
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
	return good
}

// placeInWindows gives each restorable snapshot the window it starts.
func (r *Report) placeInWindows() {
	for i := range r.Snapshots {
		for _, w := range r.Windows {
			if r.Snapshots[i].Restorable && slices.Contains(w.Snapshots, r.Snapshots[i].ID) {
				win := w
				r.Snapshots[i].Window = &win
			}
		}
	}
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

// foreignKeys reports the listed keys outside binlog/ and snapshots/ that
// are not of the archive's layout.
func foreignKeys(listing []storage.ObjectInfo) []catalog.Issue {
	var out []catalog.Issue
	for _, o := range listing {
		if !ourKey(o.Key) {
			out = append(out, catalog.Issue{Key: o.Key, Kind: catalog.IssueForeign, Detail: "the key does not parse as this archive's layout"})
		}
	}
	return out
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
