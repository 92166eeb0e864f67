package restore

import (
	"context"
	"database/sql"
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
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestRestoreEdges covers a target inside a long transaction, users and
// grants in the restored datadir, and a damaged archive refused before the
// datadir is touched.
func TestRestoreEdges(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	root := t.TempDir()
	st, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 200*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
	src.Exec(t, "CREATE USER 'reporter'@'%' IDENTIFIED BY 'secret-1'")
	src.Exec(t, "GRANT SELECT ON app.* TO 'reporter'@'%'")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1}); err != nil {
		t.Fatal(err)
	}
	// Commit times are set on a pinned session, not waited for: the
	// binlog's event headers carry the session's timestamp. base is a few
	// seconds ahead, after the snapshot's second whatever the clock does
	// meanwhile.
	base := time.Now().Truncate(time.Second).Add(5 * time.Second)
	conn, err := src.DB(t).Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	at := func(ex interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}, when time.Time) {
		t.Helper()
		if _, err := ex.ExecContext(t.Context(), "SET timestamp = ?", when.Unix()); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(ex interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}, q string) {
		t.Helper()
		if _, err := ex.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}

	// A transaction whose first statement comes well before its commit.
	firstStmt, commit := base, base.Add(3*time.Second)
	at(conn, firstStmt)
	tx, err := conn.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	exec(tx, "INSERT INTO app.t VALUES (1, 'first')")
	at(tx, commit)
	exec(tx, "INSERT INTO app.t VALUES (2, 'second')")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	insideTxn := firstStmt.Add(1500 * time.Millisecond)
	afterCommit := commit.Add(2 * time.Second)
	// A later transaction, so that the archive reaches past afterCommit.
	later := afterCommit.Add(2 * time.Second)
	at(conn, later)
	exec(conn, "INSERT INTO app.t VALUES (3, 'later')")
	if !(firstStmt.Before(insideTxn) && insideTxn.Before(commit) && commit.Before(afterCommit) && afterCommit.Before(later)) {
		t.Fatalf("times out of order: first statement %s, inside %s, commit %s, after %s, later %s", firstStmt, insideTxn, commit, afterCommit, later)
	}
	archivetest.WaitArchived(t, streamer, src)

	restoreTo := func(t *testing.T, at time.Time) (string, error) {
		arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := catalog.LoadSnapshots(t.Context(), st)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Make(arch, snaps.Complete, Target{Kind: AtTime, Time: at}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		// The archive ends with the commit time the test set, so the
		// binlog carries the session's timestamps.
		if !p.ArchiveEndTime.Equal(later) {
			t.Fatalf("the archive's last commit at %s, want %s", p.ArchiveEndTime, later)
		}
		dir, _ := os.MkdirTemp("", "rst-")
		t.Cleanup(func() { os.RemoveAll(dir) })
		_, err = Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", WorkDir: dir + "/w"})
		return dir, err
	}
	query := func(t *testing.T, dir string, q string) []string {
		srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: mysqld.MariaDB, Datadir: dir + "/data", RunDir: dir + "/r"})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Stop(context.WithoutCancel(t.Context()))
		rows, err := srv.DB().Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			rows.Scan(&s)
			out = append(out, s)
		}
		return out
	}

	t.Run("inside the long transaction: none of it", func(t *testing.T) {
		dir, err := restoreTo(t, insideTxn)
		if err != nil {
			t.Fatal(err)
		}
		if got := query(t, dir, "SELECT CONCAT(id, v) FROM app.t"); len(got) != 0 {
			t.Fatalf("rows %v: a transaction that committed after the target must be dropped whole", got)
		}
	})
	t.Run("after its commit: all of it, and the users", func(t *testing.T) {
		dir, err := restoreTo(t, afterCommit)
		if err != nil {
			t.Fatal(err)
		}
		if got := query(t, dir, "SELECT CONCAT(id, v) FROM app.t ORDER BY id"); strings.Join(got, ",") != "1first,2second" {
			t.Fatalf("rows %v, want the whole transaction", got)
		}
		grants := strings.Join(query(t, dir, "SHOW GRANTS FOR 'reporter'@'%'"), "\n")
		if !strings.Contains(grants, "GRANT SELECT ON `app`.* TO `reporter`@`%`") {
			t.Fatalf("grants of the restored user: %q", grants)
		}
	})
	for _, replay := range []string{ReplayServer, ReplayMysqlbinlog} {
		t.Run("into a running empty server/"+replay, func(t *testing.T) {
			dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 7})
			arch, _ := catalog.Load(t.Context(), st, catalog.LoadOptions{})
			snaps, _ := catalog.LoadSnapshots(t.Context(), st)
			p, err := Make(arch, snaps.Complete, Target{Kind: AtTime, Time: afterCommit}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			target, _ := mysql.ParseDSN(dst.DSN())
			res, err := Apply(t.Context(), p, Options{Store: st, Target: target, Replay: replay, WorkDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			rows, err := dst.DB(t).Query("SELECT CONCAT(id, v) FROM app.t ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var s string
				rows.Scan(&s)
				got = append(got, s)
			}
			rows.Close()
			if strings.Join(got, ",") != "1first,2second" {
				t.Fatalf("rows %v, want the long transaction and nothing after", got)
			}
			var pos string
			dst.DB(t).QueryRow("SELECT @@GLOBAL.gtid_slave_pos").Scan(&pos)
			if pos != res.Marker.GTIDState {
				t.Errorf("gtid_slave_pos %q, want %q", pos, res.Marker.GTIDState)
			}
			// Not empty any more: a second restore is refused.
			if _, err := Apply(t.Context(), p, Options{Store: st, Target: target, Replay: replay, WorkDir: t.TempDir()}); err == nil ||
				!strings.Contains(err.Error(), "restore into an empty server") {
				t.Fatalf("restore into a non-empty server: %v", err)
			}
		})
	}
	t.Run("a restore that fails while loading leaves the datadir as it was", func(t *testing.T) {
		// Damage the second half of the snapshot's largest data object,
		// keeping its size (a shorter object is refused before any work):
		// the load finds it out only well after it began.
		var victim string
		var size int64
		filepath.WalkDir(filepath.Join(root, "snapshots"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".json") {
				if fi, err := d.Info(); err == nil && fi.Size() > size {
					victim, size = p, fi.Size()
				}
			}
			return nil
		})
		if victim == "" {
			t.Fatal("no snapshot data object")
		}
		saved, _ := os.ReadFile(victim)
		t.Cleanup(func() { os.WriteFile(victim, saved, 0o644) })
		damaged := slices.Clone(saved)
		for i := len(damaged) / 2; i < len(damaged); i++ {
			damaged[i] ^= 0x5a
		}
		if err := os.WriteFile(victim, damaged, 0o644); err != nil {
			t.Fatal(err)
		}
		arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := catalog.LoadSnapshots(t.Context(), st)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Make(arch, snaps.Complete, Target{Kind: AtTime, Time: afterCommit}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		data := filepath.Join(dir, "data")
		os.Mkdir(data, 0o750)
		os.WriteFile(filepath.Join(data, "ibdata1"), []byte("the old server's"), 0o640)
		_, err = Apply(t.Context(), p, Options{Store: st, Datadir: data, WorkDir: filepath.Join(dir, "w"), Force: true})
		if err == nil {
			t.Fatal("restored from a truncated snapshot object")
		}
		t.Logf("refused: %v", err)
		ents, _ := os.ReadDir(data)
		if len(ents) != 1 || ents[0].Name() != "ibdata1" {
			t.Errorf("the datadir holds %v, want only the old ibdata1", ents)
		}
		if b, _ := os.ReadFile(filepath.Join(data, "ibdata1")); string(b) != "the old server's" {
			t.Errorf("the old ibdata1 was changed: %q", b)
		}
		if side, _ := os.ReadDir(dir); len(side) != 2 {
			t.Errorf("beside the datadir: %v; want only data and the work directory (no staging, nothing moved aside)", side)
		}
	})
	t.Run("a flipped byte is refused before the datadir is touched", func(t *testing.T) {
		var segs []string
		filepath.WalkDir(filepath.Join(root, "binlog"), func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".zst") {
				segs = append(segs, p)
			}
			return nil
		})
		if len(segs) == 0 {
			t.Fatal("no segment")
		}
		victim := segs[len(segs)-1]
		b, _ := os.ReadFile(victim)
		f, _ := os.OpenFile(victim, os.O_WRONLY, 0)
		b[len(b)/2] ^= 0x01
		f.WriteAt(b, 0)
		f.Close()
		dir, err := restoreTo(t, afterCommit)
		if err == nil {
			t.Fatal("a corrupt segment was restored from")
		}
		t.Logf("refused: %v", err)
		ents, _ := os.ReadDir(dir + "/data")
		if len(ents) != 0 {
			t.Fatalf("the datadir was touched: %d entries", len(ents))
		}
	})
}
