package drill

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// copyArchive copies the binlog archive and the snapshots of src into a
// new store, for a test to damage.
func copyArchive(t *testing.T, src storage.Storage) storage.Storage {
	t.Helper()
	dst, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{catalog.BinlogPrefix, catalog.SnapshotPrefix} {
		objs, err := src.List(t.Context(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			b := readObject(t, src, o.Key)
			if _, err := dst.Put(t.Context(), o.Key, bytes.NewReader(b), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

func readObject(t *testing.T, st storage.Storage, key string) []byte {
	t.Helper()
	rc, err := st.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lastRecord returns the archive's latest drill record.
func lastRecord(t *testing.T, st storage.Storage) *catalog.Drill {
	t.Helper()
	last, _, err := catalog.LastDrills(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if last == nil {
		t.Fatal("no drill record in the archive")
	}
	return last
}

// shortDir is a temporary directory with a short path: the temporary
// server's socket goes below it.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// scratchEmpty fails the test if a drill left anything in dir.
func scratchEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Errorf("the drill left %d entries in its scratch directory, e.g. %s", len(ents), ents[0].Name())
	}
}

// TestDrill builds an archive of two logical snapshots with writes between
// and after them, drills it, then drills damaged copies of it.
func TestDrill(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 100*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(40), note TEXT NULL)")
	src.Exec(t, "CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40))")
	src.Exec(t, "INSERT INTO app.accounts SELECT seq, CONCAT('owner-', seq), IF(seq % 3 = 0, NULL, '') FROM app.seq_1_to_200")
	src.Exec(t, "INSERT INTO app.events (what) VALUES ('open'), ('deposit')")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	take := func() *catalog.Manifest {
		t.Helper()
		m, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1, SkipUsers: true})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	older := take()
	// The same number of rows, other values: the older snapshot's chunk of
	// app.accounts is a valid stand-in for the newer one's.
	src.Exec(t, "UPDATE app.accounts SET owner = CONCAT(owner, '-renamed') WHERE id <= 10")
	testbed.NextSecond(t, older.ID.Time()) // snapshot ids are per second: the newer must sort after
	newer := take()
	if newer.ID <= older.ID {
		t.Fatalf("snapshot ids %s then %s; want the newer to sort after", older.ID, newer.ID)
	}
	// Writes after the newest snapshot, several segments long: each is
	// archived before the next.
	for i := range 6 {
		src.Exec(t, "INSERT INTO app.events (what) VALUES (?)", fmt.Sprintf("later-%d", i))
		archivetest.WaitArchived(t, streamer, src)
	}
	var lastGTID string
	if err := src.DB(t).QueryRow("SELECT @@global.gtid_binlog_pos").Scan(&lastGTID); err != nil {
		t.Fatal(err)
	}

	t.Run("a good archive passes", func(t *testing.T) {
		scratch := shortDir(t)
		rec, err := Run(t.Context(), Options{Record: true, Store: st, Scratch: scratch, Threads: 2, Host: "test"})
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		t.Logf("drill: %+v", rec)
		if !rec.Success || rec.Snapshot != newer.ID || rec.TablesChecked != 2 || rec.Transactions != 6 {
			t.Errorf("record = %+v; want a success restoring %s, 2 tables checked, 6 transactions replayed", rec, newer.ID)
		}
		if rec.LastGTID != lastGTID || !strings.Contains(rec.GTIDState, lastGTID) {
			t.Errorf("last GTID %q, server state %q; want the source's last GTID %q in both", rec.LastGTID, rec.GTIDState, lastGTID)
		}
		if rec.RestoreDuration <= 0 || rec.RestoredBytes <= newer.Bytes || rec.FetchedBytes < newer.StoredBytes {
			t.Errorf("restore took %s for %d bytes (%d fetched); want a duration and more than the snapshot's %d bytes",
				rec.RestoreDuration, rec.RestoredBytes, rec.FetchedBytes, newer.Bytes)
		}
		if got := lastRecord(t, st); !got.Success || !got.Started.Equal(rec.Started) || got.RestoredBytes != rec.RestoredBytes {
			t.Errorf("stored record = %+v, want %+v", got, rec)
		}
		scratchEmpty(t, scratch)
	})

	t.Run("a snapshot holding other rows than its manifest records fails", func(t *testing.T) {
		damaged := copyArchive(t, st)
		// The newer snapshot's app.accounts chunk is replaced by the older
		// snapshot's, with a manifest that matches the object: the load
		// accepts it, only the digest tells. app.events' row count is edited.
		chunk := "tables/app/accounts/data-000001.tsv.zst"
		forged := readObject(t, st, catalog.SnapshotObjectKey(older.ID, chunk))
		if _, err := damaged.Put(t.Context(), catalog.SnapshotObjectKey(newer.ID, chunk), bytes.NewReader(forged), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		var m catalog.Manifest
		if err := catalog.GetJSON(t.Context(), damaged, catalog.ManifestKey(newer.ID), &m); err != nil {
			t.Fatal(err)
		}
		for i, o := range m.Objects {
			if o.Name == chunk {
				for _, oo := range older.Objects {
					if oo.Name == chunk {
						m.Objects[i] = oo
					}
				}
			}
		}
		m.Bytes, m.StoredBytes = 0, 0
		for _, o := range m.Objects {
			m.Bytes += o.Size
			m.StoredBytes += o.StoredSize
		}
		var wantDigest string
		for i, ti := range m.Tables {
			switch ti.Name {
			case "events":
				m.Tables[i].Rows = 3
			case "accounts":
				wantDigest = ti.Digest
			}
		}
		if err := catalog.PutJSON(t.Context(), damaged, catalog.ManifestKey(newer.ID), &m, false); err != nil {
			t.Fatal(err)
		}
		scratch := shortDir(t)
		rec, err := Run(t.Context(), Options{Record: true, Store: damaged, Scratch: scratch, Threads: 2})
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("Run = %v, want ErrFailed", err)
		}
		t.Logf("reason: %s", rec.Reason)
		for _, want := range []string{
			"table app.accounts rows digest to " + snapshot.DigestAlgorithm + ":",
			"the manifest records " + wantDigest,
			"table app.events has 2 rows, the manifest records 3",
			string(newer.ID),
		} {
			if !strings.Contains(rec.Reason, want) || !strings.Contains(err.Error(), want) {
				t.Errorf("reason %q (error %q) does not say %q", rec.Reason, err, want)
			}
		}
		if got := lastRecord(t, damaged); got.Success || got.Reason != rec.Reason || got.Snapshot != newer.ID {
			t.Errorf("stored record = %+v; want the failure", got)
		}
		scratchEmpty(t, scratch)
	})

	t.Run("a missing segment after the snapshot fails", func(t *testing.T) {
		damaged := copyArchive(t, st)
		arch, err := catalog.Load(t.Context(), damaged, catalog.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var after []*catalog.Segment
		for _, s := range arch.Timelines[len(arch.Timelines)-1].Segments {
			if s.File > newer.Binlog.File || s.File == newer.Binlog.File && s.Start >= newer.Binlog.Pos {
				after = append(after, s)
			}
		}
		if len(after) < 3 {
			t.Fatalf("only %d segments after the snapshot; the test needs one in the middle", len(after))
		}
		goneSeg := after[len(after)/2]
		if goneSeg.Start == 4 {
			t.Fatalf("segment %s:%d starts a file; the hole's message would name the previous file", goneSeg.File, goneSeg.Start)
		}
		gone := goneSeg.Ref()
		for _, k := range []string{gone.RecordKey(), gone.DataKey()} {
			if err := damaged.Delete(t.Context(), k); err != nil {
				t.Fatal(err)
			}
		}
		rec, err := Run(t.Context(), Options{Record: true, Store: damaged, Scratch: shortDir(t)})
		if !errors.Is(err, ErrFailed) || !errors.Is(err, restore.ErrRefused) {
			t.Fatalf("Run = %v, want ErrFailed and the plan's refusal", err)
		}
		want := fmt.Sprintf("nothing covers %s:%d", goneSeg.File, goneSeg.Start)
		if !strings.Contains(rec.Reason, "the archive is damaged") || !strings.Contains(rec.Reason, want) {
			t.Errorf("reason %q; want it to name the hole at %s", rec.Reason, want)
		}
		if got := lastRecord(t, damaged); got.Success || got.Reason != rec.Reason {
			t.Errorf("stored record = %+v; want the failure", got)
		}
	})
	t.Run("an index that records more than the binlog holds fails", func(t *testing.T) {
		damaged := copyArchive(t, st)
		arch, err := catalog.Load(t.Context(), damaged, catalog.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		segs := arch.Timelines[len(arch.Timelines)-1].Segments
		var last *catalog.Segment
		for _, s := range segs {
			if s.LastGTID != "" {
				last = s
			}
		}
		if last == nil {
			t.Fatal("no segment records a GTID")
		}
		edited := *last
		edited.LastGTID = "0-1-99"
		if err := catalog.PutJSON(t.Context(), damaged, last.Ref().RecordKey(), &edited, false); err != nil {
			t.Fatal(err)
		}
		rec, err := Run(t.Context(), Options{Record: true, Store: damaged, Scratch: shortDir(t), Threads: 2})
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("Run = %v, want ErrFailed", err)
		}
		t.Logf("reason: %s", rec.Reason)
		if !strings.Contains(rec.Reason, "lacks 0-1-99, the last archived transaction's GTID") || !strings.Contains(rec.Reason, lastGTID) {
			t.Errorf("reason %q; want it to name the missing GTID 0-1-99 and the state %s", rec.Reason, lastGTID)
		}
		if got := lastRecord(t, damaged); got.Success || got.Reason != rec.Reason || got.Transactions != 6 {
			t.Errorf("stored record = %+v; want the failure after 6 transactions", got)
		}
	})
}

// TestDrillPhysical drills an archive whose newest snapshot is physical:
// no table check (the manifest has estimates only), the GTID check after replay.
func TestDrillPhysical(t *testing.T) {
	testbed.Binary(t, "mariadb-backup", testbed.MariaDBInstall)
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 100*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
	src.Exec(t, "INSERT INTO app.t VALUES (1, 'a'), (2, 'b')")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	source, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	m, err := physical.Take(t.Context(), physical.Options{Source: source, Storage: st, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	src.Exec(t, "INSERT INTO app.t VALUES (3, 'c')")
	src.Exec(t, "UPDATE app.t SET v = 'z' WHERE id = 1")
	archivetest.WaitArchived(t, streamer, src)
	var lastGTID string
	if err := src.DB(t).QueryRow("SELECT @@global.gtid_binlog_pos").Scan(&lastGTID); err != nil {
		t.Fatal(err)
	}
	scratch := shortDir(t)
	rec, err := Run(t.Context(), Options{Record: true, Store: st, Scratch: scratch, Threads: 2})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	t.Logf("drill: %+v", rec)
	if !rec.Success || rec.Snapshot != m.ID || rec.Method != catalog.MethodPhysical || rec.TablesChecked != 0 || rec.Transactions != 2 {
		t.Errorf("record = %+v; want a success restoring physical snapshot %s with 2 transactions replayed and no table check", rec, m.ID)
	}
	if rec.LastGTID != lastGTID || !strings.Contains(rec.GTIDState, lastGTID) {
		t.Errorf("last GTID %q, server state %q; want the source's %q in both", rec.LastGTID, rec.GTIDState, lastGTID)
	}
	scratchEmpty(t, scratch)
}
