package retention

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestPruneKeepsWhatRestoresNeed takes four snapshots with writes and
// binlog rotations between them while a streamer archives, prunes to the
// newest two, and shows by planning restores that every kept snapshot still
// restores and everything its plan reads exists.
func TestPruneKeepsWhatRestoresNeed(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 100*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())

	var snaps []*catalog.Manifest
	for i := 0; i < 4; i++ {
		for j := 0; j < 20; j++ {
			src.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprintf("round %d row %d", i, j))
		}
		src.Exec(t, "FLUSH BINARY LOGS")
		src.Exec(t, "INSERT INTO app.t (v) VALUES ('after the rotation')")
		archivetest.WaitArchived(t, streamer, src)
		m, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1,
			Timeline: streamer.Status().Timeline})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, m)
		// Snapshot ids and consistent times are per second: the next
		// round's commits and snapshot come in a later one.
		testbed.NextSecond(t, m.Finished)
	}
	for i := 1; i < len(snaps); i++ {
		if a, b := snaps[i-1], snaps[i]; b.ID <= a.ID || b.Started.Unix() <= a.Finished.Unix() {
			t.Fatalf("snapshot %s (started %s) after %s (finished %s): want a later id and second", b.ID, b.Started, a.ID, a.Finished)
		}
	}
	src.Exec(t, "INSERT INTO app.t (v) VALUES ('last')")
	archivetest.WaitArchived(t, streamer, src)

	before := listKeys(t, st)
	dry, err := Prune(t.Context(), Options{Store: st, Policy: Policy{KeepSnapshots: 2}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after := listKeys(t, st); len(after) != len(before) {
		t.Fatalf("dry run changed storage: %d keys before, %d after", len(before), len(after))
	}
	if len(dry.Expire) != 2 || dry.Segments == 0 {
		t.Fatalf("dry run plans to expire %v and %d segments; want 2 snapshots and the segments of their files", dry.Expire, dry.Segments)
	}

	p, err := Prune(t.Context(), Options{Store: st, Policy: Policy{KeepSnapshots: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pruned %d snapshots, %d segments (%d steps, %d bytes); floor %s", len(p.Expire), p.Segments, len(p.Steps), p.Bytes, p.Floor)
	for _, m := range snaps[:2] {
		if _, err := st.Stat(t.Context(), catalog.ManifestKey(m.ID)); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("manifest of expired snapshot %s: %v, want it gone", m.ID, err)
		}
	}

	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Complete) != 2 || len(loaded.Partial) != 0 {
		t.Fatalf("after prune: %d complete, %d partial snapshots; want 2 and 0", len(loaded.Complete), len(loaded.Partial))
	}
	for _, tl := range arch.Timelines {
		if h := tl.Holes(); len(h) > 0 {
			t.Errorf("timeline %s shows holes after the prune: %+v", tl.ID, h)
		}
	}
	// The first kept file is the oldest kept snapshot's, with its head.
	if first := arch.Last().Segments[0]; first.File != snaps[2].Binlog.File || first.Start != 4 {
		t.Errorf("archive starts at %s:%d, want the oldest kept snapshot's file %s from 4", first.File, first.Start, snaps[2].Binlog.File)
	}
	for _, m := range snaps[2:] {
		at := m.ConsistentAt
		if at.IsZero() {
			at = m.Finished
		}
		for _, target := range []restore.Target{{Kind: restore.AtTime, Time: at}, {Kind: restore.Latest}} {
			plan, err := restore.Make(arch, loaded.Complete, target, time.Now())
			if err != nil {
				t.Fatalf("restore to %s after pruning: %v", target, err)
			}
			if target.Kind == restore.AtTime && plan.Snapshot.ID != m.ID {
				t.Errorf("restore to %s plans from snapshot %s, want %s", target, plan.Snapshot.ID, m.ID)
			}
			for _, s := range append(plan.Head, plan.Segments...) {
				if _, err := st.Stat(t.Context(), s.Ref().DataKey()); err != nil {
					t.Errorf("restore to %s needs %s: %v", target, s.Ref().DataKey(), err)
				}
			}
			for _, o := range plan.Snapshot.Objects {
				if _, err := st.Stat(t.Context(), catalog.SnapshotObjectKey(plan.Snapshot.ID, o.Name)); err != nil {
					t.Errorf("snapshot %s object %s: %v", plan.Snapshot.ID, o.Name, err)
				}
			}
		}
	}
	// A target before the oldest kept snapshot is refused, naming it.
	if _, err := restore.Make(arch, loaded.Complete, restore.Target{Kind: restore.AtTime, Time: snaps[1].Finished}, time.Now()); !errors.Is(err, restore.ErrRefused) {
		t.Errorf("restore to before the oldest kept snapshot: %v, want a refusal", err)
	}
	// A second prune has nothing left to do.
	again, err := Prune(t.Context(), Options{Store: st, Policy: Policy{KeepSnapshots: 2}})
	if err != nil || len(again.Steps) != 0 {
		t.Errorf("second prune: %d steps, %v; want none", len(again.Steps), err)
	}
}

func listKeys(t *testing.T, st storage.Storage) []string {
	t.Helper()
	var keys []string
	for _, prefix := range []string{catalog.SnapshotPrefix, catalog.BinlogPrefix} {
		objs, err := st.List(t.Context(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
	}
	return keys
}
