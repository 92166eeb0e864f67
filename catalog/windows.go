package catalog

import (
	"sort"
	"time"
)

// Window is a stretch of time any moment of which can be restored: it
// starts where a snapshot is consistent and runs as far as the binlog
// archive continues from it on the same timeline.
type Window struct {
	From     time.Time  `json:"from"`
	To       time.Time  `json:"to"`
	Timeline TimelineID `json:"timeline"`
	// Snapshots are the snapshots that serve the window, oldest first.
	Snapshots []SnapshotID `json:"snapshots"`
	// EndsAt is the archived position the window ends at.
	EndsAt Position `json:"ends_at"`
}

// Windows returns the recoverable windows: per timeline, from each
// snapshot forward as far as the archive is whole. Windows of one timeline
// that touch are merged. Gaps between timelines and holes inside one end a
// window.
func Windows(arch *Archive, snaps []*Manifest) []Window {
	var out []Window
	for _, tl := range arch.Timelines {
		var mine []*Manifest
		for _, m := range snaps {
			if m.Timeline == tl.ID || (m.Timeline == 0 && tl.contains(m.Binlog)) {
				mine = append(mine, m)
			}
		}
		sort.Slice(mine, func(i, j int) bool { return snapshotTime(mine[i]).Before(snapshotTime(mine[j])) })
		for _, m := range mine {
			end, endTime, ok := tl.reach(m.Binlog)
			if !ok {
				continue
			}
			from := snapshotTime(m)
			if endTime.Before(from) {
				endTime = from // nothing committed since: the snapshot's own moment
			}
			if tlEnd, _ := tl.End(); end == tlEnd && tl.Complete != nil && tl.Complete.At.After(endTime) {
				endTime = tl.Complete.At // the writer recorded the archive complete up to then
			}
			if n := len(out); n > 0 && out[n-1].Timeline == tl.ID && out[n-1].EndsAt == end {
				out[n-1].Snapshots = append(out[n-1].Snapshots, m.ID)
				continue
			}
			out = append(out, Window{From: from, To: endTime, Timeline: tl.ID, Snapshots: []SnapshotID{m.ID}, EndsAt: end})
		}
	}
	return out
}

func snapshotTime(m *Manifest) time.Time {
	if !m.ConsistentAt.IsZero() {
		return m.ConsistentAt
	}
	return m.Finished
}

// contains reports whether p lies within the timeline's archived range.
func (t *TimelineState) contains(p Position) bool {
	n, _ := FileNumber(p.File)
	for _, s := range t.Segments {
		if s.File == p.File && s.FileNum == n && s.Start <= p.Pos && p.Pos <= s.End {
			return true
		}
	}
	return false
}

// reach follows the archive from p for as long as it is contiguous and
// returns where it ends and the last commit time on the way.
func (t *TimelineState) reach(p Position) (Position, time.Time, bool) {
	n, _ := FileNumber(p.File)
	var end Position
	var last time.Time
	started := false
	for i, s := range t.Segments {
		if !started {
			if s.FileNum == n && s.Start <= p.Pos && p.Pos <= s.End {
				started = true
				end = Position{File: s.File, Pos: s.End}
				if !s.LastCommitTime.IsZero() && s.End > p.Pos {
					last = s.LastCommitTime
				}
			}
			continue
		}
		prev := t.Segments[i-1]
		if !((prev.FileNum == s.FileNum && prev.End == s.Start) ||
			(s.Start == 4 && s.FileNum > prev.FileNum && s.Prev != nil && *s.Prev == Position{File: prev.File, Pos: prev.End})) {
			break // a hole: the window ends before it
		}
		end = Position{File: s.File, Pos: s.End}
		if !s.LastCommitTime.IsZero() {
			last = s.LastCommitTime
		}
	}
	return end, last, started
}
