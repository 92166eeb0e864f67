package catalog

import (
	"fmt"
	"slices"
	"strings"
)

// IssueKind says what is wrong with an object.
type IssueKind string

// Kinds of issue.
const (
	// IssueMissing: an object the archive needs is not there.
	IssueMissing IssueKind = "missing"
	// IssueTruncated: an object is shorter than recorded.
	IssueTruncated IssueKind = "truncated"
	// IssueCorrupt: an object's bytes do not match what was recorded.
	IssueCorrupt IssueKind = "corrupt"
	// IssueUnreadable: storage failed to return an object.
	IssueUnreadable IssueKind = "unreadable"
	// IssueBadRecord: an index record, timeline record or manifest cannot be
	// read or contradicts its key or its data.
	IssueBadRecord IssueKind = "bad_record"
	// IssueForeign: an object of another archive, or a key that is not of
	// this archive's layout.
	IssueForeign IssueKind = "foreign"
)

// Issue is one object that cannot be used, and why.
type Issue struct {
	// Timeline is the timeline the object belongs to (0: none known).
	Timeline TimelineID `json:"timeline,omitempty"`
	Key      string     `json:"key"`
	Kind     IssueKind  `json:"kind"`
	Detail   string     `json:"detail"`
}

// String formats the issue as "KEY: kind: detail".
func (i Issue) String() string { return fmt.Sprintf("%s: %s: %s", i.Key, i.Kind, i.Detail) }

// Break is a place in a timeline where the archive does not continue: the
// byte positions of consecutive segments do not meet (a hole), or a GTID
// source's sequence does not go on by exactly one, or both.
type Break struct {
	Timeline TimelineID `json:"timeline"`
	// After and Before are the index record keys of the segments on either
	// side; After is the timeline (or prune) record's key for a break before
	// the first segment.
	After  string `json:"after"`
	Before string `json:"before"`
	// At is where the segment after the break starts.
	At Position `json:"at"`
	// Hole is set when the byte positions break.
	Hole *Hole `json:"hole,omitempty"`
	// Missing are the GTIDs that should lie between the two segments and do
	// not ("0-1-1041..0-1-1200"); Disorder describes sequences that go back
	// or repeat.
	Missing  []string `json:"missing_gtids,omitempty"`
	Disorder []string `json:"gtid_disorder,omitempty"`
}

// String describes the break in one line.
func (b Break) String() string {
	var what []string
	if len(b.Missing) > 0 {
		what = append(what, "GTIDs "+strings.Join(b.Missing, ", ")+" missing")
	}
	what = append(what, b.Disorder...)
	if b.Hole != nil {
		what = append(what, fmt.Sprintf("binlog %s..%s missing", b.Hole.After, b.Hole.Before))
	}
	return fmt.Sprintf("gap on timeline %d: %s between %s and %s", uint32(b.Timeline), strings.Join(what, "; "), b.After, b.Before)
}

// GTIDJump is a segment whose own GTID range says that its source's
// sequence skips numbers inside it. A segment's bytes are one piece of the
// server's binlog, checked against their SHA-256, so nothing of the archive
// is missing there: the server wrote it so (gtid_seq_no set by hand,
// replication filters, gtid_strict_mode off). It is reported, not counted as
// damage.
type GTIDJump struct {
	Key   string    `json:"key"`
	Range GTIDRange `json:"range"`
}

// Breaks returns the places where the timeline's segments do not continue
// one another, by byte position (as Holes) and by GTID: each source's
// sequence must go on by exactly one from one segment to the next. Segments
// whose records carry no GTID ranges are judged by position only, and so is
// a source's sequence across segments holding GTID events whose GTIDs
// could not be read (UnknownGTIDs): those may be the numbers it skips. It
// also returns the segments whose GTID ranges skip numbers inside them.
func (t *TimelineState) Breaks() ([]Break, []GTIDJump) {
	var out []Break
	var jumps []GTIDJump
	holes := t.Holes()
	var seq GTIDSequence
	if len(holes) > 0 && len(t.Segments) > 0 && holes[0].Before == (Position{t.Segments[0].File, t.Segments[0].Start}) {
		// A hole before the first segment: nothing to follow GTIDs from.
		after := t.Key()
		if t.Pruned != nil {
			after = PrunedKey(t.ID)
		}
		h := holes[0]
		f := t.Segments[0]
		out = append(out, Break{Timeline: t.ID, After: after, Before: f.Ref().RecordKey(), At: Position{f.File, f.Start}, Hole: &h})
	}
	// A source's GTIDs that are missing belong to the first hole after its
	// last GTID, when there is one: the segment where the sequence picks up
	// again may come later (one holding only a Rotate has no transaction).
	type holeAt struct{ seg, idx int }
	var holeBreaks []holeAt
	lastSeg := map[string]int{}
	// unknownIn reports whether segments from..to hold GTIDs that could not be read.
	unknownIn := func(from, to int) bool {
		return slices.ContainsFunc(t.Segments[from:to+1], func(s *Segment) bool { return s.UnknownGTIDs > 0 })
	}
	for i, s := range t.Segments {
		b := Break{Timeline: t.ID, Before: s.Ref().RecordKey(), At: Position{s.File, s.Start}}
		if i > 0 {
			p := t.Segments[i-1]
			b.After = p.Ref().RecordKey()
			if !continues(p, s) {
				b.Hole = &Hole{After: Position{p.File, p.End}, Before: Position{s.File, s.Start}}
			}
		}
		var pending []string // missing GTIDs that belong to an earlier hole, by break index
		var pendingAt []int
		for _, r := range s.GTIDs {
			brk, inner, err := seq.Range(r)
			if err != nil {
				b.Disorder = append(b.Disorder, fmt.Sprintf("%s: unreadable GTID range: %v", s.Ref().RecordKey(), err))
				continue
			}
			if inner && s.UnknownGTIDs == 0 {
				jumps = append(jumps, GTIDJump{Key: s.Ref().RecordKey(), Range: r})
			}
			first, _ := ParseGTID(r.First)
			src := first.Source()
			prevSeg, seen := lastSeg[src]
			lastSeg[src] = i
			if brk == nil {
				continue
			}
			m, ok := brk.Missing()
			if !ok {
				b.Disorder = append(b.Disorder, brk.String())
				continue
			}
			if seen && unknownIn(prevSeg, i) {
				continue
			}
			if seen {
				if j := slices.IndexFunc(holeBreaks, func(h holeAt) bool { return h.seg > prevSeg && h.seg < i }); j >= 0 {
					pending, pendingAt = append(pending, m.String()), append(pendingAt, holeBreaks[j].idx)
					continue
				}
			}
			b.Missing = append(b.Missing, m.String())
		}
		for k, m := range pending {
			out[pendingAt[k]].Missing = append(out[pendingAt[k]].Missing, m)
		}
		if i > 0 && (b.Hole != nil || len(b.Missing) > 0 || len(b.Disorder) > 0) {
			if b.Hole != nil {
				holeBreaks = append(holeBreaks, holeAt{seg: i, idx: len(out)})
			}
			out = append(out, b)
		}
	}
	return out, jumps
}

// continues reports whether segment s starts where p ends: in the same
// file, or at the start of a later file chained to p's end.
func continues(p, s *Segment) bool {
	return (p.FileNum == s.FileNum && p.End == s.Start) ||
		(s.FileNum > p.FileNum && s.Start == 4 && s.Prev != nil && *s.Prev == Position{p.File, p.End})
}

// LastGTIDs returns the last GTID of each source in the timeline's records.
func (t *TimelineState) LastGTIDs() []GTID {
	var seq GTIDSequence
	for _, s := range t.Segments {
		for _, r := range s.GTIDs {
			_, _, _ = seq.Range(r)
		}
	}
	return seq.Last()
}

// FirstGTIDs returns the first GTID of each source in the timeline's records.
func (t *TimelineState) FirstGTIDs() []GTID {
	var out []GTID
	seen := map[string]bool{}
	for _, s := range t.Segments {
		for _, r := range s.GTIDs {
			g, err := ParseGTID(r.First)
			if err != nil || seen[g.Source()] {
				continue
			}
			seen[g.Source()] = true
			out = append(out, g)
		}
	}
	return out
}

// MissingBetween returns the GTIDs that lie between the last GTIDs of one
// stretch of binlog and the first of the next, per source that both have.
func MissingBetween(last, first []GTID) []string {
	var out []string
	for _, f := range first {
		for _, l := range last {
			if l.Source() != f.Source() {
				continue
			}
			if m, ok := (GTIDBreak{After: l, Next: f}).Missing(); ok {
				out = append(out, m.String())
			}
		}
	}
	return out
}

// ForeignManifest says why a manifest belongs to another archive, or ""
// when nothing says so: a manifest naming a timeline of this archive must
// carry that timeline's UID and be of its server (UUID), where both are known.
func (a *Archive) ForeignManifest(m *Manifest) string {
	if m.Timeline == 0 {
		return ""
	}
	for _, tl := range a.Timelines {
		if tl.ID != m.Timeline {
			continue
		}
		switch {
		case m.TimelineUID != "" && tl.UID != "" && m.TimelineUID != tl.UID:
			return fmt.Sprintf("the manifest names timeline %d with uid %s; this archive's timeline %d has uid %s: it belongs to another archive",
				uint32(m.Timeline), m.TimelineUID, uint32(tl.ID), tl.UID)
		case m.ServerUUID != "" && tl.ServerUUID != "" && m.ServerUUID != tl.ServerUUID:
			return fmt.Sprintf("the snapshot was taken of server %s; timeline %d archives server %s: it belongs to another archive",
				m.ServerUUID, uint32(tl.ID), tl.ServerUUID)
		}
	}
	return ""
}
