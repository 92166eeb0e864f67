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
	// Through are the timelines the window runs on into after failovers,
	// each continuing the one before (see TimelineState.ContinuesAfter).
	Through []TimelineID `json:"through,omitempty"`
	// Snapshots are the snapshots that serve the window, oldest first.
	Snapshots []SnapshotID `json:"snapshots"`
	// EndsAt is the archived position the window ends at.
	EndsAt Position `json:"ends_at"`
}

// Windows returns the recoverable windows: per timeline, from each
// snapshot forward as far as the archive is whole, and on into the
// timelines that continue it after failovers. Windows that end at the same
// place are merged. Gaps between timelines and holes inside one end a
// window.
func Windows(arch *Archive, snaps []*Manifest) []Window {
	var out []Window
	for i, tl := range arch.Timelines {
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
			w := Window{From: from, To: endTime, Timeline: tl.ID, Snapshots: []SnapshotID{m.ID}, EndsAt: end}
			if tlEnd, _ := tl.End(); end == tlEnd {
				w.continueInto(arch.Timelines[i+1:], tl)
			}
			if j := mergeable(out, w); j >= 0 {
				out[j].Snapshots = append(out[j].Snapshots, m.ID)
				continue
			}
			out = append(out, w)
		}
	}
	return out
}

// continueInto runs the window on through the timelines after tl that
// continue it after failovers, as far as each is whole from its start.
func (w *Window) continueInto(later []*TimelineState, tl *TimelineState) {
	for _, next := range later {
		if !next.ContinuesAfter(tl) {
			return
		}
		end, endTime, ok := next.reach(next.Start)
		if !ok {
			return
		}
		if nextEnd, _ := next.End(); end == nextEnd && next.Complete != nil && next.Complete.At.After(endTime) {
			endTime = next.Complete.At
		}
		w.Through = append(w.Through, next.ID)
		w.EndsAt = end
		if endTime.After(w.To) {
			w.To = endTime
		}
		if nextEnd, _ := next.End(); end != nextEnd {
			return // a hole in it ends the window
		}
		tl = next
	}
}

// mergeable returns the window of out that w joins (it ends at the same
// place, on the same last timeline), or -1.
func mergeable(out []Window, w Window) int {
	last := func(w Window) TimelineID {
		if n := len(w.Through); n > 0 {
			return w.Through[n-1]
		}
		return w.Timeline
	}
	for j := len(out) - 1; j >= 0; j-- {
		if last(out[j]) == last(w) && out[j].EndsAt == w.EndsAt {
			return j
		}
	}
	return -1
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
