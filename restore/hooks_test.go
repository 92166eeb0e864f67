package restore

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// countRows returns SELECT COUNT(*) FROM app.t on the server cfg names.
func countRows(ctx context.Context, cfg *mysql.Config) (int, error) {
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return 0, err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM app.t").Scan(&n)
	return n, err
}

// TestApplyHooks checks that AfterSnapshot sees the server holding exactly
// the snapshot, AfterReplay sees it after the replay, and that an error
// from a hook stops the restore with that error.
func TestApplyHooks(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 100*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	src.Exec(t, "INSERT INTO app.t VALUES (1), (2), (3)")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1, SkipUsers: true}); err != nil {
		t.Fatal(err)
	}
	src.Exec(t, "INSERT INTO app.t VALUES (4)")
	src.Exec(t, "INSERT INTO app.t VALUES (5)")
	archivetest.WaitArchived(t, streamer, src)
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Make(arch, snaps.Complete, Target{Kind: Latest}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("both hooks see their moment", func(t *testing.T) {
		dir, _ := os.MkdirTemp("", "hk-")
		t.Cleanup(func() { os.RemoveAll(dir) })
		var atSnapshot, atReplay, replayed int
		res, err := Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", WorkDir: dir + "/w",
			AfterSnapshot: func(ctx context.Context, srv *mysql.Config) error {
				atSnapshot, err = countRows(ctx, srv)
				return err
			},
			AfterReplay: func(ctx context.Context, srv *mysql.Config, stop *Stop) error {
				replayed = stop.Transactions
				atReplay, err = countRows(ctx, srv)
				return err
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if atSnapshot != 3 || atReplay != 5 || replayed != 2 || res.Marker.Transactions != 2 {
			t.Errorf("rows after the snapshot %d (want 3), after replay %d (want 5); transactions replayed %d, marker %d (want 2)",
				atSnapshot, atReplay, replayed, res.Marker.Transactions)
		}
	})
	t.Run("a hook's error stops the restore", func(t *testing.T) {
		dir, _ := os.MkdirTemp("", "hk-")
		t.Cleanup(func() { os.RemoveAll(dir) })
		stopHere := errors.New("stop here")
		replayCalled := false
		_, err := Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", WorkDir: dir + "/w",
			AfterSnapshot: func(context.Context, *mysql.Config) error { return stopHere },
			AfterReplay: func(context.Context, *mysql.Config, *Stop) error {
				replayCalled = true
				return nil
			},
		})
		if !errors.Is(err, stopHere) {
			t.Fatalf("Apply = %v, want the hook's error", err)
		}
		if replayCalled {
			t.Errorf("the binlog was replayed after AfterSnapshot failed")
		}
		if _, err := os.Stat(dir + "/data/" + MarkerFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a stopped restore left its marker: %v", err)
		}
	})
}
