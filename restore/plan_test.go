package restore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, "2026-11-27T"+s+"Z")
	if err != nil {
		panic(err)
	}
	return t
}

func seg(tl catalog.TimelineID, file string, start, end uint64, first, last string, prev *catalog.Position, ends bool) *catalog.Segment {
	n, _ := catalog.FileNumber(file)
	return &catalog.Segment{Timeline: tl, File: file, FileNum: n, Start: start, End: end, TxnEnd: end,
		FirstCommitTime: at(first), LastCommitTime: at(last), Prev: prev, FileEnds: ends, StoredSize: int64(end-start) / 4}
}

// testArchive: timeline 1 covers 10:00:00–10:00:30 over two files; binlog
// was then purged; timeline 2 covers 10:05:00–10:06:00.
func testArchive(dropMiddle bool) *catalog.Archive {
	tl1 := &catalog.TimelineState{Timeline: catalog.Timeline{ID: 1, Reason: catalog.ReasonFirst, Start: catalog.Position{File: "mysql-bin.000001", Pos: 4}}}
	tl1.Segments = []*catalog.Segment{
		seg(1, "mysql-bin.000001", 4, 1000, "10:00:00", "10:00:10", nil, false),
		seg(1, "mysql-bin.000001", 1000, 2000, "10:00:11", "10:00:20", nil, true),
		seg(1, "mysql-bin.000002", 4, 500, "10:00:21", "10:00:30", &catalog.Position{File: "mysql-bin.000001", Pos: 2000}, false),
	}
	if dropMiddle {
		tl1.Segments = append(tl1.Segments[:1], tl1.Segments[2:]...)
	}
	tl2 := &catalog.TimelineState{Timeline: catalog.Timeline{ID: 2, Reason: catalog.ReasonPurged, Detail: "mysql-bin.000002 from 500 was purged",
		Parent: 1, Start: catalog.Position{File: "mysql-bin.000005", Pos: 4}}}
	tl2.Segments = []*catalog.Segment{
		seg(2, "mysql-bin.000005", 4, 800, "10:05:00", "10:05:40", nil, false),
		seg(2, "mysql-bin.000005", 800, 900, "10:05:41", "10:06:00", nil, false),
	}
	return &catalog.Archive{Timelines: []*catalog.TimelineState{tl1, tl2}}
}

func testSnapshots() []*catalog.Manifest {
	return []*catalog.Manifest{
		{ID: "20261127T100005Z-aaaa", Method: catalog.MethodLogical, Timeline: 1, Binlog: catalog.Position{File: "mysql-bin.000001", Pos: 1000},
			ConsistentAt: at("10:00:10.5"), StoredBytes: 100},
		{ID: "20261127T100500Z-bbbb", Method: catalog.MethodPhysical, Timeline: 2, Binlog: catalog.Position{File: "mysql-bin.000005", Pos: 4},
			ConsistentAt: at("10:05:00"), StoredBytes: 200},
	}
}

func TestMake(t *testing.T) {
	now := at("10:10:00")
	cases := []struct {
		name     string
		target   Target
		damaged  bool
		snapshot catalog.SnapshotID
		segments []string // "file:start"
		refusal  string
	}{
		{name: "time inside the first timeline", target: Target{Kind: AtTime, Time: at("10:00:25")},
			snapshot: "20261127T100005Z-aaaa", segments: []string{"mysql-bin.000001:1000", "mysql-bin.000002:4"}},
		{name: "time exactly at the snapshot", target: Target{Kind: AtTime, Time: at("10:00:10.5")},
			snapshot: "20261127T100005Z-aaaa", segments: []string{"mysql-bin.000001:1000"}},
		{name: "time on the second timeline", target: Target{Kind: AtTime, Time: at("10:05:30")},
			snapshot: "20261127T100500Z-bbbb", segments: []string{"mysql-bin.000005:4"}},
		{name: "latest", target: Target{Kind: Latest},
			snapshot: "20261127T100500Z-bbbb", segments: []string{"mysql-bin.000005:4", "mysql-bin.000005:800"}},
		{name: "position", target: Target{Kind: AtPosition, Position: catalog.Position{File: "mysql-bin.000001", Pos: 1500}},
			snapshot: "20261127T100005Z-aaaa", segments: []string{"mysql-bin.000001:1000"}},
		{name: "before the oldest snapshot", target: Target{Kind: AtTime, Time: at("09:00:00")},
			refusal: "the oldest, 20261127T100005Z-aaaa, is consistent at 2026-11-27T10:00:10Z"},
		{name: "inside the gap", target: Target{Kind: AtTime, Time: at("10:03:00")},
			refusal: "falls in a gap of the archive"},
		{name: "past the end", target: Target{Kind: AtTime, Time: at("10:07:00")},
			refusal: "past the end of the archive: its last transaction committed at 2026-11-27T10:06:00Z (4m0s before now"},
		{name: "a missing segment", target: Target{Kind: AtTime, Time: at("10:00:25")}, damaged: true,
			refusal: "nothing from snapshot 20261127T100005Z-aaaa's position mysql-bin.000001:1000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Make(testArchive(c.damaged), testSnapshots(), c.target, now)
			if c.refusal != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.refusal) {
					t.Fatalf("err = %v; want a refusal containing %q", err, c.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Snapshot.ID != c.snapshot {
				t.Errorf("snapshot %s, want %s", p.Snapshot.ID, c.snapshot)
			}
			var got []string
			var bytes int64 = p.Snapshot.StoredBytes
			for _, s := range p.Head {
				if s.File != p.From.File || s.End > p.From.Pos {
					t.Errorf("head segment %s:%d-%d is not before %s in its file", s.File, s.Start, s.End, p.From)
				}
				bytes += s.StoredSize
			}
			for _, s := range p.Segments {
				got = append(got, catalog.Position{File: s.File, Pos: s.Start}.String())
				bytes += s.StoredSize
			}
			if strings.Join(got, " ") != strings.Join(c.segments, " ") {
				t.Errorf("segments %v, want %v", got, c.segments)
			}
			if p.FetchBytes != bytes {
				t.Errorf("fetch bytes %d, want %d", p.FetchBytes, bytes)
			}
		})
	}
}

func TestMakeWithoutSnapshots(t *testing.T) {
	_, err := Make(testArchive(false), nil, Target{Kind: Latest}, at("10:10:00"))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "no complete snapshot") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		to, pos string
		want    Target
		err     string
	}{
		{to: "2026-11-27T10:41:07Z", want: Target{Kind: AtTime, Time: at("10:41:07")}},
		{to: "2026-11-27T12:41:07.25+02:00", want: Target{Kind: AtTime, Time: at("10:41:07.25")}},
		{to: "latest", want: Target{Kind: Latest}},
		{pos: "mysql-bin.000042:1234", want: Target{Kind: AtPosition, Position: catalog.Position{File: "mysql-bin.000042", Pos: 1234}}},
		{to: "2026-11-27T10:41:07", err: "has no time zone"},
		{to: "2026-11-27 10:41", err: "want an RFC 3339 time"},
		{to: "latest", pos: "mysql-bin.000001:4", err: "not both"},
		{pos: "mysql-bin.000042", err: "want FILE:POS"},
		{pos: "mysql-bin:12", err: "numeric suffix"},
		{err: "say where to restore to"},
	}
	for _, c := range cases {
		t.Run(c.to+c.pos, func(t *testing.T) {
			got, err := ParseTarget(c.to, c.pos)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != c.want.Kind || !got.Time.Equal(c.want.Time) || got.Position != c.want.Position {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestMakeSkipsForeignSnapshot: a manifest naming this archive's timeline
// but another timeline UID was copied in from another archive; the planner
// never restores from it.
func TestMakeSkipsForeignSnapshot(t *testing.T) {
	arch := testArchive(false)
	arch.Timelines[1].UID = "uid-ours"
	snaps := testSnapshots()
	snaps[1].TimelineUID = "uid-theirs"
	p, err := Make(arch, snaps, Target{Kind: Latest}, at("10:10:00"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Snapshot.ID == snaps[1].ID {
		t.Fatalf("planned from the foreign snapshot %s", p.Snapshot.ID)
	}
	snaps[1].TimelineUID = "uid-ours"
	if p, err := Make(arch, snaps, Target{Kind: Latest}, at("10:10:00")); err != nil || p.Snapshot.ID != snaps[1].ID {
		t.Fatalf("with the matching UID: plan %v, err %v; want snapshot %s", p, err, snaps[1].ID)
	}
}

// failoverArchive is testArchive with timeline 2 continuing timeline 1
// after a failover instead of after a purge: its new primary held every
// transaction of timeline 1 (the last, 0-1-30).
func failoverArchive() *catalog.Archive {
	arch := testArchive(false)
	tl2 := arch.Timelines[1]
	tl2.Reason, tl2.Detail, tl2.Continues = catalog.ReasonFailover, "failover", []string{"0-1-30"}
	return arch
}

func TestMakeAcrossFailover(t *testing.T) {
	snaps := testSnapshots()[:1] // on timeline 1 only
	cases := []struct {
		name   string
		target Target
		// legs are the segments of each replay, "file:start" separated by spaces.
		legs    []string
		refusal string
	}{
		{"inside the first timeline", Target{Kind: AtTime, Time: at("10:00:25")}, []string{"mysql-bin.000001:1000 mysql-bin.000002:4"}, ""},
		{"between the timelines", Target{Kind: AtTime, Time: at("10:03:00")},
			[]string{"mysql-bin.000001:1000 mysql-bin.000002:4", "mysql-bin.000005:4"}, ""},
		{"on the continuing timeline", Target{Kind: AtTime, Time: at("10:05:30")},
			[]string{"mysql-bin.000001:1000 mysql-bin.000002:4", "mysql-bin.000005:4"}, ""},
		{"latest", Target{Kind: Latest},
			[]string{"mysql-bin.000001:1000 mysql-bin.000002:4", "mysql-bin.000005:4 mysql-bin.000005:800"}, ""},
		{"past the end", Target{Kind: AtTime, Time: at("10:07:00")}, nil, "past the end of the archive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Make(failoverArchive(), snaps, c.target, at("10:10:00"))
			if c.refusal != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.refusal) {
					t.Fatalf("err = %v; want a refusal containing %q", err, c.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var legs []string
			for leg := p; leg != nil; leg = leg.Then {
				var got []string
				for _, s := range leg.Segments {
					got = append(got, catalog.Position{File: s.File, Pos: s.Start}.String())
				}
				legs = append(legs, strings.Join(got, " "))
				if leg.Then != nil && (!leg.ToEnd || leg.legTarget().Kind != Latest) {
					t.Errorf("timeline %s is followed by another, but its replay does not run to its end", leg.Timeline)
				}
			}
			if strings.Join(legs, " | ") != strings.Join(c.legs, " | ") {
				t.Errorf("replays %q, want %q", legs, c.legs)
			}
			if p.Then != nil && strings.Join(p.Then.Held, ",") != "0-1-30" {
				t.Errorf("the continuation holds %v, want 0-1-30", p.Then.Held)
			}
		})
	}
}
