package verify

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// checkGTIDStates adds to each snapshot's problems a GTID state its
// manifest records that does not fit the archive at its position.
func checkGTIDStates(arch, whole *catalog.Archive, reads map[*catalog.Segment]segmentRead, snaps []*snapshotState) {
	for _, s := range snaps {
		if s.m != nil {
			if why := gtidStateMismatch(arch, whole, reads, s.m); why != "" {
				s.add(catalog.Issue{Key: catalog.ManifestKey(s.m.ID), Kind: catalog.IssueBadRecord, Detail: why})
			}
		}
	}
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
	before, after, ok := res.split(seg, m.Binlog.Pos)
	if !ok {
		return fmt.Sprintf("position %s is not the start of an event in the archive's %s", m.Binlog, seg.Ref().DataKey())
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
	diff := stateDiff(set, lastGTIDs(segs[:k], before), firstGTIDs(after, segs[k+1:]))
	if len(diff) == 0 {
		return ""
	}
	return fmt.Sprintf("the manifest's GTID state at %s %s: the snapshot is not of this archive's history at that position",
		m.Binlog, strings.Join(diff, ", "))
}

// split returns the GTID ranges of the segment's bytes before pos and from
// pos on; ok is false when pos, inside the segment, is not the start of an
// event.
func (res segmentRead) split(seg *catalog.Segment, pos uint64) (before, after []catalog.GTIDRange, ok bool) {
	switch {
	case pos == seg.End:
		return res.gtids, nil, true
	case pos > seg.Start:
		if before, ok = res.at[pos]; !ok {
			return nil, nil, false
		}
		return before, res.after[pos], true
	default:
		return nil, res.gtids, true
	}
}

// lastGTIDs returns the last GTID of each source in the segments' GTIDs
// and then in tail.
func lastGTIDs(segs []*catalog.Segment, tail []catalog.GTIDRange) []catalog.GTID {
	var seq catalog.GTIDSequence
	for _, rs := range append(gtidsOf(segs), tail) {
		for _, r := range rs {
			_, _, _ = seq.Range(r)
		}
	}
	return seq.Last()
}

// firstGTIDs returns the first GTID of each source in head and then in
// the segments' GTIDs.
func firstGTIDs(head []catalog.GTIDRange, segs []*catalog.Segment) []catalog.GTID {
	var next []catalog.GTID
	seen := map[string]bool{}
	for _, rs := range append([][]catalog.GTIDRange{head}, gtidsOf(segs)...) {
		for _, r := range rs {
			if g, err := catalog.ParseGTID(r.First); err == nil && !seen[g.Source()] {
				seen[g.Source()] = true
				next = append(next, g)
			}
		}
	}
	return next
}

// stateDiff says where a manifest's GTID set disagrees with the archive's
// last GTIDs before its position and first ones after it.
func stateDiff(set catalog.GTIDSet, last, next []catalog.GTID) []string {
	states := map[string]catalog.GTID{}
	for _, g := range set.Last() {
		states[g.Source()] = g
	}
	var diff []string
	for _, h := range last {
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
	return diff
}

// gtidsOf returns the GTID ranges of each segment.
func gtidsOf(segs []*catalog.Segment) [][]catalog.GTIDRange {
	out := make([][]catalog.GTIDRange, len(segs))
	for i, s := range segs {
		out[i] = s.GTIDs
	}
	return out
}
