package catalog

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func TestGenerationKeys(t *testing.T) {
	for _, tc := range []struct {
		gen   Generation
		fence *ArchivePos
		key   string
	}{
		{1, nil, "generations/0000000001.json"},
		{maxGeneration, nil, "generations/9999999999.json"},
		{7, &ArchivePos{3, 12, 4567}, "generations/0000000007-fence-000003-0000000012-000000004567.json"},
		{2, &ArchivePos{}, "generations/0000000002-fence-000000-0000000000-000000000000.json"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			key := GenerationKey(tc.gen)
			if tc.fence != nil {
				key = FenceKey(tc.gen, *tc.fence)
			}
			if key != tc.key {
				t.Fatalf("key %q, want %q", key, tc.key)
			}
			g, f, err := ParseGenerationKey(key)
			if err != nil || g != tc.gen || (f == nil) != (tc.fence == nil) || (f != nil && *f != *tc.fence) {
				t.Fatalf("ParseGenerationKey(%q) = %d, %v, %v", key, g, f, err)
			}
		})
	}
	for _, key := range []string{
		"generations/0000000000.json", "generations/000000001.json", "generations/00000000001.json",
		"generations/0000000001.zst", "generations/0000000001", "generation/0000000001.json",
		"generations/0000000001-fence-000003-0000000012.json", "generations/0000000001-fence-00003-0000000012-000000004567.json",
		"generations/0000000001-fence-000003-0000000012-00000000456x.json", "generations/0000000001-fenc-000003-0000000012-000000004567.json",
	} {
		if g, f, err := ParseGenerationKey(key); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseGenerationKey(%q) = %d, %v, %v; want ErrBadKey", key, g, f, err)
		}
	}
}

func FuzzParseGenerationKey(f *testing.F) {
	f.Add("generations/0000000001.json")
	f.Add("generations/0000000007-fence-000003-0000000012-000000004567.json")
	f.Add("generations/0000000000.json")
	f.Fuzz(func(t *testing.T, key string) {
		g, fence, err := ParseGenerationKey(key)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v does not wrap ErrBadKey", err)
			}
			return
		}
		canon := GenerationKey(g)
		if fence != nil {
			canon = FenceKey(g, *fence)
		}
		if canon != key || g == 0 {
			t.Fatalf("%q parsed as generation %d fence %v, spelled %q", key, g, fence, canon)
		}
	})
}

func TestSuperseded(t *testing.T) {
	objs := []storage.ObjectInfo{
		{Key: GenerationKey(1)}, {Key: FenceKey(1, ArchivePos{})},
		{Key: GenerationKey(2)}, {Key: FenceKey(2, ArchivePos{1, 3, 500})},
		{Key: GenerationKey(3)}, // claimed, its writer died before the fence
		{Key: GenerationKey(4)}, {Key: FenceKey(4, ArchivePos{2, 1, 4})},
		{Key: "generations/junk"},
	}
	gs, issues := ReadGenerations(objs)
	if gs.Newest != 4 || len(issues) != 1 || issues[0].Key != "generations/junk" {
		t.Fatalf("ReadGenerations = newest %d, issues %v", gs.Newest, issues)
	}
	for _, tc := range []struct {
		name  string
		gen   Generation
		end   ArchivePos
		by    Generation
		super bool
	}{
		{"before generations, up to the first fence", 0, ArchivePos{}, 0, false},
		{"before generations, past the first fence", 0, ArchivePos{1, 1, 100}, 1, true},
		{"generation 1 up to generation 2's fence", 1, ArchivePos{1, 3, 500}, 0, false},
		{"generation 1 past generation 2's fence", 1, ArchivePos{1, 3, 501}, 2, true},
		{"generation 1 on a later file", 1, ArchivePos{1, 4, 100}, 2, true},
		{"generation 1 on a later timeline", 1, TimelineStartPos(2), 2, true},
		{"generation 2 on timeline 2 before 4's fence", 2, ArchivePos{2, 1, 4}, 0, false},
		{"generation 2 past 4's fence (3 has none)", 2, ArchivePos{2, 1, 5}, 4, true},
		{"generation 3 past 4's fence", 3, ArchivePos{2, 1, 500}, 4, true},
		{"the newest writes anywhere", 4, ArchivePos{9, 9, 9}, 0, false},
		{"a generation nobody claimed yet", 5, ArchivePos{9, 9, 9}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			by, _, super := gs.Superseded(tc.gen, tc.end)
			if super != tc.super || by != tc.by {
				t.Fatalf("Superseded(%d, %v) = %d, %v; want %d, %v", tc.gen, tc.end, by, super, tc.by, tc.super)
			}
		})
	}
}

// genSeg is a valid record of timeline 1 stored by generation gen.
func genSeg(file string, start, end uint64, gen Generation) *Segment {
	s := testSeg(file, start, end)
	s.Gen = gen
	return s
}

func putFence(t *testing.T, st storage.Storage, gen Generation, fence ArchivePos) {
	t.Helper()
	if err := ClaimGeneration(t.Context(), st, GenerationRecord{Gen: gen, Fence: fence, Reason: GenerationAcquired, Session: NewSession()}); err != nil {
		t.Fatal(err)
	}
}

// splitBrainArchive is what two writers leave when the first, cut off,
// kept storing after the second took over at the end of [100,200):
// generation 1's [200,250) and [250,400), and its timeline 2, are
// superseded; generation 2's [200,300) continues the archive.
func splitBrainArchive(t *testing.T) *storagetest.Memory {
	t.Helper()
	st := storagetest.NewMemory()
	putFence(t, st, 1, ArchivePos{})
	tl := Timeline{ID: 1, Gen: 1, Reason: ReasonFirst, Start: testPos(file1, 4), Created: testEpoch}
	if err := PutJSON(t.Context(), st, tl.Key(), &tl, true); err != nil {
		t.Fatal(err)
	}
	putSegment(t, st, genSeg(file1, 4, 100, 1))
	putSegment(t, st, genSeg(file1, 100, 200, 1))
	putFence(t, st, 2, ArchivePos{1, 1, 200})
	putSegment(t, st, genSeg(file1, 200, 300, 2))
	putSegment(t, st, genSeg(file1, 200, 250, 1))
	putSegment(t, st, genSeg(file1, 250, 400, 1))
	stale := Timeline{ID: 2, Gen: 1, Reason: ReasonDiverged, Start: testPos(file1, 4), Created: testEpoch}
	if err := PutJSON(t.Context(), st, stale.Key(), &stale, true); err != nil {
		t.Fatal(err)
	}
	seg := genSeg(file1, 4, 80, 1)
	seg.Timeline = 2
	putSegment(t, st, seg)
	return st
}

func TestLoadLeavesOutSupersededWriters(t *testing.T) {
	st := splitBrainArchive(t)
	a, err := Load(t.Context(), st, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Issues) != 0 {
		t.Errorf("issues %v: a superseded writer's objects are not damage", a.Issues)
	}
	if len(a.Timelines) != 1 || a.Timelines[0].ID != 1 {
		t.Fatalf("timelines %d, want timeline 1 only (timeline 2 is the superseded writer's)", len(a.Timelines))
	}
	if got, want := rangesOf(a.Timelines[0].Segments), []string{"1:[4,100)", "1:[100,200)", "1:[200,300)"}; !slices.Equal(got, want) {
		t.Errorf("segments %v, want %v", got, want)
	}
	if h := a.Timelines[0].Holes(); h != nil {
		t.Errorf("holes %v", h)
	}
	var want []string
	for _, s := range []*Segment{genSeg(file1, 200, 250, 1), genSeg(file1, 250, 400, 1)} {
		want = append(want, s.Ref().RecordKey(), s.Ref().DataKey())
	}
	seg := genSeg(file1, 4, 80, 1)
	seg.Timeline = 2
	want = append(want, seg.Ref().RecordKey(), seg.Ref().DataKey(), TimelineRecordKey(2, 1))
	slices.Sort(want)
	if !slices.Equal(a.Superseded, want) {
		t.Errorf("superseded:\n%s\nwant:\n%s", strings.Join(a.Superseded, "\n"), strings.Join(want, "\n"))
	}

	refs, err := LoadTailRefs(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if refs.Newest != 1 || refs.Last == nil || *refs.Last != genSeg(file1, 200, 300, 2).Ref() || refs.RecordGen != 1 || refs.Generations.Newest != 2 {
		t.Errorf("tail refs %+v, last %v; want timeline 1 ending with generation 2's [200,300)", refs, refs.Last)
	}
	if got, want := refs.End(), (ArchivePos{1, 1, 300}); got != want {
		t.Errorf("End() = %v, want %v", got, want)
	}
	tail, _, err := LoadTail(t.Context(), st)
	if err != nil || tail.ID != 1 || tail.Gen != 1 || len(tail.Segments) != 1 || tail.Segments[0].Gen != 2 {
		t.Fatalf("LoadTail = %+v, %v", tail, err)
	}
}

func TestClaimGeneration(t *testing.T) {
	ctx := t.Context()
	st := storagetest.NewMemory()
	a, err := PrepareClaim(st, GenerationRecord{Gen: 1, Reason: GenerationAcquired, Session: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx); err != nil {
		t.Fatal(err)
	}
	// The same claim again (its first answer lost): still its own.
	if err := a.Put(ctx); err != nil {
		t.Fatalf("a writer's retried claim: %v", err)
	}
	// Another writer that read the same newest generation loses.
	if err := ClaimGeneration(ctx, st, GenerationRecord{Gen: 1, Fence: ArchivePos{1, 1, 500}, Session: "b"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a second claim of generation 1: %v, want ErrFenced", err)
	}
	if err := CheckGeneration(ctx, st, 1); err != nil {
		t.Fatalf("CheckGeneration(1) with no later claim: %v", err)
	}
	if err := ClaimGeneration(ctx, st, GenerationRecord{Gen: 2, Fence: ArchivePos{1, 1, 100}, Session: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := CheckGeneration(ctx, st, 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("CheckGeneration(1) after generation 2 was claimed: %v, want ErrFenced", err)
	}
	gs, err := LoadGenerations(ctx, st)
	if err != nil || gs.Newest != 2 {
		t.Fatalf("LoadGenerations = %d, %v", gs.Newest, err)
	}
	if _, _, super := gs.Superseded(1, ArchivePos{1, 1, 101}); !super {
		t.Error("generation 1 past generation 2's fence is not superseded")
	}
}

func TestCompleteRecords(t *testing.T) {
	ctx := t.Context()
	st := splitBrainArchive(t)
	at := testEpoch.Add(time.Hour)
	for _, c := range []*Complete{
		{Timeline: 1, Gen: 2, Through: testPos(file1, 300), FileNum: 1, At: at},
		{Timeline: 1, Gen: 1, Through: testPos(file1, 400), FileNum: 1, At: at.Add(time.Minute)}, // past generation 2's fence
	} {
		if err := PutComplete(ctx, st, c); err != nil {
			t.Fatal(err)
		}
	}
	a, err := Load(ctx, st, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tl := a.Timelines[0]
	if tl.Complete == nil || tl.Complete.Gen != 2 || !tl.Complete.At.Equal(at) {
		t.Fatalf("complete %+v, want generation 2's at %v", tl.Complete, at)
	}
	if !slices.Contains(a.Superseded, CompleteKey(1, 1)) {
		t.Errorf("superseded %v lacks generation 1's completeness record", a.Superseded)
	}
	snap := []*Manifest{{ID: "20251007T054150Z-0001", Binlog: testPos(file1, 100), Timeline: 1, ConsistentAt: testEpoch}}
	if w := Windows(a, snap); len(w) != 1 || !w[0].To.Equal(at) {
		t.Errorf("windows %+v: the window must reach the moment the archive is known complete, %v", w, at)
	}
	// One the archive does not reach (its segment not stored yet) is not used.
	if err := PutComplete(ctx, st, &Complete{Timeline: 1, Gen: 2, Through: testPos(file1, 350), FileNum: 1, At: at.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	a, err = Load(ctx, st, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := a.Timelines[0].Complete; c != nil {
		t.Errorf("complete %+v: the archive does not reach %s", c, testPos(file1, 350))
	}
	if windows := Windows(a, snap); len(windows) != 1 || !windows[0].To.Equal(testEpoch) {
		t.Errorf("windows %+v", windows)
	}
}

func TestCheckArchive(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		keys []string
		ok   bool
	}{
		{"nothing stored", nil, false},
		{"something else stored", []string{"notes.txt", "backups/x"}, false},
		{"an archive", []string{ArchiveKey}, true},
		{"an archive from before archive.json", []string{TimelineKey(1)}, true},
		{"only snapshots", []string{"snapshots/20251007T054150Z-0001/manifest.json"}, true},
		{"only a lease", []string{LeaseKey}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := storagetest.NewMemory()
			for _, k := range tc.keys {
				if _, err := st.Put(ctx, k, strings.NewReader("{}"), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckArchive(ctx, storage.ReadOnly(st))
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrNoArchive)) {
				t.Fatalf("CheckArchive = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	st := storagetest.NewMemory()
	if err := EnsureArchive(ctx, st, "test"); err != nil {
		t.Fatal(err)
	}
	var rec ArchiveRecord
	if err := GetJSON(ctx, st, ArchiveKey, &rec); err != nil || rec.UID == "" {
		t.Fatalf("archive record %+v, %v", rec, err)
	}
	if err := EnsureArchive(ctx, st, "test again"); err != nil {
		t.Fatal(err)
	}
	var again ArchiveRecord
	if err := GetJSON(ctx, st, ArchiveKey, &again); err != nil || again.UID != rec.UID {
		t.Fatalf("a second EnsureArchive replaced the record: %+v, %v", again, err)
	}
}

func TestLoadSnapshotsChecksManifests(t *testing.T) {
	ctx := t.Context()
	const older, newer = SnapshotID("20251007T054150Z-0001"), SnapshotID("20251008T054150Z-0002")
	manifest := func(id SnapshotID) *Manifest {
		return &Manifest{ID: id, Method: MethodLogical, Binlog: testPos(file1, 100), Started: testEpoch, Finished: testEpoch.Add(time.Minute),
			Objects: []SnapshotObject{{Name: "schema.json.zst", Size: 10, StoredSize: 2, SHA256: testSHA}}, Bytes: 10, StoredBytes: 2}
	}
	for _, tc := range []struct {
		name   string
		change func(st storage.Storage, m *Manifest) any // what to store as newer's manifest
		kind   IssueKind
		detail string
	}{
		{"valid", func(_ storage.Storage, m *Manifest) any { return m }, "", ""},
		{"emptied", func(storage.Storage, *Manifest) any { return map[string]any{} }, IssueBadRecord, "names no snapshot"},
		{"an older snapshot's manifest under the newer key", func(_ storage.Storage, _ *Manifest) any { return manifest(older) },
			IssueBadRecord, "describes snapshot " + string(older)},
		{"no method", func(_ storage.Storage, m *Manifest) any { m.Method = ""; return m }, IssueBadRecord, "unknown method"},
		{"object missing", func(st storage.Storage, m *Manifest) any {
			st.Delete(ctx, SnapshotObjectKey(newer, "schema.json.zst"))
			return m
		}, IssueMissing, "which is missing"},
		{"object of another size", func(_ storage.Storage, m *Manifest) any { m.Objects[0].StoredSize = 3; m.StoredBytes = 3; return m },
			IssueMissing, "records 3 bytes"},
		{"totals disagree", func(_ storage.Storage, m *Manifest) any { m.Bytes = 11; return m }, IssueBadRecord, "totals"},
		{"not JSON", func(storage.Storage, *Manifest) any { return "{" }, IssueBadRecord, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := storagetest.NewMemory()
			for _, id := range []SnapshotID{older, newer} {
				if _, err := st.Put(ctx, SnapshotObjectKey(id, "schema.json.zst"), strings.NewReader("zz"), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteManifest(ctx, st, manifest(older)); err != nil {
				t.Fatal(err)
			}
			v := tc.change(st, manifest(newer))
			if s, ok := v.(string); ok {
				if _, err := st.Put(ctx, ManifestKey(newer), strings.NewReader(s), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			} else if err := PutJSON(ctx, st, ManifestKey(newer), v, true); err != nil {
				t.Fatal(err)
			}
			snaps, err := LoadSnapshots(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if tc.kind == "" {
				if len(snaps.Complete) != 2 || len(snaps.Invalid) != 0 {
					t.Fatalf("complete %d, invalid %v", len(snaps.Complete), snaps.Invalid)
				}
				return
			}
			if len(snaps.Complete) != 1 || snaps.Complete[0].ID != older {
				t.Fatalf("complete %v: want only %s", snaps.Complete, older)
			}
			if len(snaps.Invalid) != 1 || snaps.Invalid[0].Kind != tc.kind || snaps.Invalid[0].Key != ManifestKey(newer) ||
				!strings.Contains(snaps.Invalid[0].Detail, tc.detail) {
				t.Fatalf("invalid %v, want %s %s: …%s…", snaps.Invalid, tc.kind, ManifestKey(newer), tc.detail)
			}
			if got := snaps.Skipped(older.Time()); len(got) != 1 {
				t.Errorf("Skipped after %s = %v, want the newer one", older, got)
			}
		})
	}
}

// TestClaimLostAnswerEncrypted: a writer holding only the archive's public
// recipient, whose claim was stored but whose answer was lost, recognises
// its own claim on the retry; another writer's claim is not taken for its
// own.
func TestClaimLostAnswerEncrypted(t *testing.T) {
	ctx := t.Context()
	faulty := storagetest.NewFaulty(storagetest.NewMemory(), 1, storagetest.Faults{})
	w, _ := writerOnly(t, faulty)
	c, err := PrepareClaim(w, GenerationRecord{Gen: 1, Reason: GenerationAcquired, Session: "a"})
	if err != nil {
		t.Fatal(err)
	}
	faulty.SetFaults(storagetest.Faults{PutAckLossRate: 1})
	if err := c.Put(ctx); err == nil {
		t.Fatal("a put whose answer was lost reported success")
	}
	faulty.SetFaults(storagetest.Faults{})
	if err := c.Put(ctx); err != nil {
		t.Fatalf("the retried claim: %v", err)
	}
	other, err := PrepareClaim(w, GenerationRecord{Gen: 1, Reason: GenerationAcquired, Session: "a"}) // same content, another encryption
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Put(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("another claim of generation 1: %v, want ErrFenced", err)
	}
}
