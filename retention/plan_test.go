package retention

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func seg(tl catalog.TimelineID, file uint64, start, end uint64) *catalog.Segment {
	name := fmt.Sprintf("mysql-bin.%06d", file)
	s := &catalog.Segment{Timeline: tl, File: name, FileNum: file, Start: start, End: end}
	if start == 4 && file > 1 {
		s.Prev = &catalog.Position{File: fmt.Sprintf("mysql-bin.%06d", file-1), Pos: 1000}
	}
	return s
}

func pos(file uint64, p uint64) catalog.Position {
	return catalog.Position{File: fmt.Sprintf("mysql-bin.%06d", file), Pos: p}
}

func snap(ageHours int, tl catalog.TimelineID, at catalog.Position) *catalog.Manifest {
	started := now.Add(-time.Duration(ageHours) * time.Hour)
	id := catalog.SnapshotID(started.Format("20060102T150405Z") + "-abcd")
	return &catalog.Manifest{ID: id, Method: catalog.MethodLogical, Started: started, Finished: started, Timeline: tl, Binlog: at}
}

// fixture builds the input for an archive of two timelines: timeline 1 with
// files 1-2, timeline 2 with files 5-7 (each file [4,1000) in two segments).
func fixture(snaps []*catalog.Manifest, partial []catalog.SnapshotID, mutate func(*catalog.Archive)) Input {
	arch := &catalog.Archive{}
	var objs []storage.ObjectInfo
	old := now.Add(-48 * time.Hour)
	for _, tc := range []struct {
		id    catalog.TimelineID
		files []uint64
	}{{1, []uint64{1, 2}}, {2, []uint64{5, 6, 7}}} {
		ts := &catalog.TimelineState{Timeline: catalog.Timeline{ID: tc.id, Start: pos(tc.files[0], 4)}}
		objs = append(objs, storage.ObjectInfo{Key: catalog.TimelineKey(tc.id), ModTime: old})
		for _, f := range tc.files {
			for _, s := range []*catalog.Segment{seg(tc.id, f, 4, 500), seg(tc.id, f, 500, 1000)} {
				if tc.id == 2 && f == 5 && s.Start == 4 {
					s.Prev = nil // the timeline's first segment
				}
				ts.Segments = append(ts.Segments, s)
				objs = append(objs, storage.ObjectInfo{Key: s.Ref().DataKey(), Size: 10, ModTime: old},
					storage.ObjectInfo{Key: s.Ref().RecordKey(), Size: 1, ModTime: old})
			}
		}
		arch.Timelines = append(arch.Timelines, ts)
	}
	if mutate != nil {
		mutate(arch)
	}
	slices.SortFunc(objs, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	var sobjs []storage.ObjectInfo
	for _, m := range snaps {
		sobjs = append(sobjs, storage.ObjectInfo{Key: catalog.SnapshotObjectKey(m.ID, "data"), Size: 100, ModTime: m.Started},
			storage.ObjectInfo{Key: catalog.ManifestKey(m.ID), Size: 1, ModTime: m.Started})
	}
	for _, id := range partial {
		sobjs = append(sobjs, storage.ObjectInfo{Key: catalog.SnapshotObjectKey(id, "data"), Size: 100, ModTime: id.Time()})
	}
	return Input{Snapshots: &catalog.Snapshots{Complete: snaps, Partial: partial}, Archive: arch,
		SnapshotObjects: sobjs, BinlogObjects: objs, Now: now}
}

func TestMakePlan(t *testing.T) {
	s1 := snap(50, 1, pos(2, 600))
	s2 := snap(30, 2, pos(6, 200))
	s3 := snap(20, 2, pos(7, 100))
	s4 := snap(2, 2, pos(7, 900))
	all := []*catalog.Manifest{s1, s2, s3, s4}
	foreignSnap := snap(1, 2, pos(7, 950))
	foreignSnap.TimelineUID = "bbbb"
	oldPartial := catalog.SnapshotID(now.Add(-3*time.Hour).Format("20060102T150405Z") + "-0001")
	youngPartial := catalog.SnapshotID(now.Add(-10*time.Minute).Format("20060102T150405Z") + "-0002")

	for _, tc := range []struct {
		name    string
		snaps   []*catalog.Manifest
		partial []catalog.SnapshotID
		policy  Policy
		mutate  func(*catalog.Archive)
		// wantKeep are the kept snapshots; wantGone the keys deleted (in
		// order, a subsequence of the steps); wantKept keys that must survive.
		wantKeep []catalog.SnapshotID
		wantGone []string
		wantKept []string
		wantErr  error
		wantMsg  string
		wantNote string
	}{
		{name: "no policy keeps everything", snaps: all, wantKeep: []catalog.SnapshotID{s1.ID, s2.ID, s3.ID, s4.ID},
			wantKept: []string{seg(1, 1, 4, 500).Ref().RecordKey(), catalog.TimelineKey(1)}, wantNote: "no retention policy"},
		{name: "keep two", snaps: all, policy: Policy{KeepSnapshots: 2}, wantKeep: []catalog.SnapshotID{s3.ID, s4.ID},
			wantGone: []string{
				catalog.ManifestKey(s1.ID), catalog.SnapshotObjectKey(s1.ID, "data"),
				catalog.ManifestKey(s2.ID), catalog.SnapshotObjectKey(s2.ID, "data"),
				seg(1, 1, 4, 500).Ref().RecordKey(), seg(1, 1, 4, 500).Ref().DataKey(), seg(1, 2, 500, 1000).Ref().DataKey(),
				catalog.TimelineKey(1), // the timeline record last
				catalog.PrunedKey(2),   // written before the head's deletions
				seg(2, 5, 4, 500).Ref().RecordKey(), seg(2, 6, 500, 1000).Ref().DataKey(),
			},
			// s3's whole file stays: replay reads its format description.
			wantKept: []string{seg(2, 7, 4, 500).Ref().RecordKey(), seg(2, 7, 4, 500).Ref().DataKey(), catalog.TimelineKey(2)}},
		{name: "keep within a day", snaps: all, policy: Policy{KeepWithin: 24 * time.Hour}, wantKeep: []catalog.SnapshotID{s3.ID, s4.ID},
			wantGone: []string{catalog.ManifestKey(s2.ID), catalog.TimelineKey(1), seg(2, 6, 500, 1000).Ref().DataKey()}},
		{name: "count or age, whichever keeps more", snaps: all, policy: Policy{KeepSnapshots: 1, KeepWithin: 35 * time.Hour},
			wantKeep: []catalog.SnapshotID{s2.ID, s3.ID, s4.ID},
			wantGone: []string{catalog.ManifestKey(s1.ID), catalog.TimelineKey(1), seg(2, 5, 4, 500).Ref().RecordKey()},
			wantKept: []string{seg(2, 6, 4, 500).Ref().RecordKey()}},
		{name: "the newest snapshot is always kept", snaps: all, policy: Policy{KeepWithin: time.Minute},
			wantKeep: []catalog.SnapshotID{s4.ID}, wantKept: []string{seg(2, 7, 4, 500).Ref().RecordKey()}},
		{name: "partial snapshots: old collected, young kept", snaps: all, partial: []catalog.SnapshotID{oldPartial, youngPartial},
			policy: Policy{KeepSnapshots: 4}, wantKeep: []catalog.SnapshotID{s1.ID, s2.ID, s3.ID, s4.ID},
			wantGone: []string{catalog.SnapshotObjectKey(oldPartial, "data")},
			wantKept: []string{catalog.SnapshotObjectKey(youngPartial, "data"), seg(1, 2, 4, 500).Ref().RecordKey()}},
		{name: "a hole after the oldest kept snapshot refuses", snaps: all, policy: Policy{KeepSnapshots: 2},
			mutate: func(a *catalog.Archive) {
				tl := a.Timelines[1]
				tl.Segments = slices.Delete(tl.Segments, 4, 5) // file 7 [4,500), which s3 replays from
			}, wantErr: ErrDamaged},
		{name: "a GTID gap after the oldest kept snapshot refuses", snaps: all, policy: Policy{KeepSnapshots: 2},
			mutate: func(a *catalog.Archive) {
				// Positions meet, but transactions 0-1-11..0-1-19 are not in the archive.
				a.Timelines[1].Segments[4].GTIDs = []catalog.GTIDRange{{First: "0-1-9", Last: "0-1-10", Count: 2}}
				a.Timelines[1].Segments[5].GTIDs = []catalog.GTIDRange{{First: "0-1-20", Last: "0-1-20", Count: 1}}
			}, wantErr: ErrDamaged, wantMsg: "GTIDs 0-1-11..0-1-19 missing"},
		{name: "a GTID gap before the oldest kept snapshot is pruned away", snaps: all, policy: Policy{KeepSnapshots: 1},
			mutate: func(a *catalog.Archive) {
				a.Timelines[1].Segments[0].GTIDs = []catalog.GTIDRange{{First: "0-1-1", Last: "0-1-1", Count: 1}}
				a.Timelines[1].Segments[1].GTIDs = []catalog.GTIDRange{{First: "0-1-5", Last: "0-1-5", Count: 1}}
			}, wantKeep: []catalog.SnapshotID{s4.ID}, wantGone: []string{seg(2, 5, 4, 500).Ref().RecordKey()}},
		{name: "a segment's data missing after the oldest kept snapshot refuses", snaps: all, policy: Policy{KeepSnapshots: 2},
			mutate: func(a *catalog.Archive) {
				// The newest segment: no hole follows it, the issue alone tells.
				tl := a.Timelines[1]
				last := tl.Segments[len(tl.Segments)-1]
				tl.Segments = tl.Segments[:len(tl.Segments)-1]
				a.Issues = append(a.Issues, catalog.Issue{Key: last.Ref().DataKey(), Kind: catalog.IssueTruncated, Detail: "holds 3 bytes"})
			}, wantErr: ErrDamaged, wantMsg: seg(2, 7, 500, 1000).Ref().DataKey() + ": truncated"},
		{name: "a segment's data missing before the oldest kept snapshot is pruned away", snaps: all, policy: Policy{KeepSnapshots: 2},
			mutate: func(a *catalog.Archive) {
				a.Issues = append(a.Issues, catalog.Issue{Key: seg(1, 2, 4, 500).Ref().DataKey(), Kind: catalog.IssueMissing})
			}, wantKeep: []catalog.SnapshotID{s3.ID, s4.ID}, wantGone: []string{catalog.TimelineKey(1)}},
		{name: "another archive's segment record refuses, wherever it is", snaps: all, policy: Policy{KeepSnapshots: 2},
			mutate: func(a *catalog.Archive) {
				a.Issues = append(a.Issues, catalog.Issue{Key: seg(1, 1, 4, 300).Ref().RecordKey(), Kind: catalog.IssueForeign, Detail: "timeline uid"})
			}, wantErr: ErrDamaged, wantMsg: "foreign"},
		{name: "another archive's manifest refuses", snaps: append(slices.Clone(all), foreignSnap), policy: Policy{KeepSnapshots: 2},
			mutate:  func(a *catalog.Archive) { a.Timelines[1].UID = "aaaa" },
			wantErr: ErrDamaged, wantMsg: catalog.ManifestKey(foreignSnap.ID)},
		{name: "a hole before the oldest kept snapshot is pruned away", snaps: all, policy: Policy{KeepSnapshots: 1},
			mutate: func(a *catalog.Archive) {
				tl := a.Timelines[1]
				tl.Segments = slices.Delete(tl.Segments, 1, 2) // file 5 [500,1000)
			}, wantKeep: []catalog.SnapshotID{s4.ID}, wantGone: []string{seg(2, 6, 4, 500).Ref().RecordKey()}},
		{name: "archive not yet at the floor keeps the head", snaps: []*catalog.Manifest{s1, snap(1, 2, pos(9, 100))},
			policy: Policy{KeepSnapshots: 1}, wantKeep: []catalog.SnapshotID{snap(1, 2, pos(9, 100)).ID},
			wantGone: []string{catalog.TimelineKey(1)}, wantKept: []string{seg(2, 5, 4, 500).Ref().RecordKey()},
			wantNote: "does not reach"},
		{name: "snapshot not in the archive keeps every binlog", snaps: []*catalog.Manifest{s1, snap(1, 3, pos(9, 100))},
			policy: Policy{KeepSnapshots: 1}, wantKeep: []catalog.SnapshotID{snap(1, 3, pos(9, 100)).ID},
			wantGone: []string{catalog.ManifestKey(s1.ID)}, wantKept: []string{catalog.TimelineKey(1), seg(1, 1, 4, 500).Ref().RecordKey()},
			wantNote: "not in the archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fixture(tc.snaps, tc.partial, tc.mutate)
			in.Policy = tc.policy
			p, err := MakePlan(in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("MakePlan: %v, want %v naming %q", err, tc.wantErr, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprint(p.Keep), fmt.Sprint(tc.wantKeep); got != want {
				t.Errorf("kept %s, want %s", got, want)
			}
			var keys []string
			for _, s := range p.Steps {
				keys = append(keys, s.Key)
			}
			i := 0
			for _, k := range keys {
				if i < len(tc.wantGone) && k == tc.wantGone[i] {
					i++
				}
			}
			if i < len(tc.wantGone) {
				t.Errorf("steps do not delete %s in order; steps:\n%s", tc.wantGone[i], strings.Join(keys, "\n"))
			}
			for _, k := range tc.wantKept {
				if slices.Contains(keys, k) {
					t.Errorf("%s is deleted, want it kept", k)
				}
			}
			if !strings.Contains(p.BinlogKept, tc.wantNote) {
				t.Errorf("binlog note %q, want one mentioning %q", p.BinlogKept, tc.wantNote)
			}
			// Crash safety: every record goes before its data; a manifest before its objects.
			seen := map[string]int{}
			for i, k := range keys {
				seen[k] = i
			}
			for i, k := range keys {
				if ref, isRecord, err := catalog.ParseSegmentKey(k); err == nil && !isRecord {
					if j, ok := seen[ref.RecordKey()]; ok && j > i {
						t.Errorf("data %s deleted before its record", k)
					}
				}
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"zero", Policy{}, true},
		{"count", Policy{KeepSnapshots: 3}, true},
		{"negative count", Policy{KeepSnapshots: -1}, false},
		{"negative age", Policy{KeepWithin: -time.Hour}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
