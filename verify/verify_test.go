package verify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/retention"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/s3"
)

// buildArchive archives a fresh MariaDB's binlog into st across four
// binlog files, with one logical snapshot in the second, and returns that
// snapshot. Rows go in batches of five transactions, each batch archived
// before the next starts, so that most segments hold whole batches; pad
// lengthens each row, so that two archives' positions differ.
func buildArchive(t *testing.T, st storage.Storage, serverID uint32, pad int) *catalog.Manifest {
	t.Helper()
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: serverID})
	streamer := archivetest.Stream(t, db, st, 50*time.Millisecond)
	cfg, err := mysql.ParseDSN(db.PitrDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))")
	var m *catalog.Manifest
	for f := 0; f < 4; f++ {
		for batch := 0; batch < 3; batch++ {
			for i := 0; i < 5; i++ {
				db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprintf("file %d batch %d row %d%s", f, batch, i, strings.Repeat(".", pad)))
			}
			archivetest.WaitArchived(t, streamer, db)
		}
		if f == 1 {
			if m, err = snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1,
				Timeline: streamer.Status().Timeline}); err != nil {
				t.Fatal(err)
			}
		}
		if f < 3 {
			db.Exec(t, "FLUSH BINARY LOGS")
		}
	}
	archivetest.WaitArchived(t, streamer, db)
	return m
}

// fileStore opens a file:// store on dir.
func fileStore(t *testing.T, dir string) *file.Store {
	t.Helper()
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// copyObject copies key from one store to another through the Storage interface.
func copyObject(t *testing.T, from, to storage.Storage, key string) {
	t.Helper()
	rc, err := from.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := to.Put(t.Context(), key, strings.NewReader(string(b)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func copyAll(t *testing.T, from, to storage.Storage) {
	t.Helper()
	objs, err := from.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		copyObject(t, from, to, o.Key)
	}
}

// flipByte damages a stored file in place, leaving the checksum the backend
// recorded (an extended attribute) as it was.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// gtidSegments returns the timeline's segments that hold transactions with
// GTIDs and are followed by one that does too: the places where deleting a
// segment must show as a GTID gap between its two neighbours.
func gtidSegments(t *testing.T, tl *catalog.TimelineState) []int {
	t.Helper()
	var out []int
	for i := 1; i+1 < len(tl.Segments); i++ {
		if len(tl.Segments[i].GTIDs) > 0 && tl.Segments[i].GTIDs[0].Count > 1 && len(tl.Segments[i+1].GTIDs) > 0 {
			out = append(out, i)
		}
	}
	if len(out) < 3 {
		t.Fatalf("only %d segments with GTIDs between others: %+v", len(out), tl.Segments)
	}
	return out
}

// TestVerify damages copies of a real archive one way each and checks that
// verify names the exact object and what is wrong with it, the GTIDs a
// damaged chain lacks, and each snapshot's verdict.
func TestVerify(t *testing.T) {
	pristine, other := t.TempDir(), t.TempDir()
	var snapA, snapB *catalog.Manifest
	t.Run("build", func(t *testing.T) {
		snapA = buildArchive(t, fileStore(t, pristine), 0, 20)
		snapB = buildArchive(t, fileStore(t, other), 2, 0)
	})
	if snapA == nil || snapB == nil {
		t.Fatal("archives not built")
	}
	arch, err := catalog.Load(t.Context(), fileStore(t, pristine), catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(arch.Timelines) != 1 {
		t.Fatalf("%d timelines, want 1", len(arch.Timelines))
	}
	tl := arch.Timelines[0]
	segs := tl.Segments
	mid := gtidSegments(t, tl)
	newest := segs[len(segs)-1]
	if catalog.ComparePositions(catalog.Position{File: segs[mid[len(mid)-2]].File, Pos: segs[mid[len(mid)-2]].Start}, snapA.Binlog) <= 0 {
		t.Fatalf("the damaged segments must lie after the snapshot at %s", snapA.Binlog)
	}
	flipped, deleted := segs[mid[len(mid)-1]], segs[mid[len(mid)-2]]
	deletedAt := mid[len(mid)-2]

	otherStore := fileStore(t, other)
	otherArch, err := catalog.Load(t.Context(), otherStore, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var foreign *catalog.Segment
	for _, s := range otherArch.Timelines[0].Segments {
		if _, err := os.Stat(filepath.Join(pristine, filepath.FromSlash(s.Ref().RecordKey()))); os.IsNotExist(err) && len(s.GTIDs) > 0 {
			foreign = s
			break
		}
	}
	if foreign == nil {
		t.Fatal("every segment key of the second archive is also in the first")
	}

	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string, st storage.Storage)
		objects []wantObject // exactly these objects are named
		breaks  []string
		check   func(t *testing.T, r *Report)
		// prune: what prune --keep-snapshots 1 does on the damaged copy:
		// "refuses" (ErrDamaged, nothing deleted) or "runs".
		prune string
	}{
		{name: "whole archive", damage: func(*testing.T, string, storage.Storage) {},
			check: func(t *testing.T, r *Report) {
				s := r.Snapshots[0]
				if len(r.Snapshots) != 1 || !s.Consistent || !s.Restorable || s.Window == nil {
					t.Fatalf("snapshot verdict %+v, want consistent, restorable with a window", r.Snapshots)
				}
				if s.Window.EndsAt != (catalog.Position{File: newest.File, Pos: newest.End}) {
					t.Errorf("window ends at %s, want the archive's end %s:%d", s.Window.EndsAt, newest.File, newest.End)
				}
				if !r.Timelines[0].GTIDs {
					t.Error("timeline reported without GTIDs: continuity was not judged by GTID")
				}
			}, prune: "runs"},
		{name: "a flipped byte in a segment", damage: func(t *testing.T, dir string, _ storage.Storage) {
			flipByte(t, filepath.Join(dir, filepath.FromSlash(flipped.Ref().DataKey())))
		}, objects: []wantObject{{flipped.Ref().DataKey(), catalog.IssueCorrupt}},
			breaks: []string{gapString(segs, mid[len(mid)-1])},
			check:  notRestorable},
		{name: "an object deleted mid-chain", damage: func(t *testing.T, _ string, st storage.Storage) {
			if err := st.Delete(t.Context(), deleted.Ref().DataKey()); err != nil {
				t.Fatal(err)
			}
		}, objects: []wantObject{{deleted.Ref().DataKey(), catalog.IssueMissing}},
			breaks: []string{gapString(segs, deletedAt)},
			check:  notRestorable, prune: "refuses"},
		{name: "the newest object truncated", damage: func(t *testing.T, dir string, _ storage.Storage) {
			path := filepath.Join(dir, filepath.FromSlash(newest.Ref().DataKey()))
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, objects: []wantObject{{newest.Ref().DataKey(), catalog.IssueTruncated}}, prune: "refuses",
			check: func(t *testing.T, r *Report) {
				// The snapshot still restores, to the end of what is left.
				s := r.Snapshots[0]
				prev := segs[len(segs)-2]
				if !s.Restorable || s.Window == nil || s.Window.EndsAt != (catalog.Position{File: prev.File, Pos: prev.End}) {
					t.Fatalf("snapshot %+v, want restorable to %s:%d", s, prev.File, prev.End)
				}
			}},
		{name: "a segment copied in from another archive", damage: func(t *testing.T, _ string, st storage.Storage) {
			copyObject(t, otherStore, st, foreign.Ref().DataKey())
			copyObject(t, otherStore, st, foreign.Ref().RecordKey())
		}, objects: []wantObject{{foreign.Ref().DataKey(), catalog.IssueForeign}, {foreign.Ref().RecordKey(), catalog.IssueForeign}},
			prune: "refuses",
			check: func(t *testing.T, r *Report) {
				if s := r.Snapshots[0]; !s.Restorable || s.Window == nil {
					t.Fatalf("our snapshot %+v, want it still restorable", s)
				}
			}},
		{name: "a manifest copied in from another archive", damage: func(t *testing.T, _ string, st storage.Storage) {
			copyObject(t, otherStore, st, catalog.ManifestKey(snapB.ID))
		}, objects: []wantObject{{catalog.ManifestKey(snapB.ID), catalog.IssueForeign}}, prune: "refuses",
			check: func(t *testing.T, r *Report) {
				for _, s := range r.Snapshots {
					switch s.ID {
					case snapB.ID:
						if !s.Foreign || s.Consistent || s.Restorable {
							t.Errorf("foreign snapshot verdict %+v", s)
						}
					case snapA.ID:
						if !s.Restorable {
							t.Errorf("our snapshot %+v, want it still restorable", s)
						}
					}
				}
			}},
		{name: "a manifest whose GTID state is not the archive's", damage: func(t *testing.T, _ string, st storage.Storage) {
			m := *snapA
			set, err := catalog.ParseGTIDSet(m.GTIDSet)
			last := set.Last()
			if err != nil || len(last) != 1 {
				t.Fatalf("snapshot GTID state %q: %v", m.GTIDSet, err)
			}
			last[0].Seq += 3
			m.GTIDSet = last[0].String()
			if err := catalog.PutJSON(t.Context(), st, catalog.ManifestKey(m.ID), &m, false); err != nil {
				t.Fatal(err)
			}
		}, objects: []wantObject{{catalog.ManifestKey(snapA.ID), catalog.IssueBadRecord}},
			check: func(t *testing.T, r *Report) {
				if s := r.Snapshots[0]; s.Consistent || s.Restorable || !strings.Contains(strings.Join(s.Problems, "\n"), "GTID state") {
					t.Fatalf("snapshot %+v, want it refused for its GTID state", s)
				}
			}},
		{name: "a manifest copied in from an archive without timeline UIDs", damage: func(t *testing.T, _ string, st storage.Storage) {
			// Written before manifests carried a UID: only its GTIDs tell.
			m := *snapB
			m.TimelineUID = ""
			if err := catalog.PutJSON(t.Context(), st, catalog.ManifestKey(m.ID), &m, true); err != nil {
				t.Fatal(err)
			}
		}, objects: append([]wantObject{{catalog.ManifestKey(snapB.ID), catalog.IssueBadRecord}}, missingObjects(snapB)...),
			check: func(t *testing.T, r *Report) {
				for _, s := range r.Snapshots {
					if s.ID == snapB.ID && (s.Consistent || s.Restorable) {
						t.Errorf("the other archive's snapshot %+v, want it refused", s)
					}
				}
			}},
		{name: "a key not of the layout", damage: func(t *testing.T, _ string, st storage.Storage) {
			if _, err := st.Put(t.Context(), "backups/dump.sql", strings.NewReader("--"), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			// A drill's record is the archive's own.
			if err := catalog.PutJSON(t.Context(), st, catalog.DrillKey(time.Now()), &catalog.Drill{Target: "latest"}, true); err != nil {
				t.Fatal(err)
			}
		}, objects: []wantObject{{"backups/dump.sql", catalog.IssueForeign}}},
		{name: "a manifest deleted", damage: func(t *testing.T, _ string, st storage.Storage) {
			if err := st.Delete(t.Context(), catalog.ManifestKey(snapA.ID)); err != nil {
				t.Fatal(err)
			}
		}, check: func(t *testing.T, r *Report) {
			if len(r.Snapshots) != 0 || !slices.Equal(r.Partial, []catalog.SnapshotID{snapA.ID}) || len(r.Windows) != 0 {
				t.Fatalf("snapshots %+v, partial %v, windows %v: want the snapshot partial and no window", r.Snapshots, r.Partial, r.Windows)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st := fileStore(t, dir)
			copyAll(t, fileStore(t, pristine), st)
			tc.damage(t, dir, st)
			r, err := Run(t.Context(), st, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, r, tc.objects, tc.breaks)
			if tc.check != nil {
				tc.check(t, r)
			}
			if tc.prune != "" {
				checkPrune(t, st, tc.prune == "refuses")
			}
		})
	}
	t.Run("on S3", func(t *testing.T) {
		verifyOnS3(t, fileStore(t, pristine), otherStore, flipped, foreign, gapString(segs, mid[len(mid)-1]))
	})
}

// verifyOnS3 runs verify against a copy of the archive in versitygw: a
// whole copy passes clean; a flipped byte and an object copied in from
// another archive are named.
func verifyOnS3(t *testing.T, pristine, other storage.Storage, flipped, foreign *catalog.Segment, flippedGap string) {
	gw := testbed.StartS3(t)
	gw.SetEnv(t)
	open := func(t *testing.T, prefix string) *s3.Store {
		cfg, err := s3.ParseURL(gw.URL(prefix))
		if err != nil {
			t.Fatal(err)
		}
		st, err := s3.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		copyAll(t, pristine, st)
		return st
	}
	t.Run("whole", func(t *testing.T) {
		st := open(t, "whole")
		r, err := Run(t.Context(), st, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, r, nil, nil)
		if len(r.Snapshots) != 1 || !r.Snapshots[0].Restorable {
			t.Fatalf("snapshots %+v, want one restorable", r.Snapshots)
		}
	})
	t.Run("a flipped byte and a foreign segment", func(t *testing.T) {
		st := open(t, "damaged")
		flipByte(t, gw.ObjectPath(st.Config().Prefix+flipped.Ref().DataKey()))
		copyObject(t, other, st, foreign.Ref().DataKey())
		copyObject(t, other, st, foreign.Ref().RecordKey())
		r, err := Run(t.Context(), st, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, r, []wantObject{{flipped.Ref().DataKey(), catalog.IssueCorrupt},
			{foreign.Ref().DataKey(), catalog.IssueForeign}, {foreign.Ref().RecordKey(), catalog.IssueForeign}}, []string{flippedGap})
		notRestorable(t, r)
	})
}

// missingObjects are the objects of a snapshot whose manifest alone was copied.
func missingObjects(m *catalog.Manifest) []wantObject {
	var out []wantObject
	for _, o := range m.Objects {
		out = append(out, wantObject{catalog.SnapshotObjectKey(m.ID, o.Name), catalog.IssueMissing})
	}
	return out
}

// checkPrune runs a prune that keeps one snapshot and checks that it
// refuses, deleting nothing, or runs.
func checkPrune(t *testing.T, st storage.Storage, refuses bool) {
	t.Helper()
	before, err := st.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = retention.Prune(t.Context(), retention.Options{Store: st, Policy: retention.Policy{KeepSnapshots: 1}})
	after, lerr := st.List(t.Context(), "")
	if lerr != nil {
		t.Fatal(lerr)
	}
	switch {
	case refuses && !errors.Is(err, retention.ErrDamaged):
		t.Errorf("prune on the damaged archive: %v, want it refused", err)
	case refuses && len(after) != len(before):
		t.Errorf("prune refused but changed storage: %d objects before, %d after", len(before), len(after))
	case !refuses && err != nil:
		t.Errorf("prune: %v", err)
	}
	if err != nil {
		t.Logf("prune: %v", err)
	}
}

// gapString is the break verify reports when segment i of segs is lost.
func gapString(segs []*catalog.Segment, i int) string {
	p, s, n := segs[i-1], segs[i], segs[i+1]
	return fmt.Sprintf("gap on timeline 1: GTIDs %s..%s missing; binlog %s:%d..%s:%d missing between %s and %s",
		s.GTIDs[0].First, s.GTIDs[0].Last, p.File, p.End, n.File, n.Start, p.Ref().RecordKey(), n.Ref().RecordKey())
}

func notRestorable(t *testing.T, r *Report) {
	if s := r.Snapshots[0]; !s.Consistent || s.Restorable || s.Window != nil {
		t.Fatalf("snapshot %+v: want consistent but not restorable past the damage", s)
	}
}

// wantObject is an object a report must name, and how.
type wantObject struct {
	key  string
	kind catalog.IssueKind
}

// checkReport asserts the report names exactly the objects and breaks wanted.
func checkReport(t *testing.T, r *Report, objects []wantObject, breaks []string) {
	t.Helper()
	var got, want []string
	for _, o := range r.Objects {
		got = append(got, string(o.Kind)+" "+o.Key)
	}
	for _, o := range objects {
		want = append(want, string(o.kind)+" "+o.key)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("objects named:\n%s\nwant:\n%s\n(details: %+v)", strings.Join(got, "\n"), strings.Join(want, "\n"), r.Objects)
	}
	got = nil
	for _, tl := range r.Timelines {
		for _, b := range tl.Breaks {
			got = append(got, b.String())
		}
	}
	if !slices.Equal(got, breaks) {
		t.Errorf("breaks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(breaks, "\n"))
	}
	if damaged := len(objects) > 0 || len(breaks) > 0; r.Damaged != damaged {
		t.Errorf("damaged = %v, want %v", r.Damaged, damaged)
	}
}
