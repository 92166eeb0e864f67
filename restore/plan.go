package restore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// TargetKind says what a Target names.
type TargetKind int

// Target kinds.
const (
	// Latest restores everything archived.
	Latest TargetKind = iota
	// AtTime keeps every transaction that committed at or before Time.
	AtTime
	// AtPosition keeps every transaction that ends at or before Position.
	AtPosition
)

// Target is the moment a restore brings the server back to.
type Target struct {
	Kind     TargetKind
	Time     time.Time
	Position catalog.Position
}

// String formats the target as the user would write it.
func (t Target) String() string {
	switch t.Kind {
	case AtTime:
		return t.Time.UTC().Format(time.RFC3339Nano)
	case AtPosition:
		return t.Position.String()
	}
	return "latest"
}

// ErrRefused is wrapped by every refusal to plan a restore.
var ErrRefused = errors.New("restore refused")

// ParseTarget reads --to (an RFC 3339 time with a zone, or "latest") and
// --to-position (FILE:POS); exactly one must be given. A time without a zone
// is refused: it would be guessed.
func ParseTarget(to, toPosition string) (Target, error) {
	switch {
	case to != "" && toPosition != "":
		return Target{}, errors.New("give either --to or --to-position, not both")
	case toPosition != "":
		i := strings.LastIndexByte(toPosition, ':')
		if i <= 0 {
			return Target{}, fmt.Errorf("--to-position %q: want FILE:POS, as in mysql-bin.000042:1234", toPosition)
		}
		pos, err := strconv.ParseUint(toPosition[i+1:], 10, 64)
		if err != nil || pos < 4 {
			return Target{}, fmt.Errorf("--to-position %q: the position must be a number of at least 4", toPosition)
		}
		if _, err := catalog.FileNumber(toPosition[:i]); err != nil {
			return Target{}, fmt.Errorf("--to-position %q: %w", toPosition, err)
		}
		return Target{Kind: AtPosition, Position: catalog.Position{File: toPosition[:i], Pos: pos}}, nil
	case to == "":
		return Target{}, errors.New("say where to restore to: --to TIME (RFC 3339 with a zone), --to latest, or --to-position FILE:POS")
	case to == "latest":
		return Target{Kind: Latest}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, to)
	if err != nil {
		if _, lerr := time.Parse("2006-01-02T15:04:05", strings.SplitN(to, ".", 2)[0]); lerr == nil {
			return Target{}, fmt.Errorf("--to %q has no time zone; add Z for UTC or an offset like +02:00 (a time is never guessed)", to)
		}
		return Target{}, fmt.Errorf("--to %q: want an RFC 3339 time such as 2026-11-27T10:41:07Z, or latest", to)
	}
	return Target{Kind: AtTime, Time: t.UTC()}, nil
}

// Plan is what a restore will do.
type Plan struct {
	Target   Target
	Snapshot *catalog.Manifest
	Timeline catalog.TimelineID
	// From is where replay starts: the snapshot's position.
	From catalog.Position
	// Head are the segments of From's file before From: replay reads the
	// file's format description from them.
	Head []*catalog.Segment
	// Segments are the archived segments replay reads, in order. The exact
	// stop is found while reading them: before the first transaction that
	// commits after the target (AtTime), at the end of the transaction that
	// ends at the target (AtPosition), or at the archive's end (Latest).
	Segments []*catalog.Segment
	// FetchBytes is what the restore downloads: the snapshot and the segments, as stored.
	FetchBytes int64
	// ArchiveEnd and ArchiveEndTime are where and when the timeline's archive ends.
	ArchiveEnd     catalog.Position
	ArchiveEndTime time.Time
	// CompleteAt is, when the archive's writer recorded it, the moment up
	// to which the timeline is known complete (a quiet server commits
	// nothing after ArchiveEndTime): targets up to it can be restored.
	CompleteAt time.Time
	// Skipped are manifests that could have served the target but cannot
	// be used, and why (see NoteSkipped).
	Skipped []catalog.Issue
	// Then is the replay after this one when the target lies past the end
	// of Timeline, on the timeline that continues it after a failover
	// (catalog.ReasonFailover): this replay then runs to Timeline's end
	// (ToEnd), and Then from its new primary's first transaction not
	// replayed already, with the same snapshot and target.
	Then  *Plan
	ToEnd bool
	// Held are, on a continuation, the last GTIDs of the timeline before
	// it, which the new primary held: its transactions up to them are
	// that timeline's, replayed already.
	Held []string
}

// legTarget is where this replay stops: the target, or Timeline's end
// when Then goes on.
func (p *Plan) legTarget() Target {
	if p.ToEnd {
		return Target{Kind: Latest}
	}
	return p.Target
}

// NoteSkipped records the invalid manifests of snapshots newer than the
// one the plan uses (and, for a time target, started before it): the
// restore would have used one of them, and says why it did not.
func (p *Plan) NoteSkipped(snaps *catalog.Snapshots) {
	for _, is := range snaps.Skipped(p.Snapshot.ID.Time()) {
		rest := strings.TrimPrefix(is.Key, catalog.SnapshotPrefix)
		idStr, _, _ := strings.Cut(rest, "/")
		id, _ := catalog.ParseSnapshotID(idStr)
		if p.Target.Kind == AtTime && id.Time().After(p.Target.Time) {
			continue
		}
		p.Skipped = append(p.Skipped, is)
	}
}

// Make plans a restore to t from the archive and the complete snapshots.
// now is only used to say how old the archive's end is.
func Make(arch *catalog.Archive, snaps []*catalog.Manifest, t Target, now time.Time) (*Plan, error) {
	m, tl, err := newestFitting(arch, snaps, t)
	if err != nil {
		return nil, err
	}
	p := &Plan{Target: t, Snapshot: m, Timeline: tl.ID, From: m.Binlog, FetchBytes: m.StoredBytes}
	if err := p.plan(arch, tl, now); err != nil {
		return nil, err
	}
	return p, nil
}

// plan fills in the replay of timeline tl from From, and the replays after
// it (Then) when the target lies on timelines that continue tl after
// failovers.
func (p *Plan) plan(arch *catalog.Archive, tl *catalog.TimelineState, now time.Time) error {
	if issues := arch.IssuesOn(tl.ID); len(issues) > 0 {
		var lines []string
		for _, is := range issues {
			lines = append(lines, is.String())
		}
		return fmt.Errorf("%w: timeline %s, which the restore would replay, has objects that cannot be used (run mysql-pitr verify): %s",
			ErrRefused, tl.ID, strings.Join(lines, "; "))
	}
	end, _ := tl.End()
	p.ArchiveEnd, p.ArchiveEndTime = end, tl.Coverage().ToTime
	if tl.Complete != nil && tl.Complete.At.After(p.ArchiveEndTime) {
		p.CompleteAt = tl.Complete.At
	}
	next := continuation(arch, tl.ID)
	if next != nil && p.pastEnd() {
		p.ToEnd = true
		p.Then = &Plan{Target: p.Target, Snapshot: p.Snapshot, Timeline: next.ID, From: next.Start, Held: next.Continues}
	} else if err := p.checkReach(arch, tl, now); err != nil {
		return err
	}
	if err := p.addSegments(tl); err != nil {
		return err
	}
	if err := checkChain(p); err != nil {
		return err
	}
	if p.Then != nil {
		if err := p.Then.plan(arch, next, now); err != nil {
			return err
		}
		p.FetchBytes += p.Then.FetchBytes
	}
	return nil
}

// pastEnd reports whether the target lies past the end of this replay's
// timeline: latest always does, a time when it is after the timeline's
// last commit and its recorded completeness. A position never does: it
// names a place in one timeline's binlog.
func (p *Plan) pastEnd() bool {
	switch p.Target.Kind {
	case Latest:
		return true
	case AtTime:
		return p.Target.Time.After(p.ArchiveEndTime) && p.Target.Time.After(p.CompleteAt)
	}
	return false
}

// continuation is the timeline that continues timeline id after a
// failover, without losing a transaction (see catalog.ReasonFailover).
func continuation(arch *catalog.Archive, id catalog.TimelineID) *catalog.TimelineState {
	next := nextTimeline(arch, id)
	if tl := arch.Timeline(id); next != nil && tl != nil && next.ContinuesAfter(tl) {
		return next
	}
	return nil
}

// newestFitting finds the newest snapshot at or before t, and its
// timeline: the least to replay.
func newestFitting(arch *catalog.Archive, snaps []*catalog.Manifest, t Target) (*catalog.Manifest, *catalog.TimelineState, error) {
	if len(snaps) == 0 {
		return nil, nil, fmt.Errorf("%w: the archive holds no complete snapshot; take one with mysql-pitr snapshot", ErrRefused)
	}
	var best *catalog.Manifest
	var bestTL *catalog.TimelineState
	for _, m := range snaps {
		tl := timelineOf(arch, m)
		if tl == nil || !snapshotFits(m, tl, t) {
			continue
		}
		if best == nil || consistentAt(m).After(consistentAt(best)) {
			best, bestTL = m, tl
		}
	}
	if best != nil {
		return best, bestTL, nil
	}
	oldest := snaps[0]
	for _, m := range snaps {
		if consistentAt(m).Before(consistentAt(oldest)) {
			oldest = m
		}
	}
	return nil, nil, fmt.Errorf("%w: no snapshot is at or before %s; the oldest, %s, is consistent at %s (position %s)",
		ErrRefused, t, oldest.ID, consistentAt(oldest).Format(time.RFC3339), oldest.Binlog)
}

// checkReach refuses a target the archive of timeline tl does not reach:
// a time past its end (or in the gap before the next timeline), or a
// position outside it.
func (p *Plan) checkReach(arch *catalog.Archive, tl *catalog.TimelineState, now time.Time) error {
	t, last, end := p.Target, p.ArchiveEndTime, p.ArchiveEnd
	reach := last
	if p.CompleteAt.After(reach) {
		reach = p.CompleteAt
	}
	if t.Kind == AtTime && (reach.IsZero() || t.Time.After(reach)) {
		if next := nextTimeline(arch, tl.ID); next != nil {
			return fmt.Errorf("%w: %s falls in a gap of the archive: timeline %s ends with a transaction committed at %s, "+
				"timeline %s starts at %s after %s (%s); restore to %s at the latest, or to a snapshot taken on timeline %s",
				ErrRefused, t, tl.ID, fmtTime(last), next.ID, next.Start, next.Reason, next.Detail, fmtTime(last), next.ID)
		}
		known := ""
		if !p.CompleteAt.IsZero() {
			known = fmt.Sprintf("; the agent recorded it complete up to %s", fmtTime(p.CompleteAt))
		}
		return fmt.Errorf("%w: %s is past the end of the archive: its last transaction committed at %s (%s before now, position %s)%s; "+
			"use --to latest or a time at or before %s", ErrRefused, t, fmtTime(last), now.Sub(last).Round(time.Second), end, known, fmtTime(reach))
	}
	if t.Kind == AtPosition && !positionWithin(tl, t.Position) {
		return fmt.Errorf("%w: position %s is not in timeline %s, which runs from %s to %s", ErrRefused, t.Position, tl.ID, tl.Start, end)
	}
	return nil
}

// addSegments puts into the plan the segments of tl replay reads: Head,
// before the snapshot's position in its file, and Segments, from it up to
// the first that holds what comes after the target.
func (p *Plan) addSegments(tl *catalog.TimelineState) error {
	fromNum := fileNum(p.From.File)
	for _, s := range tl.Segments {
		if s.FileNum < fromNum || (s.FileNum == fromNum && s.End <= p.From.Pos) {
			if s.FileNum == fromNum {
				p.Head = append(p.Head, s)
				p.FetchBytes += s.StoredSize
			}
			continue // before the snapshot
		}
		if len(p.Segments) == 0 {
			covers := (s.FileNum == fromNum && s.Start <= p.From.Pos) ||
				(s.Start == 4 && s.Prev != nil && *s.Prev == p.From)
			if !covers {
				return fmt.Errorf("%w: the archive of timeline %s has nothing from snapshot %s's position %s up to %s:%d",
					ErrRefused, tl.ID, p.Snapshot.ID, p.From, s.File, s.Start)
			}
		}
		p.Segments = append(p.Segments, s)
		p.FetchBytes += s.StoredSize
		if beyondTarget(s, p.legTarget()) {
			break
		}
	}
	if len(p.Segments) == 0 && p.From != p.ArchiveEnd {
		return fmt.Errorf("%w: the archive of timeline %s does not reach snapshot %s's position %s (it ends at %s)",
			ErrRefused, tl.ID, p.Snapshot.ID, p.From, p.ArchiveEnd)
	}
	return nil
}

// consistentAt is when the snapshot is consistent; older manifests without
// it fall back to when the snapshot finished, which is never too early.
func consistentAt(m *catalog.Manifest) time.Time {
	if !m.ConsistentAt.IsZero() {
		return m.ConsistentAt
	}
	return m.Finished
}

// timelineOf finds the timeline a snapshot's position belongs to.
func timelineOf(arch *catalog.Archive, m *catalog.Manifest) *catalog.TimelineState {
	if m.Timeline != 0 {
		for _, tl := range arch.Timelines {
			if tl.ID == m.Timeline {
				if m.TimelineUID != "" && tl.UID != "" && m.TimelineUID != tl.UID {
					return nil // another archive's snapshot, copied into this one
				}
				return tl
			}
		}
		return nil
	}
	for i := len(arch.Timelines) - 1; i >= 0; i-- {
		if positionWithin(arch.Timelines[i], m.Binlog) {
			return arch.Timelines[i]
		}
	}
	return nil
}

func positionWithin(tl *catalog.TimelineState, p catalog.Position) bool {
	n := fileNum(p.File)
	for _, s := range tl.Segments {
		if s.File == p.File && s.FileNum == n && s.Start <= p.Pos && p.Pos <= s.End {
			return true
		}
	}
	return tl.Start == p
}

// snapshotFits reports whether every transaction in the snapshot belongs
// before the target.
func snapshotFits(m *catalog.Manifest, tl *catalog.TimelineState, t Target) bool {
	switch t.Kind {
	case AtTime:
		return !consistentAt(m).After(t.Time)
	case AtPosition:
		if m.Binlog.File != t.Position.File {
			return fileNum(m.Binlog.File) < fileNum(t.Position.File)
		}
		return m.Binlog.Pos <= t.Position.Pos
	}
	return true
}

// beyondTarget reports whether the segment already holds what comes after the target.
func beyondTarget(s *catalog.Segment, t Target) bool {
	switch t.Kind {
	case AtTime:
		return !s.LastCommitTime.IsZero() && s.LastCommitTime.After(t.Time)
	case AtPosition:
		return s.FileNum > fileNum(t.Position.File) || (s.File == t.Position.File && s.End >= t.Position.Pos)
	}
	return false
}

// checkChain refuses a plan whose segments do not follow each other.
func checkChain(p *Plan) error {
	for i := 1; i < len(p.Segments); i++ {
		a, b := p.Segments[i-1], p.Segments[i]
		ok := (a.FileNum == b.FileNum && a.End == b.Start) ||
			(b.Start == 4 && b.FileNum > a.FileNum && b.Prev != nil && *b.Prev == catalog.Position{File: a.File, Pos: a.End})
		if !ok {
			return fmt.Errorf("%w: the archive is damaged: nothing covers %s:%d to %s:%d on timeline %s; "+
				"the latest restorable point before it is %s:%d", ErrRefused, a.File, a.End, b.File, b.Start, p.Timeline, a.File, a.TxnEnd)
		}
	}
	return nil
}

func nextTimeline(arch *catalog.Archive, id catalog.TimelineID) *catalog.TimelineState {
	for _, tl := range arch.Timelines {
		if tl.ID > id {
			return tl
		}
	}
	return nil
}

func fileNum(name string) uint64 {
	n, _ := catalog.FileNumber(name)
	return n
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "(no transaction)"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
