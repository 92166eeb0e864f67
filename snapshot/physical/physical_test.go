//go:build linux

package physical

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestSnapshotUnderLoad takes a physical snapshot while transfers
// run, restores it, checks the books balance, then replays the source's
// binlog from the manifest's position and compares table checksums with the
// source: equal checksums prove the snapshot is exactly its recorded position.
func TestSnapshotUnderLoad(t *testing.T) {
	testbed.Binary(t, "mariadb-backup", testbed.MariaDBInstall)
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	fillBank(t, src, 16)
	st, _ := newStore(t)

	load := startBankLoad(t, src.DB(t), 4)
	load.waitCommits(t, 200)
	before := load.commits.Load()
	var logs syncBuffer
	m, err := Take(t.Context(), Options{
		Source:   sourceOf(t, src),
		Storage:  st,
		PartSize: 4 << 20, // several parts
		TempDir:  t.TempDir(),
		Agent:    "test",
		Logger:   testLogger(t, &logs),
	})
	during := load.commits.Load() - before
	// Commits after the snapshot are what the replay must bring back.
	load.waitCommits(t, before+during+200)
	load.Stop(t)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	t.Logf("snapshot %s: %d transfers committed during it; position %s gtid %s; %d bytes in %d parts, %d stored; writes blocked %s (longest COMMIT seen by the load %s); took %s",
		m.ID, during, m.Binlog, m.GTIDSet, m.Bytes, len(m.Objects), m.StoredBytes, m.WritesBlocked,
		time.Duration(load.maxCommit.Load()), m.Finished.Sub(m.Started))
	if during == 0 {
		t.Errorf("no transfer committed while the snapshot was taken; the test proves nothing about consistency")
	}

	// The manifest says what a restore and a user need.
	if m.Method != catalog.MethodPhysical || m.Flavor != string(binlog.MariaDB) || m.ServerID != testbed.DefaultServerID ||
		m.ServerVersion != src.Version() || !strings.HasPrefix(m.Tool, "mariadb-backup 10.11") || m.Agent != "test" {
		t.Errorf("manifest identity: %+v", m)
	}
	if m.GTIDSet == "" || !strings.HasPrefix(m.Binlog.File, "mysql-bin.") {
		t.Errorf("manifest position %s gtid %q", m.Binlog, m.GTIDSet)
	}
	if m.WritesBlocked <= 0 || m.WritesBlocked > m.Finished.Sub(m.Started) {
		t.Errorf("writes blocked %s of a %s snapshot", m.WritesBlocked, m.Finished.Sub(m.Started))
	}
	var sum, stored int64
	for _, o := range m.Objects {
		sum += o.Size
		stored += o.StoredSize
		if len(o.SHA256) != 64 || o.Size > 4<<20 {
			t.Errorf("object %+v", o)
		}
	}
	if len(m.Objects) < 2 || sum != m.Bytes || stored != m.StoredBytes || m.Bytes < 16<<20 {
		t.Errorf("objects %d, bytes %d (sum %d), stored %d (sum %d)", len(m.Objects), m.Bytes, sum, m.StoredBytes, stored)
	}
	// The manifest lists the tables, with estimated row counts.
	listed := map[string]catalog.TableInfo{}
	for _, ti := range m.Tables {
		listed[ti.Schema+"."+ti.Name] = ti
	}
	for _, name := range []string{"bank.accounts", "bank.transfers", "bank.filler"} {
		if ti, ok := listed[name]; !ok || !ti.RowsEstimated || ti.Digest != "" {
			t.Errorf("manifest table %s = %+v, %v; want listed, rows estimated, no digest", name, ti, ok)
		}
	}
	snaps, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps.Complete) != 1 || snaps.Complete[0].ID != m.ID || len(snaps.Partial) != 0 {
		t.Errorf("archive holds %+v", snaps)
	}
	if strings.Contains(logs.String(), src.PitrPassword()) {
		t.Errorf("the log holds the password")
	}

	// Restore into an existing, empty datadir, as onto a mounted volume.
	datadir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(datadir, 0o755); err != nil {
		t.Fatal(err)
	}
	pos, err := Restore(t.Context(), st, m, datadir, RestoreOptions{Logger: testLogger(t, nil)})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if pos != m.Binlog {
		t.Errorf("restore returned %s, manifest says %s", pos, m.Binlog)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(datadir), ".data.restore-*")); len(left) > 0 {
		t.Errorf("staging left behind: %v", left)
	}
	restored := startRestored(t, datadir)
	checkBank(t, restored.DB(t), "restored snapshot")
	checkBank(t, src.DB(t), "source")

	checkReplayed(t, src, restored, m)
}

// TestPhysicalMariaDB118 takes a physical snapshot of MariaDB 11.8 with its
// own mariadb-backup, restores it (prepared by that tool), starts 11.8 on
// it and compares every table's CHECKSUM TABLE with the source's.
func TestPhysicalMariaDB118(t *testing.T) {
	f := testbed.MariaDB118
	tool := f.Binary(t, "mariadb-backup")
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	fillBank(t, src, 16)
	src.Exec(t, "INSERT INTO bank.transfers (src, dst, amount) VALUES (1, 2, 0)")
	st, _ := newStore(t)
	m, err := Take(t.Context(), Options{Source: sourceOf(t, src), Storage: st, ToolPath: tool,
		PartSize: 4 << 20, TempDir: t.TempDir(), Logger: testLogger(t, nil)})
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	t.Logf("snapshot %s by %s: position %s gtid %s; %d bytes in %d parts", m.ID, m.Tool, m.Binlog, m.GTIDSet, m.Bytes, len(m.Objects))
	if !strings.Contains(m.Tool, "11.8") || m.Flavor != string(binlog.MariaDB) || m.GTIDSet == "" || m.Binlog.File == "" {
		t.Errorf("manifest: %+v", m)
	}
	datadir := filepath.Join(t.TempDir(), "data")
	if _, err := Restore(t.Context(), st, m, datadir, RestoreOptions{ToolPath: tool, Logger: testLogger(t, nil)}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	restored := startRestoredFlavor(t, f, datadir)
	checkBank(t, restored.DB(t), "restored snapshot")
	got, want := tableChecksums(t, restored.DB(t)), tableChecksums(t, src.DB(t))
	if len(want) < 3 {
		t.Fatalf("source has tables %v", want)
	}
	for tb, w := range want {
		if got[tb] != w {
			t.Errorf("CHECKSUM TABLE %s: restored %d, source %d", tb, got[tb], w)
		}
	}
}
