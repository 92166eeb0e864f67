package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// LoadOptions adjusts Load.
type LoadOptions struct {
	// Timeline limits loading to one timeline (zero: all).
	Timeline TimelineID
	// Concurrency bounds parallel reads of index records (default 16).
	Concurrency int
	// Listing, when set, is a listing of the whole store taken by the
	// caller: Load uses it instead of listing again.
	Listing []storage.ObjectInfo
}

// Load lists the binlog archive and reads and checks every timeline and
// index record. It applies one set of rules for every caller, and leaves out
// of the timelines, and reports in Archive.Issues, what cannot be used:
// unreadable or inconsistent records, records of another archive (timeline
// UID), index records whose data object is missing or of another size than
// recorded, and keys under binlog/ that do not parse. Timelines then hold
// only the segments that can be used, so Holes shows where the others were.
// Objects a superseded writer generation stored are left out too, as
// Archive.Superseded (they are not damage). Each caller decides which
// issues stop it (IssuesOn). Load returns an error only when it cannot list
// the store or ctx ends.
func Load(ctx context.Context, st storage.Storage, opts LoadOptions) (*Archive, error) {
	objs, genObjs, err := listArchive(ctx, st, opts)
	if err != nil {
		return nil, err
	}
	a := &Archive{}
	a.Generations, a.Issues = ReadGenerations(genObjs)
	l := &loader{st: st, a: a, concurrency: opts.Concurrency}
	if l.concurrency <= 0 {
		l.concurrency = 16
	}
	byTL := l.keysByTimeline(objs)
	ids := make([]TimelineID, 0, len(byTL))
	for id := range byTL {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	// Each step below is one of the rules, in the order they apply; each
	// reports what it leaves out.
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := byTL[id]
		a.Superseded = append(a.Superseded, k.stale...)
		if k.onlySuperseded() {
			for _, g := range k.complete {
				a.Superseded = append(a.Superseded, CompleteKey(id, g))
			}
			continue
		}
		ts, err := l.readTimelineRecord(ctx, id, k)
		if err != nil {
			return nil, err
		}
		if k.hasPruned {
			if err := l.readPruned(ctx, ts); err != nil {
				return nil, err
			}
		}
		segs, foreign, err := l.readSegments(ctx, ts, k)
		if err != nil {
			return nil, err
		}
		ts.Segments = dropCovered(segs)
		l.judgeDataObjects(ts, k, foreign)
		stale, err := ts.loadComplete(ctx, st, a.Generations, k.complete, l.issue)
		if err != nil {
			return nil, err
		}
		a.Superseded = append(a.Superseded, stale...)
		a.Timelines = append(a.Timelines, ts)
	}
	sort.SliceStable(a.Issues, func(i, j int) bool { return a.Issues[i].Key < a.Issues[j].Key })
	sort.Strings(a.Superseded)
	return a, nil
}

// listArchive returns the keys Load judges: those of the binlog archive (of
// one timeline, when opts names one) and the writer generations' records,
// from opts.Listing when the caller took one.
func listArchive(ctx context.Context, st storage.Storage, opts LoadOptions) (objs, genObjs []storage.ObjectInfo, err error) {
	prefix := BinlogPrefix
	if opts.Timeline != 0 {
		prefix = TimelinePrefix(opts.Timeline)
	}
	if opts.Listing == nil {
		if objs, err = st.List(ctx, prefix); err != nil {
			return nil, nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		if genObjs, err = st.List(ctx, GenerationPrefix); err != nil {
			return nil, nil, fmt.Errorf("list %s: %w", GenerationPrefix, err)
		}
		return objs, genObjs, nil
	}
	for _, o := range opts.Listing {
		switch {
		case strings.HasPrefix(o.Key, prefix):
			objs = append(objs, o)
		case strings.HasPrefix(o.Key, GenerationPrefix):
			genObjs = append(genObjs, o)
		}
	}
	return objs, genObjs, nil
}

// loader is what Load's rules share while they judge one archive.
type loader struct {
	st          storage.Storage
	a           *Archive
	concurrency int // parallel reads of index records
	mu          sync.Mutex
}

// issue reports an object Load leaves out. It is safe for concurrent use.
func (l *loader) issue(tl TimelineID, key string, kind IssueKind, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.a.Issues = append(l.a.Issues, Issue{Timeline: tl, Key: key, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// timelineKeys are one timeline's keys, by what they name.
type timelineKeys struct {
	records   []Generation // timeline records, by generation
	hasPruned bool
	complete  []Generation
	segs      []SegmentRef
	data      map[SegmentRef]string
	sizes     map[SegmentRef]int64
	stale     []string // superseded keys
}

// onlySuperseded reports whether the timeline holds nothing but what a
// superseded writer left, and maybe its completeness records: then it is
// not a timeline of the archive.
func (k *timelineKeys) onlySuperseded() bool {
	return len(k.records) == 0 && len(k.segs) == 0 && len(k.data) == 0 && !k.hasPruned
}

// keysByTimeline files each key under the timeline it belongs to, setting
// aside the keys a superseded writer generation stored. A key that does not
// parse is reported as foreign and filed under no timeline.
func (l *loader) keysByTimeline(objs []storage.ObjectInfo) map[TimelineID]*timelineKeys {
	gens := l.a.Generations
	byTL := map[TimelineID]*timelineKeys{}
	get := func(id TimelineID) *timelineKeys {
		k := byTL[id]
		if k == nil {
			k = &timelineKeys{data: map[SegmentRef]string{}, sizes: map[SegmentRef]int64{}}
			byTL[id] = k
		}
		return k
	}
	for _, o := range objs {
		if id, gen, err := ParseTimelineRecordKey(o.Key); err == nil {
			k := get(id)
			if _, _, sup := gens.Superseded(gen, TimelineStartPos(id)); sup {
				k.stale = append(k.stale, o.Key)
			} else {
				k.records = append(k.records, gen)
			}
			continue
		}
		if id, err := ParsePrunedKey(o.Key); err == nil {
			get(id).hasPruned = true
			continue
		}
		if id, gen, err := ParseCompleteKey(o.Key); err == nil {
			get(id).complete = append(get(id).complete, gen)
			continue
		}
		ref, isRecord, err := ParseSegmentKey(o.Key)
		if err != nil {
			// Not ours: reported, never deleted, and filed under no
			// timeline (it takes nothing from one).
			l.issue(0, o.Key, IssueForeign, "the key does not parse as this archive's layout")
			continue
		}
		k := get(ref.Timeline)
		if _, _, sup := gens.Superseded(ref.Gen, ref.EndPos()); sup {
			k.stale = append(k.stale, o.Key)
			continue
		}
		if isRecord {
			k.segs = append(k.segs, ref)
		} else {
			k.data[ref] = o.Key
			k.sizes[ref] = o.Size
		}
	}
	return byTL
}

// readTimelineRecord reads the timeline's record: there must be one, of
// one generation, readable and describing the timeline its key names.
// Without such a record the timeline is kept all the same, with the reason
// "unknown", so that its segments are not silently ignored. It returns an
// error only when the reader's keys cannot decrypt the record or ctx ends.
func (l *loader) readTimelineRecord(ctx context.Context, id TimelineID, k *timelineKeys) (*TimelineState, error) {
	ts := &TimelineState{}
	if len(k.records) == 0 {
		// Segments without a timeline record: the record's upload was lost.
		// Keep them visible so that nothing is silently ignored.
		ts.Timeline = Timeline{ID: id, Reason: "unknown", Detail: "timeline record is missing"}
		if len(k.segs) > 0 || len(k.data) > 0 {
			l.issue(id, TimelineKey(id), IssueMissing, "timeline %d has segments but no timeline record", uint32(id))
		}
		return ts, nil
	}
	slices.Sort(k.records)
	for _, g := range k.records[1:] {
		l.issue(id, TimelineRecordKey(id, g), IssueBadRecord, "a second record for timeline %d (the first is %s)", uint32(id), TimelineRecordKey(id, k.records[0]))
	}
	key := TimelineRecordKey(id, k.records[0])
	err := GetJSON(ctx, l.st, key, &ts.Timeline)
	if errors.Is(err, crypt.ErrNoIdentity) {
		return nil, err // the reader's keys, not the archive, are wrong
	}
	kind := kindOf(err)
	if err == nil && (ts.ID != id || ts.Gen != k.records[0]) {
		err, kind = fmt.Errorf("timeline record %s describes timeline %d of generation %d", key, uint32(ts.ID), ts.Gen), IssueBadRecord
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		l.issue(id, key, kind, "%v", err)
		ts.Timeline = Timeline{ID: id, Reason: "unknown", Detail: "timeline record is unreadable"}
	}
	return ts, nil
}

// readPruned reads the record of how far retention pruned the timeline's
// head. An unreadable one is reported and the timeline is judged as if it
// had none.
func (l *loader) readPruned(ctx context.Context, ts *TimelineState) error {
	var p Pruned
	if err := GetJSON(ctx, l.st, PrunedKey(ts.ID), &p); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.issue(ts.ID, PrunedKey(ts.ID), kindOf(err), "%v", err)
		return nil
	}
	ts.Pruned = &p
	return nil
}

// readSegments reads the timeline's index records in parallel and returns
// the segments that can be used (readSegment), and the records found to be
// of another archive. It returns an error only when ctx ends.
func (l *loader) readSegments(ctx context.Context, ts *TimelineState, k *timelineKeys) ([]*Segment, map[SegmentRef]bool, error) {
	segs := make([]*Segment, len(k.segs))
	foreign := map[SegmentRef]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(l.concurrency)
	for i, ref := range k.segs {
		g.Go(func() error {
			s, isForeign, err := l.readSegment(gctx, ts, ref)
			if err != nil {
				return err
			}
			if isForeign {
				l.mu.Lock()
				foreign[ref] = true
				l.mu.Unlock()
			}
			if s == nil {
				return nil
			}
			size, ok := k.sizes[ref]
			if l.dataMatches(ts.ID, s, size, ok) {
				segs[i] = s
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return slices.DeleteFunc(segs, func(s *Segment) bool { return s == nil }), foreign, nil
}

// readSegment reads an index record and judges it: it must be readable,
// describe the segment its key names, be valid, and be of this archive
// (the timeline's UID). It returns nil, having reported why, when the
// record cannot be used, and sets foreign when it is of another archive.
func (l *loader) readSegment(ctx context.Context, ts *TimelineState, ref SegmentRef) (seg *Segment, foreign bool, err error) {
	id, key := ts.ID, ref.RecordKey()
	var s Segment
	err = GetJSON(ctx, l.st, key, &s)
	if err != nil && ctx.Err() != nil {
		return nil, false, ctx.Err()
	}
	if errors.Is(err, crypt.ErrNoIdentity) {
		// Encrypted for other keys than the timeline's record,
		// which this reader could decrypt: another archive's.
		l.issue(id, key, IssueForeign, "%v", err)
		return nil, false, nil
	}
	if err != nil {
		l.issue(id, key, kindOf(err), "%v", err)
		return nil, false, nil
	}
	if s.Ref() != ref {
		err = fmt.Errorf("index record %s describes %s", key, s.Ref().RecordKey())
	} else {
		err = s.Validate()
	}
	if err != nil {
		l.issue(id, key, IssueBadRecord, "%v", err)
		return nil, false, nil
	}
	if s.TimelineUID != "" && ts.UID != "" && s.TimelineUID != ts.UID {
		l.issue(id, key, IssueForeign, "index record of timeline uid %s filed under timeline %d (uid %s): it belongs to another archive",
			s.TimelineUID, uint32(id), ts.UID)
		return nil, true, nil
	}
	return &s, false, nil
}

// dataMatches reports whether the segment's data object is listed (exists
// says so) with the size its index record gives, reporting it otherwise.
func (l *loader) dataMatches(tl TimelineID, s *Segment, size int64, exists bool) bool {
	ref := s.Ref()
	switch {
	case !exists:
		l.issue(tl, ref.DataKey(), IssueMissing, "data object is missing (its index record %s exists)", ref.RecordKey())
		return false
	case s.StoredSize > 0 && size < s.StoredSize:
		l.issue(tl, ref.DataKey(), IssueTruncated, "holds %d bytes, its index record says %d", size, s.StoredSize)
		return false
	case s.StoredSize > 0 && size > s.StoredSize:
		l.issue(tl, ref.DataKey(), IssueCorrupt, "holds %d bytes, its index record says %d", size, s.StoredSize)
		return false
	}
	return true
}

// judgeDataObjects files the timeline's data objects without an index
// record as orphans (an interrupted upload), and reports the data of index
// records of another archive.
func (l *loader) judgeDataObjects(ts *TimelineState, k *timelineKeys, foreign map[SegmentRef]bool) {
	for ref, key := range k.data {
		switch {
		case foreign[ref]:
			l.issue(ts.ID, key, IssueForeign, "data of the foreign index record %s", ref.RecordKey())
		case !hasRecord(k.segs, ref):
			ts.Orphans = append(ts.Orphans, key)
		}
	}
	sort.Strings(ts.Orphans)
}

// kindOf classifies an error reading a record.
func kindOf(err error) IssueKind {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, storage.ErrNotExist):
		return IssueMissing
	case errors.Is(err, storage.ErrChecksum):
		return IssueCorrupt
	case errors.As(err, &syntax), errors.As(err, &typ):
		return IssueBadRecord
	}
	return IssueUnreadable
}

func hasRecord(refs []SegmentRef, r SegmentRef) bool {
	i := sort.Search(len(refs), func(i int) bool { return !refLess(refs[i], r) })
	return i < len(refs) && refs[i] == r
}

// dropCovered removes segments whose byte range lies inside another segment
// of the same file (left behind by a compaction that had not yet deleted
// them). Input is in key order.
func dropCovered(segs []*Segment) []*Segment {
	sort.SliceStable(segs, func(i, j int) bool {
		a, b := segs[i], segs[j]
		if a.FileNum != b.FileNum {
			return a.FileNum < b.FileNum
		}
		if a.Start != b.Start {
			return a.Start < b.Start
		}
		return a.End > b.End // the widest first
	})
	out := segs[:0]
	for _, s := range segs {
		if n := len(out); n > 0 {
			p := out[n-1]
			if p.FileNum == s.FileNum && s.Start >= p.Start && s.End <= p.End {
				continue
			}
		}
		out = append(out, s)
	}
	return out
}
