package restore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// moment is a point the live test restores to, and what the source held there.
type moment struct {
	name   string
	target Target
	sums   map[string]string
	// gtid is the source's GTID state there: MariaDB gtid_binlog_pos,
	// MySQL gtid_executed.
	gtid string
}

// TestRestoreOnEachServer restores, on each test server release
// (MYSQL_PITR_TEST_SERVERS), an archive a real streamer made of a server of
// that release under a write load with a 10 MB transaction. From a logical
// snapshot it restores to eight moments — a time between two commits, a
// position and a time just after the 10 MB transaction, the end of a binlog
// file after FLUSH BINARY LOGS, the moments just before and just after a
// DROP TABLE, a time inside a quiet period and the latest archived
// transaction — each into a new datadir and into a running empty server,
// with each replay mode. From a physical snapshot taken under the load
// (mariadb-backup, or the clone plugin on MySQL) it restores to every
// moment after it into a new datadir, with each replay mode. Every restore
// must reproduce CHECKSUM TABLE of every table, and the source's GTID
// state, exactly.
func TestRestoreOnEachServer(t *testing.T) {
	for _, f := range testbed.Servers(t) {
		t.Run(f.String(), func(t *testing.T) { restoreOn(t, f) })
	}
}

func restoreOn(t *testing.T, f testbed.Flavor) {
	begin := time.Now()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 200*time.Millisecond)
	w := startWorkload(t, src)
	w.waitCommits(t, 50)
	if f.MySQL() {
		// MySQL 8.4+ tagged GTIDs, in the snapshot's GTID set and in the replay.
		taggedInsert(t, w, "tagged, in the snapshot")
	}
	pitrCfg, _ := mysql.ParseDSN(src.PitrDSN())
	logical, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: pitrCfg, Storage: st, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: logical snapshot %s at %s (gtid %s)", src.Version(), logical.ID, logical.Binlog, logical.GTIDSet)

	var moments []moment
	// checkpoint pauses the workload and reads, inside the pause, the
	// tables and the GTID state the moments it returns must restore.
	checkpoint := func(during func()) (time.Time, moment) {
		var gtid string
		at, sums := w.checkpoint(t, src, func() {
			if during != nil {
				during()
			}
			gtid = gtidState(t, src)
		})
		return at, moment{sums: sums, gtid: gtid}
	}
	add := func(name string, target Target, mo moment) {
		mo.name, mo.target = name, target
		moments = append(moments, mo)
	}
	atTime := func(at time.Time) Target { return Target{Kind: AtTime, Time: at} }
	atPosition := func(pos catalog.Position) Target { return Target{Kind: AtPosition, Position: pos} }

	w.waitCommits(t, 50)
	at, mo := checkpoint(nil)
	add("between two commits", atTime(at), mo)

	physical := takePhysical(t, f, src, st)
	t.Logf("physical snapshot %s (%s) at %s (gtid %s)", physical.ID, physical.Tool, physical.Binlog, physical.GTIDSet)

	big := make([]byte, 10<<20)
	rand.Read(big)
	var pos catalog.Position
	at, mo = checkpoint(func() {
		w.exec(t, "CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB)")
		w.exec(t, "INSERT INTO app.blobs VALUES (1, ?)", big)
		if f.MySQL() {
			taggedInsert(t, w, "tagged, replayed")
		}
		pos = archivetest.BinlogEnd(t, src)
	})
	add("at a position just after a 10 MB transaction", atPosition(pos), mo)
	add("at a time just after a 10 MB transaction", atTime(at), mo)

	w.waitCommits(t, 50)
	_, mo = checkpoint(func() {
		w.exec(t, "FLUSH BINARY LOGS")
		pos = fileEnd(t, src, 2)
	})
	add("at the end of a binlog file, after FLUSH BINARY LOGS", atPosition(pos), mo)

	w.waitCommits(t, 50)
	at, mo = checkpoint(nil)
	add("just before DROP TABLE", atTime(at), mo)
	if _, ok := mo.sums["`app`.`doomed`"]; !ok {
		t.Fatal("the checkpoint before the DROP holds no app.doomed")
	}
	w.waitCommits(t, 50)
	at, mo = checkpoint(func() { w.exec(t, "DROP TABLE app.doomed") })
	add("just after DROP TABLE", atTime(at), mo)
	w.waitCommits(t, 50)
	close(w.stop)
	<-w.done

	// Nothing commits for 3 s of commit time; the target is in the middle.
	quiet := w.clock.now()
	mo = moment{sums: tableChecksums(t, srcConfig(t, src)), gtid: gtidState(t, src)}
	w.clock.skip(t, 3*time.Second)
	add("inside a quiet period", atTime(quiet.Add(1500*time.Millisecond)), mo)
	for i := range 5 {
		w.exec(t, "INSERT INTO app.log (note, at) VALUES (?, NOW(6))", fmt.Sprint("after the quiet period ", i))
	}
	w.marks = append(w.marks, quiet) // for checkCommitTimes
	_, mo = checkpoint(nil)
	w.checkCommitTimes(t, src)
	add("latest", Target{Kind: Latest}, mo)
	archivetest.WaitArchived(t, streamer, src)
	t.Logf("archive written in %s", time.Since(begin).Round(time.Millisecond))

	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var took []string
	for _, mo := range moments {
		for _, snap := range []*catalog.Manifest{logical, physical} {
			if mo.name == "between two commits" && snap == physical {
				continue // before the physical snapshot
			}
			p, err := Make(arch, []*catalog.Manifest{snap}, mo.target, time.Now())
			if err != nil {
				t.Fatalf("plan a restore %s from the %s snapshot: %v", mo.name, snap.Method, err)
			}
			if p.Snapshot.ID != snap.ID || p.From != snap.Binlog {
				t.Fatalf("the plan %s takes snapshot %s from %s, want %s from %s", mo.name, p.Snapshot.ID, p.From, snap.ID, snap.Binlog)
			}
			for _, replay := range []string{ReplayServer, ReplayMysqlbinlog} {
				name := "datadir/" + replay + "/" + mo.name
				if snap == physical {
					name = "physical/" + name
				}
				t.Run(name, func(t *testing.T) {
					start := time.Now()
					dir, _ := os.MkdirTemp("", "rst-")
					t.Cleanup(func() { os.RemoveAll(dir) })
					res, err := Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", Replay: replay, WorkDir: dir + "/w",
						Programs: f.Programs(), BufferPool: 128 << 20, Logger: testLogger(t)})
					if err != nil {
						t.Fatal(err)
					}
					got := restoredOn(t, f, dir)
					checkRestored(t, mo, res, got)
					took = append(took, fmt.Sprintf("%s: %d txns, replay %s, all %s", name, res.Marker.Transactions,
						res.ReplayDuration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
				})
				if snap == physical {
					continue // a running server takes logical snapshots only
				}
				t.Run("server/"+replay+"/"+mo.name, func(t *testing.T) {
					start := time.Now()
					dst := emptyTarget(t, f)
					target, _ := mysql.ParseDSN(dst.DSN())
					res, err := Apply(t.Context(), p, Options{Store: st, Target: target, Replay: replay, WorkDir: t.TempDir(), Programs: f.Programs()})
					if err != nil {
						t.Fatal(err)
					}
					got := targetState(t, f, dst)
					checkRestored(t, mo, res, got)
					took = append(took, fmt.Sprintf("server/%s/%s: %d txns, replay %s, all %s", replay, mo.name, res.Marker.Transactions,
						res.ReplayDuration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
				})
			}
		}
	}
	t.Logf("%s: %d restores in %s:\n%s", f, len(took), time.Since(begin).Round(time.Second), strings.Join(took, "\n"))
}

// takePhysical takes a physical snapshot of src with the tool of its
// release: mariadb-backup, or on MySQL the clone plugin (whose clone the
// release's mysqld finishes).
func takePhysical(t *testing.T, f testbed.Flavor, src *testbed.MariaDB, st storage.Storage) *catalog.Manifest {
	t.Helper()
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	source, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	opts := physical.Options{Source: source, Storage: st, TempDir: t.TempDir(), Logger: testLogger(t)}
	switch {
	case f.MySQL():
		opts.ServerPath = f.Binary(t, "mysqld")
	case f.BinDir() != "":
		opts.ToolPath = f.Binary(t, "mariadb-backup")
	}
	m, err := physical.Take(t.Context(), opts)
	if err != nil {
		t.Fatalf("physical snapshot: %v", err)
	}
	return m
}

// fileEnd is where the server's binlog file n from the end (1: the
// current one) ends.
func fileEnd(t *testing.T, src *testbed.MariaDB, n int) catalog.Position {
	t.Helper()
	files := src.BinlogFiles(t)
	if len(files) < n {
		t.Fatalf("the server has %d binlog files, not %d", len(files), n)
	}
	fi, err := os.Stat(files[len(files)-n])
	if err != nil {
		t.Fatal(err)
	}
	return catalog.Position{File: filepath.Base(files[len(files)-n]), Pos: uint64(fi.Size())}
}

// taggedInsert commits a row in a transaction with a tagged GTID
// (uuid:tag:n, MySQL 8.4 and later).
func taggedInsert(t *testing.T, w *workload, note string) {
	t.Helper()
	conn := w.conn
	for _, q := range []string{setTimestamp(w.clock.now()), "SET SESSION gtid_next = 'AUTOMATIC:pitr_tagged'", "INSERT INTO app.log (note, at) VALUES ('" + note + "', NOW(6))",
		"SET SESSION gtid_next = 'AUTOMATIC'"} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// emptyTarget starts a server of the flavor, as its image starts it, for a
// restore into a running server: another server_id than the source's, and
// on MySQL local_infile turned on, as an operator must (see checkTarget).
func emptyTarget(t *testing.T, f testbed.Flavor) *testbed.MariaDB {
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 7})
	if f.MySQL() {
		dst.Exec(t, "SET GLOBAL local_infile = ON")
	}
	return dst
}

// checkRestored compares a restored server with the moment it was restored to.
func checkRestored(t *testing.T, mo moment, res *Result, got restored) {
	t.Helper()
	if fmt.Sprint(got.sums) != fmt.Sprint(mo.sums) {
		t.Errorf("restored tables differ from the source's at %s:\n got %v\nwant %v", mo.name, got.sums, mo.sums)
	}
	if got.gtid != mo.gtid {
		t.Errorf("GTID state %q, the source's was %q", got.gtid, mo.gtid)
	}
	if got.gtid != res.Marker.GTIDState {
		t.Errorf("GTID state %q, the marker says %q", got.gtid, res.Marker.GTIDState)
	}
	if got.replication != "" {
		t.Errorf("replication configuration left after the restore: %s", got.replication)
	}
	if len(got.leftovers) > 0 {
		t.Errorf("replication files left in the datadir: %v", got.leftovers)
	}
}

// gtidState is a server's GTID state as a restore records it: MariaDB
// gtid_binlog_pos (which a restored server has as gtid_slave_pos), MySQL
// gtid_executed.
func gtidState(t *testing.T, src *testbed.MariaDB) string {
	t.Helper()
	q := "SELECT @@GLOBAL.gtid_binlog_pos"
	if src.Flavor().MySQL() {
		q = "SELECT @@GLOBAL.gtid_executed"
	}
	var s string
	if err := src.DB(t).QueryRow(q).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(s, "\n", "")
}

// restoredOn starts a server of the flavor on the restored datadir in dir,
// with args, and reads its tables, GTID state and replication state.
func restoredOn(t *testing.T, f testbed.Flavor, dir string, args ...string) restored {
	t.Helper()
	var r restored
	for _, pat := range []string{"*relay-bin*", "master*.info", "relay-log*.info"} {
		m, _ := filepath.Glob(filepath.Join(dir, "data", pat))
		r.leftovers = append(r.leftovers, m...)
	}
	srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: f.Family(), Datadir: dir + "/data", RunDir: dir + "/r", SkipGrants: true,
		Programs: f.Programs(), Args: args})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(t.Context()))
	readState(t, f, srv.Config(), &r)
	return r
}

// targetState reads a restored running server.
func targetState(t *testing.T, f testbed.Flavor, dst *testbed.MariaDB) restored {
	t.Helper()
	var r restored
	for _, pat := range []string{"*relay-bin*", "master*.info", "relay-log*.info"} {
		m, _ := filepath.Glob(filepath.Join(dst.DataDir(), pat))
		r.leftovers = append(r.leftovers, m...)
	}
	cfg, _ := mysql.ParseDSN(dst.DSN())
	readState(t, f, cfg, &r)
	return r
}

func readState(t *testing.T, f testbed.Flavor, cfg *mysql.Config, r *restored) {
	t.Helper()
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sqlOpen(c)
	defer db.Close()
	status, gtid := "SHOW SLAVE STATUS", "SELECT @@GLOBAL.gtid_slave_pos"
	if f.MySQL() {
		status, gtid = "SHOW REPLICA STATUS", "SELECT @@GLOBAL.gtid_executed"
	}
	rows, err := db.Query(status)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		r.replication = "a row"
	}
	rows.Close()
	if err := db.QueryRow(gtid).Scan(&r.gtid); err != nil {
		t.Fatal(err)
	}
	r.gtid = strings.ReplaceAll(r.gtid, "\n", "")
	r.sums = tableChecksums(t, cfg)
}

// TestRestoreRefusalsOnEachServer checks what a restore refuses before it
// fetches anything — the server programs of another release or family, a
// running server with local_infile off — and what a failed restore into a
// running server says the server holds.
func TestRestoreRefusalsOnEachServer(t *testing.T) {
	for _, f := range testbed.Servers(t) {
		t.Run(f.String(), func(t *testing.T) {
			src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			streamer := archivetest.Stream(t, src, st, 200*time.Millisecond)
			src.Exec(t, "CREATE DATABASE app")
			src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
			pitrCfg, _ := mysql.ParseDSN(src.PitrDSN())
			if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: pitrCfg, Storage: st, Threads: 1}); err != nil {
				t.Fatal(err)
			}
			src.Exec(t, "INSERT INTO app.t VALUES (1, 'one')")
			archivetest.WaitArchived(t, streamer, src)
			p := planLatest(t, st)

			// The host's programs are MariaDB 10.11's: for the other
			// servers they are another release's or family's.
			refuseHost := func(t *testing.T) {
				dir := t.TempDir()
				_, err := Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", WorkDir: dir + "/w", Programs: programs.Finder{}})
				want := mysqld.ErrRelease // MariaDB 10.11's mariadbd
				if f.MySQL() {
					want = programs.ErrNotFound // no MySQL mysqld, only MariaDB's link
				}
				if !errors.Is(err, want) {
					t.Fatalf("restore with the host's programs: %v, want %v", err, want)
				}
				t.Logf("refused: %v", err)
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Errorf("the refused restore left %v", ents)
				}
			}
			if f.BinDir() != "" {
				t.Run("the host's programs", refuseHost)
			}
			t.Run("local_infile off", func(t *testing.T) {
				dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 7})
				dst.Exec(t, "SET GLOBAL local_infile = OFF")
				target, _ := mysql.ParseDSN(dst.DSN())
				_, err := Apply(t.Context(), p, Options{Store: st, Target: target, WorkDir: t.TempDir(), Programs: f.Programs()})
				if err == nil || !strings.Contains(err.Error(), "local_infile is OFF") || !strings.Contains(err.Error(), "nothing was changed") {
					t.Fatalf("restore into a server with local_infile=OFF: %v", err)
				}
				var n int
				dst.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'app'").Scan(&n)
				if n != 0 {
					t.Error("the refused restore created the snapshot's database")
				}
			})
			t.Run("replay fails: the error says what the target holds", func(t *testing.T) {
				dst := emptyTarget(t, f)
				target, _ := mysql.ParseDSN(dst.DSN())
				// The replay's row event finds no table.
				_, err := Apply(t.Context(), p, Options{Store: st, Target: target, WorkDir: t.TempDir(), Programs: f.Programs(),
					AfterSnapshot: func(ctx context.Context, _ *mysql.Config) error {
						_, err := dst.DB(t).ExecContext(ctx, "DROP TABLE app.t")
						return err
					}})
				if !errors.Is(err, ErrTargetChanged) || !strings.Contains(err.Error(), "snapshot loaded, replay not completed: drop databases `app`") {
					t.Fatalf("failed replay into a server: %v", err)
				}
				t.Logf("refused: %v", err)
			})
		})
	}
}

// planLatest plans a restore of everything archived in st.
func planLatest(t *testing.T, st storage.Storage) *Plan {
	t.Helper()
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

// testLogger logs the restore's steps to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// TestRestoreKeepsServerSettings restores into new datadirs a logical
// snapshot and a clone of a MySQL server initialised with settings a
// datadir keeps for life (lower_case_table_names, innodb_page_size), and
// replays the binlog written after each: the temporary server, and the
// datadir a restore initialises, must have the source's settings, or
// mysqld refuses the clone's datadir at once and the source's
// configuration the restored one.
func TestRestoreKeepsServerSettings(t *testing.T) {
	f := testbed.MySQL97
	settings := []string{"--lower-case-table-names=1", "--innodb-page-size=8192"}
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ExtraArgs: settings})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 200*time.Millisecond)
	src.Exec(t, "CREATE DATABASE App")
	src.Exec(t, "CREATE TABLE App.Orders (id INT PRIMARY KEY, note VARCHAR(40))")
	src.Exec(t, "INSERT INTO App.Orders VALUES (1, 'in the snapshots'), (2, 'also')")
	pitrCfg, _ := mysql.ParseDSN(src.PitrDSN())
	logical, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: pitrCfg, Storage: st, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	src.Exec(t, "INSERT INTO App.Orders VALUES (3, 'after the logical snapshot')")
	physical := takePhysical(t, f, src, st)
	for _, m := range []*catalog.Manifest{logical, physical} {
		if m.LowerCaseTableNames != 1 || m.InnoDBPageSize != 8192 {
			t.Fatalf("the %s snapshot's manifest records lower_case_table_names %d and innodb_page_size %d, want 1 and 8192",
				m.Method, m.LowerCaseTableNames, m.InnoDBPageSize)
		}
	}
	src.Exec(t, "INSERT INTO App.Orders VALUES (4, 'replayed')")
	src.Exec(t, "UPDATE app.orders SET note = 'changed' WHERE id = 1")
	src.Exec(t, "CREATE TABLE App.Later (id INT PRIMARY KEY)")
	src.Exec(t, "INSERT INTO App.Later VALUES (7)")
	archivetest.WaitArchived(t, streamer, src)
	want := moment{name: "latest", sums: tableChecksums(t, srcConfig(t, src)), gtid: gtidState(t, src)}
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, snap := range []*catalog.Manifest{logical, physical} {
		p, err := Make(arch, []*catalog.Manifest{snap}, Target{Kind: Latest}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, replay := range []string{ReplayServer, ReplayMysqlbinlog} {
			t.Run(snap.Method+"/"+replay, func(t *testing.T) {
				dir, _ := os.MkdirTemp("", "rst-")
				t.Cleanup(func() { os.RemoveAll(dir) })
				res, err := Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", Replay: replay, WorkDir: dir + "/w",
					Programs: f.Programs(), BufferPool: 128 << 20, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				checkRestored(t, want, res, restoredOn(t, f, dir, settings...))
			})
		}
	}
}
