package restore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// tableChecksums returns CHECKSUM TABLE of every user table, keyed by name.
func tableChecksums(t *testing.T, cfg *mysql.Config) map[string]string {
	t.Helper()
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sqlOpen(c)
	defer db.Close()
	rows, err := db.Query(`SELECT CONCAT('` + "`" + `', table_schema, '` + "`.`" + `', table_name, '` + "`" + `') FROM information_schema.tables
		WHERE table_schema NOT IN ('mysql','sys','information_schema','performance_schema') AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	sort.Strings(names)
	out := map[string]string{}
	for _, n := range names {
		var name, sum string
		if err := db.QueryRow("CHECKSUM TABLE "+n+" EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out[n] = sum
	}
	return out
}

// commitClock hands out commit times for SET timestamp: the wall clock
// plus an offset that checkpoints push forward, always increasing. On
// MariaDB a transaction's commit time is its binlog event headers' time,
// which is the session's timestamp, so the commits on either side of a
// checkpoint land in seconds two apart without anyone waiting for the
// wall clock to get there. MySQL records the real commit time in the GTID
// event (original_commit_timestamp, settable only with an explicit GTID),
// so there skip waits for the wall clock itself.
type commitClock struct {
	mu     sync.Mutex
	offset time.Duration
	last   time.Time
	wall   bool // commit times are the wall clock's: MySQL
}

func (c *commitClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now().Add(c.offset).Truncate(time.Microsecond)
	if !t.After(c.last) {
		t = c.last.Add(time.Microsecond)
	}
	c.last = t
	return t
}

// skip makes the next commit time at least d after the last one.
func (c *commitClock) skip(t *testing.T, d time.Duration) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.wall {
		c.offset += d
		return
	}
	until := c.last.Add(d)
	testbed.Eventually(t, d+5*time.Second, func() error {
		if now := time.Now(); now.Before(until) {
			return fmt.Errorf("the clock reads %s, waiting for %s", now.UTC().Format(time.StampMicro), until.UTC().Format(time.StampMicro))
		}
		return nil
	})
}

// setTimestamp is the statement that gives a session's next commits time at.
func setTimestamp(at time.Time) string {
	return fmt.Sprintf("SET timestamp = %d.%06d", at.Unix(), at.Nanosecond()/1000)
}

// workload writes transactions to app.accounts and app.log until stopped,
// on one session whose commit times come from clock; holding pause.Lock()
// pauses it.
type workload struct {
	pause   sync.Mutex
	stop    chan struct{}
	done    chan struct{}
	clock   commitClock
	commits atomic.Int64
	conn    *sql.Conn   // the test's own session, for exec
	marks   []time.Time // the commit time each checkpoint was taken at
}

func startWorkload(t *testing.T, src *testbed.MariaDB) *workload {
	db := src.DB(t)
	for _, q := range []string{
		"CREATE DATABASE app",
		"CREATE TABLE app.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)",
		"CREATE TABLE app.log (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(100), at DATETIME(6))",
		"CREATE TABLE app.doomed (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO app.doomed VALUES (1, 'keep me'), (2, 'me too')",
	} {
		src.Exec(t, q)
	}
	for i := 0; i < 20; i++ {
		src.Exec(t, "INSERT INTO app.accounts VALUES (?, 1000)", i)
	}
	// The session variable holds only on a pinned connection.
	wc, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{stop: make(chan struct{}), done: make(chan struct{})}
	w.clock.wall = src.Flavor().MySQL()
	if w.conn, err = db.Conn(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.conn.Close() })
	go func() {
		defer close(w.done)
		defer wc.Close()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-t.Context().Done():
				return
			default:
			}
			w.pause.Lock()
			if _, err := wc.ExecContext(t.Context(), setTimestamp(w.clock.now())); err == nil {
				if tx, err := wc.BeginTx(t.Context(), nil); err == nil {
					a, b := i%20, (i*7+3)%20
					tx.Exec("UPDATE app.accounts SET balance = balance - 5 WHERE id = ?", a)
					tx.Exec("UPDATE app.accounts SET balance = balance + 5 WHERE id = ?", b)
					tx.Exec("INSERT INTO app.log (note, at) VALUES (?, NOW(6))", fmt.Sprintf("move %d→%d", a, b))
					if tx.Commit() == nil {
						w.commits.Add(1)
					}
				}
			}
			w.pause.Unlock()
			// Pacing, not waiting: a steady load that leaves the two
			// cores of a CI machine to the streamer and the server.
			time.Sleep(3 * time.Millisecond)
		}
	}()
	return w
}

// exec runs q on the test's own session at the workload's clock.
func (w *workload) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := w.conn.ExecContext(t.Context(), setTimestamp(w.clock.now())); err != nil {
		t.Fatal(err)
	}
	if _, err := w.conn.ExecContext(t.Context(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// waitCommits waits until the workload has committed n more transactions.
func (w *workload) waitCommits(t *testing.T, n int64) {
	t.Helper()
	want := w.commits.Load() + n
	testbed.Eventually(t, 30*time.Second, func() error {
		if got := w.commits.Load(); got < want {
			return fmt.Errorf("the workload has committed %d transactions, want %d", got, want)
		}
		return nil
	})
}

// checkpoint pauses the workload and returns a time a second after the
// last commit (what during committed included) and the checksums there.
// The clock then skips two seconds, so that no commit second on either
// side can be mistaken for the time returned.
func (w *workload) checkpoint(t *testing.T, src *testbed.MariaDB, during func()) (time.Time, map[string]string) {
	w.pause.Lock()
	defer w.pause.Unlock()
	if during != nil {
		during()
	}
	mark := w.clock.now()
	sums := tableChecksums(t, srcConfig(t, src))
	w.clock.skip(t, 2*time.Second)
	w.marks = append(w.marks, mark)
	return mark.Add(time.Second), sums
}

// checkCommitTimes checks on app.log, whose rows are stamped with NOW(6),
// which is the session's timestamp, that the commit times are as the
// checkpoints meant them: none in the two seconds after a checkpoint.
func (w *workload) checkCommitTimes(t *testing.T, src *testbed.MariaDB) {
	t.Helper()
	decimal := func(at time.Time) string { return fmt.Sprintf("%d.%06d", at.Unix(), at.Nanosecond()/1000) }
	for _, mark := range w.marks {
		var before, inside, after int
		if err := src.DB(t).QueryRow(fmt.Sprintf(`SELECT
			COALESCE(SUM(UNIX_TIMESTAMP(at) <= %[1]s), 0),
			COALESCE(SUM(UNIX_TIMESTAMP(at) > %[1]s AND UNIX_TIMESTAMP(at) < %[2]s), 0),
			COALESCE(SUM(UNIX_TIMESTAMP(at) >= %[2]s), 0) FROM app.log`, decimal(mark), decimal(mark.Add(2*time.Second)))).Scan(&before, &inside, &after); err != nil {
			t.Fatal(err)
		}
		if before == 0 || inside != 0 {
			t.Errorf("around the checkpoint at %s: %d commits before, %d in the two seconds after, want some and none", mark.UTC().Format(time.StampMicro), before, inside)
		}
	}
}

func srcConfig(t *testing.T, src *testbed.MariaDB) *mysql.Config {
	cfg, err := mysql.ParseDSN(src.DSN())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type checkpointSums struct {
	name string
	at   time.Time
	sums map[string]string
}

func TestRestoreToCheckpoints(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 200*time.Millisecond)
	w := startWorkload(t, src)
	w.waitCommits(t, 50)

	pitrCfg, _ := mysql.ParseDSN(src.PitrDSN())
	m, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: pitrCfg, Storage: st, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("logical snapshot %s at %s, writes blocked %s", m.ID, m.Binlog, m.WritesBlocked)
	source, err := binlog.NewSource(pitrCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	pm, err := physical.Take(t.Context(), physical.Options{Source: source, Storage: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("physical snapshot %s at %s, writes blocked %s", pm.ID, pm.Binlog, pm.WritesBlocked)

	var cps []checkpointSums
	w.waitCommits(t, 50)
	at, sums := w.checkpoint(t, src, nil)
	cps = append(cps, checkpointSums{"after some writes", at, sums})
	w.waitCommits(t, 50)
	big := make([]byte, 20<<20)
	rand.Read(big)
	at, sums = w.checkpoint(t, src, func() {
		w.exec(t, "INSERT INTO app.doomed VALUES (3, ?)", fmt.Sprintf("%x", big[:16<<10]))
		w.exec(t, "CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB)")
		w.exec(t, "INSERT INTO app.blobs VALUES (1, ?)", big)
	})
	cps = append(cps, checkpointSums{"after a 20 MB transaction", at, sums})
	w.waitCommits(t, 50)
	at, sums = w.checkpoint(t, src, nil)
	cps = append(cps, checkpointSums{"just before DROP TABLE", at, sums})
	w.waitCommits(t, 50)
	w.exec(t, "DROP TABLE app.doomed")
	w.waitCommits(t, 50)
	close(w.stop)
	<-w.done
	_, latest := w.checkpoint(t, src, nil)
	w.checkCommitTimes(t, src)
	archivetest.WaitArchived(t, streamer, src)

	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	byMethod := map[string][]*catalog.Manifest{}
	for _, m := range snaps.Complete {
		byMethod[m.Method] = append(byMethod[m.Method], m)
	}
	// The modes alternate per checkpoint so that both see the same machine load.
	took := map[string][]string{}
	for _, cp := range append(cps, checkpointSums{"latest", time.Time{}, latest}) {
		for _, method := range []string{catalog.MethodLogical, catalog.MethodPhysical} {
			for _, replay := range []string{ReplayServer, ReplayMysqlbinlog} {
				t.Run(method+"/"+replay+"/"+cp.name, func(t *testing.T) {
					target := Target{Kind: AtTime, Time: cp.at}
					if cp.at.IsZero() {
						target = Target{Kind: Latest}
					}
					p, err := Make(arch, byMethod[method], target, time.Now())
					if err != nil {
						t.Fatal(err)
					}
					if p.Snapshot.Method != method {
						t.Fatalf("planned a %s snapshot", p.Snapshot.Method)
					}
					dir, _ := os.MkdirTemp("", "rst-")
					t.Cleanup(func() { os.RemoveAll(dir) })
					var prog progressLog
					res, err := Apply(t.Context(), p, Options{Store: st, Datadir: dir + "/data", Replay: replay, WorkDir: dir + "/w", Progress: prog.add})
					if err != nil {
						t.Fatal(err)
					}
					prog.check(t, res.Marker.Transactions > 0)
					t.Logf("restored to %s: %d transactions replayed, stop %s, in %s (replay %s)", target, res.Marker.Transactions, res.Marker.Stop,
						res.Duration.Round(time.Millisecond), res.ReplayDuration.Round(time.Millisecond))
					took[method+"/"+replay] = append(took[method+"/"+replay], fmt.Sprintf("%s %d txns %s", cp.name, res.Marker.Transactions, res.ReplayDuration.Round(time.Millisecond)))
					got := restoredState(t, dir)
					if fmt.Sprint(got.sums) != fmt.Sprint(cp.sums) {
						t.Fatalf("restored tables differ from the checkpoint:\n got %v\nwant %v", got.sums, cp.sums)
					}
					if got.replication != "" {
						t.Errorf("replication configuration left after restore: %s", got.replication)
					}
					if got.gtid != res.Marker.GTIDState {
						t.Errorf("gtid_slave_pos = %q, want the marker's %q", got.gtid, res.Marker.GTIDState)
					}
					if len(got.leftovers) > 0 {
						t.Errorf("replication files left in the datadir: %v", got.leftovers)
					}
				})
			}
		}
	}
	for mode, d := range took {
		t.Logf("replay times, %s: %s", mode, strings.Join(d, "; "))
	}
}

// progressLog keeps what a restore reported.
type progressLog struct {
	phases []string
	last   map[string]Progress
}

func (l *progressLog) add(p Progress) {
	if l.last == nil {
		l.last = map[string]Progress{}
	}
	if len(l.phases) == 0 || l.phases[len(l.phases)-1] != p.Phase {
		l.phases = append(l.phases, p.Phase)
	}
	if prev, ok := l.last[p.Phase]; ok && p.Done < prev.Done {
		l.phases = append(l.phases, fmt.Sprintf("%s went back from %d to %d", p.Phase, prev.Done, p.Done))
	}
	l.last[p.Phase] = p
}

// check wants the phases once each, in order, each ending complete; replay
// only when there was something to replay.
func (l *progressLog) check(t *testing.T, replay bool) {
	t.Helper()
	want := []string{PhaseDownload, PhaseSnapshot}
	if replay {
		want = append(want, PhaseReplay)
	}
	if fmt.Sprint(l.phases) != fmt.Sprint(want) {
		t.Errorf("progress phases %v, want %v", l.phases, want)
	}
	for _, ph := range want {
		if p := l.last[ph]; p.Total <= 0 || p.Done != p.Total {
			t.Errorf("phase %s ended at %d of %d bytes", ph, p.Done, p.Total)
		}
	}
}

// restored is what a restored datadir holds.
type restored struct {
	sums        map[string]string
	replication string   // SHOW SLAVE STATUS or SHOW REPLICA STATUS, if any row
	gtid        string   // MariaDB gtid_slave_pos, MySQL gtid_executed
	leftovers   []string // relay logs and replication info files
}

// restoredState starts a server on the restored datadir and reads its
// checksums and replication state.
func restoredState(t *testing.T, dir string) restored {
	t.Helper()
	var r restored
	for _, pat := range []string{"*relay-bin*", "master*.info", "relay-log*.info"} {
		m, _ := filepath.Glob(filepath.Join(dir, "data", pat))
		r.leftovers = append(r.leftovers, m...)
	}
	srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: mysqld.MariaDB, Datadir: dir + "/data", RunDir: dir + "/r", SkipGrants: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(t.Context()))
	rows, err := srv.DB().Query("SHOW SLAVE STATUS")
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		r.replication = "a row"
	}
	rows.Close()
	if err := srv.DB().QueryRow("SELECT @@GLOBAL.gtid_slave_pos").Scan(&r.gtid); err != nil {
		t.Fatal(err)
	}
	r.sums = tableChecksums(t, srv.Config())
	return r
}

var _ = strings.Contains
