package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// TimelineState is a timeline as found in storage: its record and its
// segments in archive order.
type TimelineState struct {
	Timeline
	// Segments are the segments whose index records exist, in position order,
	// with any segment that a compacted one covers left out.
	Segments []*Segment
	// Orphans are data objects without an index record (an upload that was
	// interrupted between the two writes); they are not part of the archive.
	Orphans []string
	// Pruned is set when retention deleted the timeline's head: segments
	// before Pruned.Start are gone on purpose, not missing.
	Pruned *Pruned
	// Complete is how far the archive of the timeline is known complete,
	// when its writer recorded it (nil: up to its last commit).
	Complete *Complete
}

// Archive is everything the binlog archive holds.
type Archive struct {
	Timelines []*TimelineState
	// Issues are the objects Load left out of the archive, and why.
	Issues []Issue
	// Generations are the archive's writer generations.
	Generations Generations
	// Superseded are the keys of objects a superseded writer generation
	// stored after another writer took the archive over: not part of the
	// archive, and not damage either; retention deletes them.
	Superseded []string
}

// Last returns the newest timeline, or nil when the archive is empty.
func (a *Archive) Last() *TimelineState {
	if len(a.Timelines) == 0 {
		return nil
	}
	return a.Timelines[len(a.Timelines)-1]
}

// End returns where the timeline's archive ends: the position after its last
// archived byte, and the last segment (nil for a timeline with no segment yet).
func (t *TimelineState) End() (Position, *Segment) {
	if len(t.Segments) == 0 {
		return t.Start, nil
	}
	s := t.Segments[len(t.Segments)-1]
	return Position{File: s.File, Pos: s.End}, s
}

// Hole is a break inside a timeline's sequence of segments: bytes that should
// be archived but whose segment is missing.
type Hole struct {
	After  Position `json:"after"`
	Before Position `json:"before"`
}

// Holes returns the breaks in the timeline's sequence of segments. A
// healthy archive has none; one appears when an object was deleted.
func (t *TimelineState) Holes() []Hole {
	var holes []Hole
	for i := 1; i < len(t.Segments); i++ {
		p, s := t.Segments[i-1], t.Segments[i]
		if !continues(p, s) {
			holes = append(holes, Hole{After: Position{p.File, p.End}, Before: Position{s.File, s.Start}})
		}
	}
	if len(t.Segments) > 0 {
		f := t.Segments[0]
		if t.Pruned != nil {
			// The head was pruned: only a first segment after the prune's
			// start is missing something (one before it awaits deletion).
			if first := (Position{f.File, f.Start}); ComparePositions(first, t.Pruned.Start) > 0 {
				holes = append([]Hole{{After: t.Pruned.Start, Before: first}}, holes...)
			}
		} else if f.File != t.Start.File || f.Start != t.Start.Pos {
			holes = append([]Hole{{After: t.Start, Before: Position{f.File, f.Start}}}, holes...)
		}
	}
	return holes
}

// IssuesOn returns the issues of the objects of timeline tl.
func (a *Archive) IssuesOn(tl TimelineID) []Issue {
	var out []Issue
	for _, is := range a.Issues {
		if is.Timeline == tl {
			out = append(out, is)
		}
	}
	return out
}

// Timeline returns the timeline with id, or nil.
func (a *Archive) Timeline(id TimelineID) *TimelineState {
	for _, t := range a.Timelines {
		if t.ID == id {
			return t
		}
	}
	return nil
}

func refLess(a, b SegmentRef) bool {
	if a.FileNum != b.FileNum {
		return a.FileNum < b.FileNum
	}
	if a.Start != b.Start {
		return a.Start < b.Start
	}
	return a.End < b.End
}

// Coverage summarises what a timeline lets a restore reach.
type Coverage struct {
	Timeline TimelineID `json:"timeline"`
	Reason   string     `json:"reason"`
	From     Position   `json:"from"`
	To       Position   `json:"to"`
	// FromTime and ToTime are the first and last archived commit times.
	FromTime  time.Time `json:"from_time,omitzero"`
	ToTime    time.Time `json:"to_time,omitzero"`
	FirstGTID string    `json:"first_gtid,omitempty"`
	LastGTID  string    `json:"last_gtid,omitempty"`
	Segments  int       `json:"segments"`
	Bytes     uint64    `json:"bytes"`
	Stored    int64     `json:"stored_bytes"`
	Holes     []Hole    `json:"holes,omitempty"`
	Orphans   int       `json:"orphans,omitempty"`
}

// Coverage returns the timeline's summary.
func (t *TimelineState) Coverage() Coverage {
	c := Coverage{Timeline: t.ID, Reason: string(t.Reason), From: t.Start, To: t.Start, Holes: t.Holes(), Orphans: len(t.Orphans)}
	for _, s := range t.Segments {
		c.Segments++
		c.Bytes += s.Size()
		c.Stored += s.StoredSize
		if c.FromTime.IsZero() && !s.FirstCommitTime.IsZero() {
			c.FromTime = s.FirstCommitTime
		}
		if !s.LastCommitTime.IsZero() {
			c.ToTime = s.LastCommitTime
		}
		if c.FirstGTID == "" {
			c.FirstGTID = s.FirstGTID
		}
		if s.LastGTID != "" {
			c.LastGTID = s.LastGTID
		}
	}
	if n := len(t.Segments); n > 0 {
		c.From = Position{t.Segments[0].File, t.Segments[0].Start}
		last := t.Segments[n-1]
		c.To = Position{last.File, last.End}
	}
	return c
}

// Gap is a break between two timelines: history the archive does not hold.
type Gap struct {
	// Between the end of timeline After and the start of timeline Before.
	After    TimelineID     `json:"after_timeline"`
	Before   TimelineID     `json:"before_timeline"`
	Reason   TimelineReason `json:"reason"`
	Detail   string         `json:"detail,omitempty"`
	From     *Position      `json:"from,omitempty"`
	To       Position       `json:"to"`
	FromTime time.Time      `json:"from_time,omitzero"`
	ToTime   time.Time      `json:"to_time,omitzero"`
	Missing  []string       `json:"missing,omitempty"`
	// MissingGTIDs are the GTIDs between the last ones archived on timeline
	// After and the first ones on Before, per source both have.
	MissingGTIDs []string  `json:"missing_gtids,omitempty"`
	Recorded     time.Time `json:"recorded"`
}

// Gaps returns the breaks between consecutive timelines. A timeline that
// continues the one before after a failover (ReasonFailover) is none.
func (a *Archive) Gaps() []Gap {
	var gaps []Gap
	for i := 1; i < len(a.Timelines); i++ {
		p, t := a.Timelines[i-1], a.Timelines[i]
		if t.ContinuesAfter(p) {
			continue
		}
		g := Gap{After: p.ID, Before: t.ID, Reason: t.Reason, Detail: t.Detail, From: t.ParentEnd,
			To: t.Start, Missing: t.Missing, Recorded: t.Created}
		g.FromTime = p.Coverage().ToTime
		g.ToTime = t.Coverage().FromTime
		g.MissingGTIDs = MissingBetween(p.LastGTIDs(), t.FirstGTIDs())
		gaps = append(gaps, g)
	}
	return gaps
}

// TailRefs is where the archive ends, as its keys tell without reading any
// object: what a writer that cannot decrypt the archive still knows.
// Objects of superseded writer generations are left out.
type TailRefs struct {
	// Newest is the newest timeline (zero for an empty archive).
	Newest TimelineID
	// HasRecord is set when Newest's timeline record exists; RecordGen is
	// the generation that stored it.
	HasRecord bool
	RecordGen Generation
	// Last is the newest timeline's last segment with an index record, or
	// nil when it has none yet.
	Last *SegmentRef
	// Generations are the archive's writer generations.
	Generations Generations
}

// End is where the archive ends, in archive order: the fence a writer
// taking it over records.
func (t TailRefs) End() ArchivePos {
	if t.Last != nil {
		return t.Last.EndPos()
	}
	return TimelineStartPos(t.Newest)
}

// LoadTailRefs lists the binlog archive's keys and returns where it ends.
func LoadTailRefs(ctx context.Context, st storage.Storage) (TailRefs, error) {
	gens, err := LoadGenerations(ctx, st)
	if err != nil {
		return TailRefs{}, err
	}
	objs, err := st.List(ctx, BinlogPrefix)
	if err != nil {
		return TailRefs{}, fmt.Errorf("list %s: %w", BinlogPrefix, err)
	}
	t := TailRefs{Generations: gens}
	recordGen := map[TimelineID]Generation{}
	var last *SegmentRef
	for _, o := range objs {
		if id, gen, err := ParseTimelineRecordKey(o.Key); err == nil {
			if _, _, sup := gens.Superseded(gen, TimelineStartPos(id)); sup {
				continue
			}
			if g, ok := recordGen[id]; !ok || gen < g {
				recordGen[id] = gen
			}
			t.Newest = max(t.Newest, id)
			continue
		}
		ref, isRecord, err := ParseSegmentKey(o.Key)
		if err != nil {
			continue
		}
		if _, _, sup := gens.Superseded(ref.Gen, ref.EndPos()); sup {
			continue
		}
		t.Newest = max(t.Newest, ref.Timeline)
		if isRecord && (last == nil || ref.Timeline > last.Timeline || (ref.Timeline == last.Timeline && refLess(*last, ref))) {
			r := ref
			last = &r
		}
	}
	t.RecordGen, t.HasRecord = recordGen[t.Newest]
	if last != nil && last.Timeline == t.Newest {
		t.Last = last
	}
	return t, nil
}

// NewestTimeline returns the archive's newest timeline from its keys alone
// (zero for an empty archive): what a snapshot records, known without
// reading, and so without decrypting, anything.
func NewestTimeline(ctx context.Context, st storage.Storage) (TimelineID, error) {
	t, err := LoadTailRefs(ctx, st)
	return t.Newest, err
}

// LoadTail reads only what a writer needs to continue the archive: the
// newest timeline's record and its last segment (nil when it has none yet),
// leaving out what superseded writer generations stored. It lists keys but
// reads at most two objects, however long the archive. refs is what the
// keys said.
func LoadTail(ctx context.Context, st storage.Storage) (*TimelineState, TailRefs, error) {
	refs, err := LoadTailRefs(ctx, st)
	if err != nil || refs.Newest == 0 {
		return nil, refs, err
	}
	ts, err := refs.read(ctx, st)
	return ts, refs, err
}

func (refs TailRefs) read(ctx context.Context, st storage.Storage) (*TimelineState, error) {
	ts := &TimelineState{}
	if refs.HasRecord {
		if err := GetJSON(ctx, st, TimelineRecordKey(refs.Newest, refs.RecordGen), &ts.Timeline); err != nil {
			return nil, err
		}
	} else {
		ts.Timeline = Timeline{ID: refs.Newest, Reason: "unknown", Detail: "timeline record is missing"}
	}
	if refs.Last != nil {
		var s Segment
		if err := GetJSON(ctx, st, refs.Last.RecordKey(), &s); err != nil {
			return nil, err
		}
		ts.Segments = []*Segment{&s}
	}
	return ts, nil
}

// ContinuesAfter reports whether t continues timeline p after a failover:
// every transaction archived on p is in t's server's history, so a
// restore replays on from p into t (see ReasonFailover).
func (t *TimelineState) ContinuesAfter(p *TimelineState) bool {
	return t.Reason == ReasonFailover && t.Parent == p.ID && len(t.Timeline.Continues) > 0
}
