package catalog

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// seg is a valid record of bytes [start,end) of file, in timeline 1.
func testSeg(file string, start, end uint64) *Segment {
	n, _ := FileNumber(file)
	return &Segment{Timeline: 1, File: file, FileNum: n, Start: start, End: end, TxnEnd: end, SHA256: testSHA}
}

// withPrev sets the segment's link to where the previous file's archive ended.
func (s *Segment) withPrev(file string, pos uint64) *Segment {
	s.Prev = &Position{File: file, Pos: pos}
	return s
}

func testPos(file string, p uint64) Position { return Position{File: file, Pos: p} }

const (
	file1 = "mysql-bin.000001"
	file2 = "mysql-bin.000002"
	file3 = "mysql-bin.000003"
)

func TestHoles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  Position
		segs   []*Segment
		want   []Hole
		pruned *Position
	}{
		{"empty timeline", testPos(file1, 4), nil, nil, nil},
		{"one segment", testPos(file1, 4), []*Segment{testSeg(file1, 4, 100)}, nil, nil},
		{"contiguous within a file", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file1, 100, 200), testSeg(file1, 200, 201)}, nil, nil},
		{"contiguous across files", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file2, 4, 50).withPrev(file1, 100), testSeg(file2, 50, 60), testSeg(file3, 4, 9).withPrev(file2, 60)}, nil, nil},
		{"timeline starting inside a file", testPos(file2, 1000),
			[]*Segment{testSeg(file2, 1000, 2000), testSeg(file3, 4, 9).withPrev(file2, 2000)}, nil, nil},
		{"missing middle segment", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file1, 200, 300), testSeg(file1, 300, 400)},
			[]Hole{{After: testPos(file1, 100), Before: testPos(file1, 200)}}, nil},
		{"missing last segment of a file", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file2, 4, 50).withPrev(file1, 200)},
			[]Hole{{After: testPos(file1, 100), Before: testPos(file2, 4)}}, nil},
		{"missing first segment of a file", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file2, 50, 60)},
			[]Hole{{After: testPos(file1, 100), Before: testPos(file2, 50)}}, nil},
		{"new file without a link", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file2, 4, 50)},
			[]Hole{{After: testPos(file1, 100), Before: testPos(file2, 4)}}, nil},
		{"missing whole file", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file3, 4, 50).withPrev(file2, 80)},
			[]Hole{{After: testPos(file1, 100), Before: testPos(file3, 4)}}, nil},
		{"link to an earlier file's end", testPos(file1, 4),
			[]*Segment{testSeg(file1, 4, 100), testSeg(file3, 4, 50).withPrev(file1, 100)}, nil, nil},
		{"first segment not at the timeline start", testPos(file1, 4),
			[]*Segment{testSeg(file1, 100, 200), testSeg(file1, 200, 300)},
			[]Hole{{After: testPos(file1, 4), Before: testPos(file1, 100)}}, nil},
		{"first segment in a later file", testPos(file1, 4),
			[]*Segment{testSeg(file2, 4, 100).withPrev(file1, 500)},
			[]Hole{{After: testPos(file1, 4), Before: testPos(file2, 4)}}, nil},
		{"holes at the start and in the middle", testPos(file1, 4),
			[]*Segment{testSeg(file1, 50, 100), testSeg(file1, 150, 200)},
			[]Hole{{After: testPos(file1, 4), Before: testPos(file1, 50)}, {After: testPos(file1, 100), Before: testPos(file1, 150)}}, nil},
		{"head pruned to a later file", testPos(file1, 4),
			[]*Segment{testSeg(file2, 4, 100).withPrev(file1, 500), testSeg(file2, 100, 200)}, nil, &Position{file2, 4}},
		{"head pruned, deletion interrupted", testPos(file1, 4),
			[]*Segment{testSeg(file1, 300, 500), testSeg(file2, 4, 100).withPrev(file1, 500)}, nil, &Position{file2, 4}},
		{"head pruned, first kept segment missing", testPos(file1, 4),
			[]*Segment{testSeg(file2, 100, 200)},
			[]Hole{{After: testPos(file2, 4), Before: testPos(file2, 100)}}, &Position{file2, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := &TimelineState{Timeline: Timeline{ID: 1, Start: tc.start}, Segments: tc.segs}
			if tc.pruned != nil {
				ts.Pruned = &Pruned{Timeline: 1, Start: *tc.pruned}
			}
			if got := ts.Holes(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Holes() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func rangesOf(segs []*Segment) []string {
	var out []string
	for _, s := range segs {
		out = append(out, fmt.Sprintf("%d:[%d,%d)", s.FileNum, s.Start, s.End))
	}
	return out
}

func TestDropCovered(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []*Segment // in key order
		want []string
	}{
		{"nothing covered", []*Segment{testSeg(file1, 4, 100), testSeg(file1, 100, 200), testSeg(file2, 4, 100)},
			[]string{"1:[4,100)", "1:[100,200)", "2:[4,100)"}},
		{"a compaction covering all", []*Segment{testSeg(file1, 4, 100), testSeg(file1, 4, 300), testSeg(file1, 100, 200), testSeg(file1, 200, 300)},
			[]string{"1:[4,300)"}},
		{"a compaction covering the first two", []*Segment{testSeg(file1, 4, 100), testSeg(file1, 4, 200), testSeg(file1, 100, 200), testSeg(file1, 200, 300)},
			[]string{"1:[4,200)", "1:[200,300)"}},
		{"a compaction in the middle", []*Segment{testSeg(file1, 4, 100), testSeg(file1, 100, 200), testSeg(file1, 100, 400), testSeg(file1, 200, 300), testSeg(file1, 300, 400), testSeg(file1, 400, 500)},
			[]string{"1:[4,100)", "1:[100,400)", "1:[400,500)"}},
		{"two compactions, one inside the other", []*Segment{testSeg(file1, 4, 100), testSeg(file1, 4, 200), testSeg(file1, 4, 300), testSeg(file1, 100, 200), testSeg(file1, 200, 300)},
			[]string{"1:[4,300)"}},
		{"the same range in another file stays", []*Segment{testSeg(file1, 4, 300), testSeg(file1, 4, 100), testSeg(file2, 4, 100)},
			[]string{"1:[4,300)", "2:[4,100)"}},
		{"overlapping without covering stays", []*Segment{testSeg(file1, 4, 150), testSeg(file1, 100, 200)},
			[]string{"1:[4,150)", "1:[100,200)"}},
		{"out of order input", []*Segment{testSeg(file2, 4, 100), testSeg(file1, 100, 200), testSeg(file1, 4, 100), testSeg(file1, 4, 200)},
			[]string{"1:[4,200)", "2:[4,100)"}},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rangesOf(dropCovered(slices.Clone(tc.in))); !slices.Equal(got, tc.want) {
				t.Errorf("dropCovered = %v, want %v", got, tc.want)
			}
		})
	}
}

var testEpoch = time.Date(2025, 10, 7, 5, 0, 0, 0, time.UTC)

// withTxns gives a segment transactions committed at the given minutes after
// testEpoch and the GTIDs 0-1-first..0-1-last.
func (s *Segment) withTxns(fromMin, toMin int, first, last int) *Segment {
	s.Transactions = last - first + 1
	s.FirstCommitTime = testEpoch.Add(time.Duration(fromMin)*time.Minute + 123*time.Microsecond)
	s.LastCommitTime = testEpoch.Add(time.Duration(toMin)*time.Minute + 456*time.Microsecond)
	s.FirstGTID, s.LastGTID = fmt.Sprintf("0-1-%d", first), fmt.Sprintf("0-1-%d", last)
	return s
}

func (s *Segment) stored(n int64) *Segment { s.StoredSize = n; return s }

func TestCoverage(t *testing.T) {
	ts := &TimelineState{
		Timeline: Timeline{ID: 2, Reason: ReasonPurged, Start: testPos(file1, 4)},
		Segments: []*Segment{
			testSeg(file1, 4, 120).stored(10), // format description only: no transaction
			testSeg(file1, 120, 1000).withTxns(1, 5, 1, 9).stored(300),
			testSeg(file1, 1000, 1500).stored(100),                        // inside a long transaction
			testSeg(file1, 2000, 3000).withTxns(7, 9, 10, 12).stored(200), // after a hole
		},
		Orphans: []string{"binlog/000002/0000000001/000000001500-000000002000.zst"},
	}
	want := Coverage{
		Timeline: 2, Reason: "purged",
		From: testPos(file1, 4), To: testPos(file1, 3000),
		FromTime:  testEpoch.Add(time.Minute + 123*time.Microsecond),
		ToTime:    testEpoch.Add(9*time.Minute + 456*time.Microsecond),
		FirstGTID: "0-1-1", LastGTID: "0-1-12",
		Segments: 4, Bytes: 116 + 880 + 500 + 1000, Stored: 610,
		Holes:   []Hole{{After: testPos(file1, 1500), Before: testPos(file1, 2000)}},
		Orphans: 1,
	}
	if got := ts.Coverage(); !reflect.DeepEqual(got, want) {
		t.Errorf("Coverage() =\n%+v\nwant\n%+v", got, want)
	}

	empty := &TimelineState{Timeline: Timeline{ID: 3, Reason: ReasonDiverged, Start: testPos(file2, 4)}}
	want = Coverage{Timeline: 3, Reason: "diverged", From: testPos(file2, 4), To: testPos(file2, 4)}
	if got := empty.Coverage(); !reflect.DeepEqual(got, want) {
		t.Errorf("empty timeline: Coverage() = %+v, want %+v", got, want)
	}
	if end, last := empty.End(); end != testPos(file2, 4) || last != nil {
		t.Errorf("empty timeline: End() = %v, %v", end, last)
	}
	if end, last := ts.End(); end != testPos(file1, 3000) || last != ts.Segments[3] {
		t.Errorf("End() = %v, %v", end, last)
	}
}

func TestGaps(t *testing.T) {
	created := testEpoch.Add(24 * time.Hour)
	a := &Archive{Timelines: []*TimelineState{
		{Timeline: Timeline{ID: 1, Reason: ReasonFirst, Start: testPos(file1, 4)},
			Segments: []*Segment{testSeg(file1, 4, 100).withTxns(0, 10, 1, 5)}},
		{Timeline: Timeline{ID: 2, Reason: ReasonPurged, Detail: "binlogs purged before they were archived",
			Parent: 1, ParentEnd: &Position{file1, 100}, Start: testPos(file3, 4), Missing: []string{file2}, Created: created},
			Segments: []*Segment{testSeg(file3, 4, 50), testSeg(file3, 50, 100).withTxns(60, 70, 9, 10)}},
		{Timeline: Timeline{ID: 3, Reason: ReasonDiverged, Parent: 2, ParentEnd: &Position{file3, 100},
			Start: testPos("mysql-bin.000001", 4), Created: created.Add(time.Hour)}},
	}}
	want := []Gap{
		{After: 1, Before: 2, Reason: ReasonPurged, Detail: "binlogs purged before they were archived",
			From: &Position{file1, 100}, To: testPos(file3, 4), Missing: []string{file2}, Recorded: created,
			FromTime: testEpoch.Add(10*time.Minute + 456*time.Microsecond), ToTime: testEpoch.Add(60*time.Minute + 123*time.Microsecond)},
		{After: 2, Before: 3, Reason: ReasonDiverged, From: &Position{file3, 100}, To: testPos(file1, 4),
			Recorded: created.Add(time.Hour), FromTime: testEpoch.Add(70*time.Minute + 456*time.Microsecond)},
	}
	if got := a.Gaps(); !reflect.DeepEqual(got, want) {
		t.Errorf("Gaps() =\n%+v\nwant\n%+v", got, want)
	}
	if a.Last().ID != 3 {
		t.Errorf("Last() = %d, want 3", a.Last().ID)
	}
	one := &Archive{Timelines: a.Timelines[:1]}
	if got := one.Gaps(); got != nil {
		t.Errorf("one timeline: Gaps() = %+v", got)
	}
	if (&Archive{}).Last() != nil || (&Archive{}).Gaps() != nil {
		t.Error("an empty archive has a timeline or a gap")
	}
}

// putSegment stores a segment as the uploader does: data, then record.
func putSegment(t *testing.T, st storage.Storage, s *Segment) {
	t.Helper()
	ctx := t.Context()
	if _, err := st.Put(ctx, s.Ref().DataKey(), strings.NewReader("zstd bytes"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := PutJSON(ctx, st, s.Ref().RecordKey(), s, true); err != nil {
		t.Fatal(err)
	}
}

func putTimeline(t *testing.T, st storage.Storage, tl Timeline) {
	t.Helper()
	if err := PutJSON(t.Context(), st, TimelineKey(tl.ID), &tl, true); err != nil {
		t.Fatal(err)
	}
}

func inTimeline(id TimelineID, s *Segment) *Segment { s.Timeline = id; return s }

// testArchive stores two timelines: the first with a compaction whose
// covered segments are not deleted yet and an orphaned upload, the second
// continuing in a new file. Other objects share the storage.
func testArchive(t *testing.T) *storagetest.Memory {
	t.Helper()
	st := storagetest.NewMemory()
	putTimeline(t, st, Timeline{ID: 1, Reason: ReasonFirst, Start: testPos(file1, 4), Created: testEpoch})
	for _, s := range []*Segment{
		testSeg(file1, 4, 100).withTxns(0, 1, 1, 2), testSeg(file1, 100, 200).withTxns(2, 3, 3, 4),
		testSeg(file1, 4, 200).withTxns(0, 3, 1, 4), // the compaction of the two above
		testSeg(file1, 200, 300).withTxns(4, 5, 5, 6),
		testSeg(file2, 4, 80).withPrev(file1, 300).withTxns(6, 7, 7, 7),
	} {
		putSegment(t, st, s)
	}
	// An upload interrupted between data and record.
	if _, err := st.Put(t.Context(), testSeg(file2, 80, 90).Ref().DataKey(), strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	putTimeline(t, st, Timeline{ID: 2, Reason: ReasonDiverged, Parent: 1, ParentEnd: &Position{file2, 80}, Start: testPos(file1, 4), Created: testEpoch.Add(time.Hour)})
	putSegment(t, st, inTimeline(2, testSeg(file1, 4, 50).withTxns(70, 71, 1, 1)))
	putSegment(t, st, inTimeline(2, testSeg(file2, 4, 60).withPrev(file1, 50)))
	// Not the archive's: ignored by Load.
	for _, key := range []string{"binlog/README.txt", "binlog/000001/notes.json", "snapshots/000001/manifest.json",
		"binlog/000001/0000000001/000000000004-000000000100.zst.tmp", LeaseKey} {
		if _, err := st.Put(t.Context(), key, strings.NewReader("{}"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestLoad(t *testing.T) {
	st := testArchive(t)
	for _, opts := range []LoadOptions{{}, {Concurrency: 1}} {
		t.Run(fmt.Sprintf("concurrency=%d", opts.Concurrency), func(t *testing.T) {
			a, err := Load(t.Context(), st, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Timelines) != 2 {
				t.Fatalf("%d timelines, want 2", len(a.Timelines))
			}
			t1, t2 := a.Timelines[0], a.Timelines[1]
			if t1.ID != 1 || t1.Reason != ReasonFirst || !t1.Created.Equal(testEpoch) || t2.ID != 2 || t2.ParentEnd == nil || *t2.ParentEnd != testPos(file2, 80) {
				t.Errorf("timeline records: %+v, %+v", t1.Timeline, t2.Timeline)
			}
			if got, want := rangesOf(t1.Segments), []string{"1:[4,200)", "1:[200,300)", "2:[4,80)"}; !slices.Equal(got, want) {
				t.Errorf("timeline 1 segments %v, want %v", got, want)
			}
			if got, want := t1.Orphans, []string{testSeg(file2, 80, 90).Ref().DataKey()}; !slices.Equal(got, want) {
				t.Errorf("timeline 1 orphans %v, want %v", got, want)
			}
			if got, want := rangesOf(t2.Segments), []string{"1:[4,50)", "2:[4,60)"}; !slices.Equal(got, want) {
				t.Errorf("timeline 2 segments %v, want %v", got, want)
			}
			if h := t1.Holes(); h != nil {
				t.Errorf("timeline 1 holes %+v", h)
			}
			c := t1.Coverage()
			if c.FirstGTID != "0-1-1" || c.LastGTID != "0-1-7" || c.To != testPos(file2, 80) || c.Segments != 3 || c.Orphans != 1 {
				t.Errorf("timeline 1 coverage %+v", c)
			}
			if s := t1.Segments[0]; s.Transactions != 4 || s.SHA256 != testSHA || !s.LastCommitTime.Equal(testEpoch.Add(3*time.Minute+456*time.Microsecond)) {
				t.Errorf("record read back as %+v", s)
			}
			if g := a.Gaps(); len(g) != 1 || g[0].Reason != ReasonDiverged {
				t.Errorf("gaps %+v", g)
			}
		})
	}

	t.Run("one timeline", func(t *testing.T) {
		a, err := Load(t.Context(), st, LoadOptions{Timeline: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Timelines) != 1 || a.Timelines[0].ID != 2 || len(a.Timelines[0].Segments) != 2 {
			t.Fatalf("loaded %+v", a.Timelines)
		}
	})
	t.Run("empty", func(t *testing.T) {
		a, err := Load(t.Context(), storagetest.NewMemory(), LoadOptions{})
		if err != nil || len(a.Timelines) != 0 || a.Last() != nil {
			t.Fatalf("Load = %+v, %v", a, err)
		}
		a, err = Load(t.Context(), st, LoadOptions{Timeline: 9})
		if err != nil || len(a.Timelines) != 0 {
			t.Fatalf("Load of a missing timeline = %+v, %v", a, err)
		}
	})
}

func TestLoadFindsWhatIsMissing(t *testing.T) {
	ctx := t.Context()
	t.Run("deleted segment record", func(t *testing.T) {
		st := testArchive(t)
		if err := st.Delete(ctx, testSeg(file1, 200, 300).Ref().RecordKey()); err != nil {
			t.Fatal(err)
		}
		a, err := Load(ctx, st, LoadOptions{Timeline: 1})
		if err != nil {
			t.Fatal(err)
		}
		ts := a.Timelines[0]
		if want := []Hole{{After: testPos(file1, 200), Before: testPos(file2, 4)}}; !reflect.DeepEqual(ts.Holes(), want) {
			t.Errorf("holes %+v, want %+v", ts.Holes(), want)
		}
		if !slices.Contains(ts.Orphans, testSeg(file1, 200, 300).Ref().DataKey()) {
			t.Errorf("orphans %v lack the data left without its record", ts.Orphans)
		}
	})
	t.Run("missing timeline record", func(t *testing.T) {
		st := testArchive(t)
		if err := st.Delete(ctx, TimelineKey(2)); err != nil {
			t.Fatal(err)
		}
		a, err := Load(ctx, st, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t2 := a.Timelines[1]
		if t2.ID != 2 || t2.Reason != "unknown" || len(t2.Segments) != 2 {
			t.Errorf("timeline without record: %+v with %d segments", t2.Timeline, len(t2.Segments))
		}
	})
	t.Run("record describing another segment", func(t *testing.T) {
		st := testArchive(t)
		s := testSeg(file1, 300, 400)
		s.End = 500
		if err := PutJSON(ctx, st, testSeg(file1, 300, 400).Ref().RecordKey(), s, true); err != nil {
			t.Fatal(err)
		}
		a, err := Load(ctx, st, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if is := a.IssuesOn(1); len(is) != 1 || is[0].Kind != IssueBadRecord || !strings.Contains(is[0].Detail, "describes") {
			t.Fatalf("issues on timeline 1: %v, want one bad record that describes another segment", is)
		}
	})
	t.Run("corrupted record", func(t *testing.T) {
		st := testArchive(t)
		key := testSeg(file1, 100, 200).Ref().RecordKey()
		st.Corrupt(key)
		a, err := Load(ctx, st, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if is := a.IssuesOn(1); len(is) != 1 || is[0].Kind != IssueCorrupt || is[0].Key != key {
			t.Fatalf("issues on timeline 1: %v, want %s corrupt", is, key)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		st := testArchive(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Load(cctx, st, LoadOptions{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Load = %v, want context.Canceled", err)
		}
	})
}

// TestLoadLenient leaves out and names every object a strict Load fails on
// or would take on trust, and keeps the rest of the timeline.
func TestLoadLenient(t *testing.T) {
	ctx := t.Context()
	const uid, otherUID = "11111111111111111111111111111111", "22222222222222222222222222222222"
	st := storagetest.NewMemory()
	putTimeline(t, st, Timeline{ID: 1, UID: uid, Reason: ReasonFirst, Start: testPos(file1, 4), Created: testEpoch})
	good := []*Segment{testSeg(file1, 4, 100), testSeg(file1, 100, 200), testSeg(file1, 200, 300), testSeg(file1, 300, 400), testSeg(file1, 400, 500)}
	for _, s := range good {
		s.TimelineUID = uid
		putSegment(t, st, s.stored(int64(len("zstd bytes"))))
	}
	// 1. Another archive's segment, filed between ours.
	foreign := testSeg(file1, 100, 150)
	foreign.TimelineUID = otherUID
	putSegment(t, st, foreign)
	// 2. Data of [200,300) gone, 3. data of [300,400) cut short, 4. record of [400,500) unreadable.
	if err := st.Delete(ctx, good[2].Ref().DataKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, good[3].Ref().DataKey(), strings.NewReader("zstd"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, good[4].Ref().RecordKey(), strings.NewReader("{not json"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// 5. A key that is not of this layout.
	if _, err := st.Put(ctx, "binlog/000001/notes.txt", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	a, err := Load(ctx, st, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range a.Issues {
		got = append(got, string(i.Kind)+" "+i.Key)
		if want := TimelineID(1); strings.HasSuffix(i.Key, ".txt") {
			want = 0
		} else if i.Timeline != want {
			t.Errorf("issue %s is filed under timeline %d, want %d", i, i.Timeline, want)
		}
	}
	want := []string{
		"foreign binlog/000001/0000000001/000000000100-000000000150.json",
		"foreign binlog/000001/0000000001/000000000100-000000000150.zst",
		"missing binlog/000001/0000000001/000000000200-000000000300.zst",
		"truncated binlog/000001/0000000001/000000000300-000000000400.zst",
		"bad_record binlog/000001/0000000001/000000000400-000000000500.json",
		"foreign binlog/000001/notes.txt",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("issues (in key order):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	tl := a.Timelines[0]
	if got, want := rangesOf(tl.Segments), []string{"1:[4,100)", "1:[100,200)"}; !slices.Equal(got, want) {
		t.Fatalf("usable segments %v, want %v (the foreign one must not cover or replace ours)", got, want)
	}
	if len(tl.Orphans) != 0 {
		t.Errorf("orphans %v: the foreign data object is not an orphan of ours", tl.Orphans)
	}
}

// TestWindowsRunThroughFailovers checks that a window runs on into a
// timeline that continues its own after a failover, and that a failover
// is no gap; after a purge, it ends.
func TestWindowsRunThroughFailovers(t *testing.T) {
	mk := func(reason TimelineReason, continues []string) *Archive {
		tl1 := &TimelineState{Timeline: Timeline{ID: 1, Reason: ReasonFirst, Start: testPos("bin.000001", 4)}, Segments: []*Segment{
			{Timeline: 1, File: "bin.000001", FileNum: 1, Start: 4, End: 100, TxnEnd: 100, LastCommitTime: time.Unix(100, 0)},
		}}
		tl2 := &TimelineState{Timeline: Timeline{ID: 2, Reason: reason, Parent: 1, Continues: continues, Start: testPos("bin.000007", 4)},
			Segments: []*Segment{
				{Timeline: 2, File: "bin.000007", FileNum: 7, Start: 4, End: 300, TxnEnd: 300, LastCommitTime: time.Unix(300, 0)},
			}}
		return &Archive{Timelines: []*TimelineState{tl1, tl2}}
	}
	snaps := []*Manifest{{ID: "s1", Timeline: 1, Binlog: testPos("bin.000001", 50), ConsistentAt: time.Unix(50, 0)}}
	for _, c := range []struct {
		reason    TimelineReason
		continues []string
		through   int
		gaps      int
	}{
		{ReasonFailover, []string{"0-1-9"}, 1, 0},
		{ReasonPurged, nil, 0, 1},
	} {
		arch := mk(c.reason, c.continues)
		w := Windows(arch, snaps)
		if len(w) != 1 || len(w[0].Through) != c.through {
			t.Errorf("%s: windows %+v; want one, through %d more timelines", c.reason, w, c.through)
			continue
		}
		if c.through > 0 && (!w[0].To.Equal(time.Unix(300, 0)) || w[0].EndsAt != testPos("bin.000007", 300)) {
			t.Errorf("%s: window ends %s at %s; want the continuing timeline's end", c.reason, w[0].To, w[0].EndsAt)
		}
		if g := arch.Gaps(); len(g) != c.gaps {
			t.Errorf("%s: gaps %+v, want %d", c.reason, g, c.gaps)
		}
	}
}
