package restore

import (
	"context"
	"database/sql"
	"maps"
	"os"
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

// queryRows returns every row of a query, its columns' text joined, sorted.
func queryRows(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		f := make([]string, len(cols))
		for i, v := range vals {
			f[i] = cols[i] + "=NULL"
			if v.Valid {
				f[i] = cols[i] + "=" + v.String
			}
		}
		out = append(out, strings.Join(f, " "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// objectState is what the test compares between the source and a restore:
// the sequence's row and the grant table rows of the accounts the source
// ignores.
func objectState(t *testing.T, db *sql.DB, rootHost string) map[string][]string {
	t.Helper()
	out := map[string][]string{"sequence": queryRows(t, db, "SELECT * FROM shop.order_id")}
	for _, acct := range [][2]string{{"root", rootHost}, {"app", "web01.example.com"}} {
		for _, table := range []string{"global_priv", "db", "tables_priv", "proxies_priv"} {
			out[acct[0]+"@"+acct[1]+" "+table] = queryRows(t, db, "SELECT * FROM mysql."+table+" WHERE User = ? AND Host = ?", acct[0], acct[1])
		}
	}
	return out
}

// TestRestoreSequencesAndIgnoredAccounts restores, into a datadir and into
// a running server, a logical snapshot holding a sequence that a table's
// column defaults from and accounts the --skip-name-resolve source ignores,
// with binlog after the snapshot that refills the sequence: the restored
// tables, sequence and accounts are the source's.
func TestRestoreSequencesAndIgnoredAccounts(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 200*time.Millisecond)
	for _, q := range []string{
		"CREATE DATABASE shop",
		"CREATE SEQUENCE shop.order_id CACHE 10",
		"CREATE TABLE shop.orders (id BIGINT NOT NULL DEFAULT NEXTVAL(shop.order_id) PRIMARY KEY, item VARCHAR(20))",
		"INSERT INTO shop.orders (item) VALUES ('a'), ('b')",
		"CREATE USER 'app'@'web01.example.com' IDENTIFIED BY 'app-secret-3'",
		"GRANT SELECT, INSERT ON shop.* TO 'app'@'web01.example.com'",
		"GRANT DELETE ON shop.orders TO 'app'@'web01.example.com'",
		// As after a restart: the server ignores app@web01.example.com and
		// root@<hostname>.
		"FLUSH PRIVILEGES",
	} {
		src.Exec(t, q)
	}
	var rootHost string
	if err := src.DB(t).QueryRowContext(t.Context(), "SELECT Host FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1')").Scan(&rootHost); err != nil {
		t.Fatalf("the test server has no root@<hostname> as mariadb-install-db creates it: %v", err)
	}
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 2}); err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	// After the snapshot, rows whose ids refill the sequence's cache
	// several times: the replay writes its row.
	for range 3 {
		src.Exec(t, "INSERT INTO shop.orders (item) SELECT CONCAT('x', seq) FROM shop.seq_1_to_12")
	}
	archivetest.WaitArchived(t, streamer, src)
	wantSums := tableChecksums(t, srcConfig(t, src))
	want := objectState(t, src.DB(t), rootHost)
	for _, k := range []string{"sequence", "root@" + rootHost + " global_priv", "root@" + rootHost + " proxies_priv",
		"app@web01.example.com global_priv", "app@web01.example.com db", "app@web01.example.com tables_priv"} {
		if len(want[k]) == 0 {
			t.Fatalf("the source holds no %s: the test does not cover it", k)
		}
	}

	plan := func(t *testing.T) *Plan {
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
		return p
	}
	compare := func(t *testing.T, db *sql.DB, cfg *mysql.Config) {
		t.Helper()
		if got := tableChecksums(t, cfg); !maps.Equal(got, wantSums) {
			t.Errorf("restored tables:\n got %v\nwant %v", got, wantSums)
		}
		got := objectState(t, db, rootHost)
		for k, w := range want {
			if strings.Join(got[k], "\n") != strings.Join(w, "\n") {
				t.Errorf("%s:\n got %q\nwant %q", k, got[k], w)
			}
		}
	}
	for _, replay := range []string{ReplayServer, ReplayMysqlbinlog} {
		t.Run("datadir/"+replay, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "rst-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if _, err := Apply(t.Context(), plan(t), Options{Store: st, Datadir: dir + "/data", Replay: replay, WorkDir: dir + "/w"}); err != nil {
				t.Fatal(err)
			}
			// Started as the source runs.
			srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: mysqld.MariaDB, Datadir: dir + "/data", RunDir: dir + "/r",
				Args: []string{"--skip-name-resolve"}})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop(context.WithoutCancel(t.Context()))
			compare(t, srv.DB(), srv.Config())
		})
		if replay == ReplayMysqlbinlog {
			// Not into a running server that writes a binlog with
			// gtid_strict_mode: MariaDB 10.11 commits a sequence's row
			// event that a client applies (a BINLOG statement) under a
			// GTID of its own, and the transaction's own GTID is then out
			// of order (see README, Restoring).
			continue
		}
		t.Run("running server/"+replay, func(t *testing.T) {
			dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 7})
			target, _ := mysql.ParseDSN(dst.DSN())
			if _, err := Apply(t.Context(), plan(t), Options{Store: st, Target: target, Replay: replay, WorkDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			compare(t, dst.DB(t), target)
		})
	}
}
