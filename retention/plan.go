// Package retention decides which snapshots and binlog segments the archive
// keeps, and deletes the rest in an order that a crash cannot turn into a
// damaged archive.
//
// Planning is pure (MakePlan): it reads the catalog and a listing of keys
// and returns the deletions in order. Prune loads, plans and applies.
//
// What is kept, conservatively:
//   - a complete snapshot among the newest KeepSnapshots, or younger than
//     KeepWithin; the newest complete snapshot always;
//   - every binlog segment a kept snapshot could replay: the whole binlog
//     file holding the oldest kept snapshot's position and everything after
//     it on its timeline, and every later timeline;
//   - anything younger than the grace period that has no manifest or index
//     record yet (it may be being written);
//   - everything, when a kept snapshot cannot be placed in the archive.
package retention

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// DefaultGrace is how old an object without a manifest or index record must
// be before it is collected as the orphan of an interrupted write.
const DefaultGrace = time.Hour

// ErrDamaged is returned when the chain a kept snapshot needs is damaged
// (a hole or a GTID gap after the oldest kept snapshot, or an object there
// that cannot be used) or the archive holds another archive's records:
// deleting anything then could destroy the only usable copy, or another
// archive's objects.
var ErrDamaged = errors.New("archive is damaged")

// Policy says which complete snapshots to keep. A snapshot is kept if it is
// among the newest KeepSnapshots OR younger than KeepWithin. With neither
// set the policy keeps everything.
type Policy struct {
	// KeepSnapshots keeps the newest N complete snapshots (0: no count rule).
	KeepSnapshots int
	// KeepWithin keeps snapshots started less than this long ago (0: no age rule).
	KeepWithin time.Duration
}

// Enabled reports whether the policy ever deletes a snapshot.
func (p Policy) Enabled() bool { return p.KeepSnapshots > 0 || p.KeepWithin > 0 }

// Validate refuses negative values.
func (p Policy) Validate() error {
	switch {
	case p.KeepSnapshots < 0:
		return fmt.Errorf("keep-snapshots %d is negative", p.KeepSnapshots)
	case p.KeepWithin < 0:
		return fmt.Errorf("keep-within %s is negative", p.KeepWithin)
	}
	return nil
}

// Step is one change to storage, in the order it must happen.
type Step struct {
	// Key is the object deleted, or written when Put is set.
	Key  string `json:"key"`
	What string `json:"what"`
	// Size is the stored size freed.
	Size int64 `json:"size"`
	// Put, when set, is the prune record written (instead of a deletion).
	Put *catalog.Pruned `json:"put,omitempty"`
}

// Plan is what a prune does.
type Plan struct {
	// Keep are the complete snapshots kept; Expire those deleted; Partial the
	// abandoned snapshots (no manifest, older than the grace period) collected.
	Keep    []catalog.SnapshotID `json:"keep"`
	Expire  []catalog.SnapshotID `json:"expire"`
	Partial []catalog.SnapshotID `json:"partial"`
	// Floor is the oldest position a kept snapshot replays from (nil when
	// the binlog is kept whole); FloorSnapshot the snapshot it belongs to.
	Floor         *catalog.Position  `json:"floor,omitempty"`
	FloorTimeline catalog.TimelineID `json:"floor_timeline,omitempty"`
	FloorSnapshot catalog.SnapshotID `json:"floor_snapshot,omitempty"`
	// BinlogKept says why no binlog was pruned, when none was.
	BinlogKept string `json:"binlog_kept,omitempty"`
	// Timelines are the timelines deleted whole; Segments and Orphans count
	// the segments and the orphan data objects deleted.
	Timelines []catalog.TimelineID `json:"timelines_deleted,omitempty"`
	Segments  int                  `json:"segments"`
	Orphans   int                  `json:"orphans"`
	// Superseded counts the objects deleted that a superseded writer
	// generation stored (catalog.TimelineState.Superseded).
	Superseded int   `json:"superseded"`
	Bytes      int64 `json:"bytes"`
	// Steps are the writes and deletions in crash-safe order.
	Steps []Step `json:"steps"`
}

// Input is what MakePlan reads: the catalog and the listing it came from.
type Input struct {
	Snapshots *catalog.Snapshots
	Archive   *catalog.Archive
	// SnapshotObjects and BinlogObjects are the listings of
	// catalog.SnapshotPrefix and catalog.BinlogPrefix.
	SnapshotObjects []storage.ObjectInfo
	BinlogObjects   []storage.ObjectInfo
	Policy          Policy
	// Grace protects objects without a manifest or record (0: DefaultGrace).
	Grace time.Duration
	Now   time.Time
}

// MakePlan decides what to delete. It refuses (ErrDamaged) when the archive
// has a hole after the oldest kept snapshot.
func MakePlan(in Input) (*Plan, error) {
	if err := in.Policy.Validate(); err != nil {
		return nil, err
	}
	if in.Grace <= 0 {
		in.Grace = DefaultGrace
	}
	p := &Plan{Keep: []catalog.SnapshotID{}, Expire: []catalog.SnapshotID{}, Partial: []catalog.SnapshotID{}, Steps: []Step{}}
	if !in.Policy.Enabled() {
		for _, m := range in.Snapshots.Complete {
			p.Keep = append(p.Keep, m.ID)
		}
		p.BinlogKept = "no retention policy: nothing is pruned"
		return p, nil
	}
	for _, m := range in.Snapshots.Complete {
		if why := in.Archive.ForeignManifest(m); why != "" {
			return nil, fmt.Errorf("%w: %s: %s; nothing was pruned", ErrDamaged, catalog.ManifestKey(m.ID), why)
		}
	}
	// A manifest that cannot be read or checked may be the one whose
	// binlog a deletion would take: judge nothing until it is sorted out.
	for _, is := range in.Snapshots.Invalid {
		return nil, fmt.Errorf("%w: %s; nothing was pruned", ErrDamaged, is)
	}
	snapObjs := map[catalog.SnapshotID][]storage.ObjectInfo{}
	for _, o := range in.SnapshotObjects {
		idStr, _, ok := strings.Cut(strings.TrimPrefix(o.Key, catalog.SnapshotPrefix), "/")
		if id, err := catalog.ParseSnapshotID(idStr); ok && err == nil {
			snapObjs[id] = append(snapObjs[id], o)
		}
	}

	keep, expire := selectSnapshots(in.Snapshots.Complete, in.Policy, in.Now)
	for _, m := range keep {
		p.Keep = append(p.Keep, m.ID)
	}
	if err := p.planBinlog(in, keep); err != nil {
		return nil, err
	}
	var steps []Step
	// Expired snapshots: the manifest first, so that a crash leaves a
	// partial snapshot (collected later), never a manifest without its data.
	for _, m := range expire {
		p.Expire = append(p.Expire, m.ID)
		steps = append(steps, Step{Key: catalog.ManifestKey(m.ID), What: "manifest of expired snapshot " + string(m.ID)})
		for _, o := range snapObjs[m.ID] {
			if o.Key != catalog.ManifestKey(m.ID) {
				steps = append(steps, Step{Key: o.Key, What: "object of expired snapshot " + string(m.ID), Size: o.Size})
			}
		}
	}
	for _, id := range in.Snapshots.Partial {
		objs := snapObjs[id]
		if !olderThan(id.Time(), in.Now, in.Grace) || !allOlderThan(objs, in.Now, in.Grace) {
			continue // may be a snapshot still being taken
		}
		p.Partial = append(p.Partial, id)
		for _, o := range objs {
			steps = append(steps, Step{Key: o.Key, What: "object of partial snapshot " + string(id), Size: o.Size})
		}
	}
	p.Steps = append(steps, p.Steps...)
	p.planSuperseded(in)
	for _, s := range p.Steps {
		p.Bytes += s.Size
	}
	return p, nil
}

// selectSnapshots splits the complete snapshots (oldest first) into kept and expired.
func selectSnapshots(all []*catalog.Manifest, pol Policy, now time.Time) (keep, expire []*catalog.Manifest) {
	snaps := slices.Clone(all)
	slices.SortStableFunc(snaps, func(a, b *catalog.Manifest) int { return cmp.Compare(a.ID, b.ID) })
	for i, m := range snaps {
		newest := len(snaps) - i // 1 for the newest
		switch {
		case !pol.Enabled(),
			newest == 1, // the newest complete snapshot is never deleted
			pol.KeepSnapshots > 0 && newest <= pol.KeepSnapshots,
			pol.KeepWithin > 0 && now.Sub(started(m)) < pol.KeepWithin:
			keep = append(keep, m)
		default:
			expire = append(expire, m)
		}
	}
	return keep, expire
}

func started(m *catalog.Manifest) time.Time {
	if !m.Started.IsZero() {
		return m.Started
	}
	return m.ID.Time()
}

func olderThan(t, now time.Time, grace time.Duration) bool { return now.Sub(t) >= grace }

func allOlderThan(objs []storage.ObjectInfo, now time.Time, grace time.Duration) bool {
	for _, o := range objs {
		if !olderThan(o.ModTime, now, grace) {
			return false
		}
	}
	return true
}

// planBinlog finds the floor and plans the binlog deletions into p.Steps.
func (p *Plan) planBinlog(in Input, keep []*catalog.Manifest) error {
	if len(keep) == 0 {
		p.BinlogKept = "no complete snapshot: every binlog is kept"
		p.planOrphansOnly(in)
		return nil
	}
	// The floor: the earliest place a kept snapshot replays from.
	var floorTL *catalog.TimelineState
	var floorSnap *catalog.Manifest
	for _, m := range keep {
		tl := timelineOf(in.Archive, m)
		if tl == nil {
			p.BinlogKept = fmt.Sprintf("snapshot %s's position %s (timeline %s) is not in the archive: every binlog is kept",
				m.ID, m.Binlog, m.Timeline)
			p.planOrphansOnly(in)
			return nil
		}
		if floorSnap == nil || tl.ID < floorTL.ID || (tl.ID == floorTL.ID && catalog.ComparePositions(m.Binlog, floorSnap.Binlog) < 0) {
			floorTL, floorSnap = tl, m
		}
	}
	floor := floorSnap.Binlog
	p.Floor, p.FloorTimeline, p.FloorSnapshot = &floor, floorTL.ID, floorSnap.ID

	// A break after the floor means a kept snapshot's chain is already
	// damaged: refuse rather than delete what may be the only usable copy.
	// The verdict is verify's, without reading the data: holes and GTID
	// gaps (catalog.Breaks), and objects that Load could not use.
	floorFile, _ := catalog.FileNumber(floor.File)
	for _, tl := range in.Archive.Timelines {
		if tl.ID < floorTL.ID {
			continue
		}
		breaks, _ := tl.Breaks()
		for _, b := range breaks {
			if tl.ID > floorTL.ID || catalog.ComparePositions(b.At, floor) > 0 {
				return fmt.Errorf("%w: %s, after the oldest kept snapshot %s (%s); nothing was pruned", ErrDamaged, b, floorSnap.ID, floor)
			}
		}
	}
	for _, is := range in.Archive.Issues {
		ref, _, err := catalog.ParseSegmentKey(is.Key)
		if err != nil {
			continue // a key not of the layout: prune never touches it
		}
		if is.Kind == catalog.IssueForeign || ref.Timeline > floorTL.ID || ref.Timeline == floorTL.ID && ref.FileNum >= floorFile {
			return fmt.Errorf("%w: %s (the oldest kept snapshot is %s at %s); nothing was pruned", ErrDamaged, is, floorSnap.ID, floor)
		}
	}

	byTL := map[catalog.TimelineID][]storage.ObjectInfo{}
	for _, o := range in.BinlogObjects {
		rest := strings.TrimPrefix(o.Key, catalog.BinlogPrefix)
		id, _, _ := strings.Cut(rest, "/")
		if tl, err := catalog.ParseTimelineID(id); err == nil && len(id) == 6 {
			byTL[tl] = append(byTL[tl], o)
		}
	}
	for _, tl := range in.Archive.Timelines {
		objs := byTL[tl.ID]
		switch {
		case tl.ID < floorTL.ID:
			p.planTimeline(in, tl, objs)
		case tl.ID == floorTL.ID:
			p.planHead(in, tl, objs, floorFile, floorSnap.ID)
		default:
			p.planOrphans(in, objs, func(catalog.SegmentRef) bool { return true })
		}
	}
	return nil
}

// planTimeline deletes a whole timeline older than every kept snapshot:
// segments (record, then data), orphans, the prune record, and the
// timeline record last, if nothing it accounts for is left.
func (p *Plan) planTimeline(in Input, tl *catalog.TimelineState, objs []storage.ObjectInfo) {
	p.planSegments(objs, func(catalog.SegmentRef) bool { return true })
	left := p.planOrphans(in, objs, func(catalog.SegmentRef) bool { return true })
	if left > 0 {
		return // young orphans: keep the timeline's records until they are collected
	}
	for _, o := range objs {
		if _, err := catalog.ParsePrunedKey(o.Key); err == nil {
			p.Steps = append(p.Steps, Step{Key: o.Key, What: "prune record of deleted timeline " + tl.ID.String(), Size: o.Size})
		}
		if _, _, err := catalog.ParseCompleteKey(o.Key); err == nil {
			p.Steps = append(p.Steps, Step{Key: o.Key, What: "completeness record of deleted timeline " + tl.ID.String(), Size: o.Size})
		}
	}
	for _, o := range objs {
		if _, err := catalog.ParseTimelineKey(o.Key); err == nil {
			p.Steps = append(p.Steps, Step{Key: o.Key, What: "record of deleted timeline " + tl.ID.String(), Size: o.Size})
		}
	}
	p.Timelines = append(p.Timelines, tl.ID)
}

// planHead deletes the floor timeline's segments of files before the
// floor's file. The floor's whole file is kept: replay reads the file's
// format description from its first segment.
func (p *Plan) planHead(in Input, tl *catalog.TimelineState, objs []storage.ObjectInfo, floorFile uint64, snap catalog.SnapshotID) {
	if !within(tl, *p.Floor) {
		// The archive has not reached the floor yet (the streamer lags the
		// snapshot): keep the timeline's head until it has.
		p.BinlogKept = fmt.Sprintf("timeline %s's archive does not reach snapshot %s's position %s yet: its head is kept",
			tl.ID, snap, p.Floor)
		p.planOrphans(in, objs, func(catalog.SegmentRef) bool { return true })
		return
	}
	before := func(r catalog.SegmentRef) bool { return r.FileNum < floorFile }
	var first *catalog.Segment
	for _, s := range tl.Segments {
		if s.FileNum >= floorFile {
			first = s
			break
		}
	}
	hasOld := false
	for _, o := range objs {
		if ref, isRecord, err := catalog.ParseSegmentKey(o.Key); err == nil && isRecord && before(ref) {
			hasOld = true
			break
		}
	}
	if hasOld && first != nil {
		start := catalog.Position{File: first.File, Pos: first.Start}
		if tl.Pruned == nil || catalog.ComparePositions(start, tl.Pruned.Start) > 0 {
			// Written before the deletions: the head is gone on purpose.
			p.Steps = append(p.Steps, Step{Key: catalog.PrunedKey(tl.ID), What: "prune record of timeline " + tl.ID.String(),
				Put: &catalog.Pruned{Timeline: tl.ID, Start: start, Snapshot: snap, At: in.Now.UTC()}})
		}
		p.planSegments(objs, before)
	}
	p.planOrphans(in, objs, func(catalog.SegmentRef) bool { return true })
}

// planSegments plans the deletion of the segments whose refs match, in
// archive order, each index record before its data.
func (p *Plan) planSegments(objs []storage.ObjectInfo, match func(catalog.SegmentRef) bool) {
	data := map[catalog.SegmentRef]storage.ObjectInfo{}
	var records []storage.ObjectInfo
	for _, o := range objs {
		ref, isRecord, err := catalog.ParseSegmentKey(o.Key)
		if err != nil || !match(ref) {
			continue
		}
		if isRecord {
			records = append(records, o)
		} else {
			data[ref] = o
		}
	}
	for _, o := range records { // listing order is archive order
		ref, _, _ := catalog.ParseSegmentKey(o.Key)
		p.Steps = append(p.Steps, Step{Key: o.Key, What: "segment record", Size: o.Size})
		if d, ok := data[ref]; ok {
			p.Steps = append(p.Steps, Step{Key: d.Key, What: "segment data", Size: d.Size})
		}
		p.Segments++
	}
}

// planOrphans plans the deletion of segment data objects without an index
// record, older than the grace period, and returns how many young ones remain.
func (p *Plan) planOrphans(in Input, objs []storage.ObjectInfo, match func(catalog.SegmentRef) bool) int {
	records := map[catalog.SegmentRef]bool{}
	for _, o := range objs {
		if ref, isRecord, err := catalog.ParseSegmentKey(o.Key); err == nil && isRecord {
			records[ref] = true
		}
	}
	young := 0
	for _, o := range objs {
		ref, isRecord, err := catalog.ParseSegmentKey(o.Key)
		if err != nil || isRecord || records[ref] || !match(ref) {
			continue
		}
		if !olderThan(o.ModTime, in.Now, in.Grace) {
			young++
			continue
		}
		p.Steps = append(p.Steps, Step{Key: o.Key, What: "orphan segment data (no index record)", Size: o.Size})
		p.Orphans++
	}
	return young
}

// planSuperseded deletes what superseded writer generations stored: it is
// not part of the archive, and no later writer can make it so.
func (p *Plan) planSuperseded(in Input) {
	planned := map[string]bool{}
	for _, s := range p.Steps {
		planned[s.Key] = true
	}
	sizes := map[string]int64{}
	for _, o := range in.BinlogObjects {
		sizes[o.Key] = o.Size
	}
	for _, key := range in.Archive.Superseded {
		if planned[key] {
			continue
		}
		p.Steps = append(p.Steps, Step{Key: key, What: "object of a superseded writer generation", Size: sizes[key]})
		p.Superseded++
	}
}

// planOrphansOnly collects orphan segment data everywhere and deletes nothing else of the binlog.
func (p *Plan) planOrphansOnly(in Input) {
	p.planOrphans(in, in.BinlogObjects, func(catalog.SegmentRef) bool { return true })
}

// timelineOf finds the timeline a snapshot replays on, as the restore planner does.
func timelineOf(arch *catalog.Archive, m *catalog.Manifest) *catalog.TimelineState {
	if m.Timeline != 0 {
		for _, tl := range arch.Timelines {
			if tl.ID == m.Timeline {
				return tl
			}
		}
		return nil
	}
	for i := len(arch.Timelines) - 1; i >= 0; i-- {
		if within(arch.Timelines[i], m.Binlog) {
			return arch.Timelines[i]
		}
	}
	return nil
}

// within reports whether an archived segment of the timeline holds p.
func within(tl *catalog.TimelineState, p catalog.Position) bool {
	n, _ := catalog.FileNumber(p.File)
	for _, s := range tl.Segments {
		if s.File == p.File && s.FileNum == n && s.Start <= p.Pos && p.Pos <= s.End {
			return true
		}
	}
	return false
}
