package binlog

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

var recordMariaDB = flag.Bool("record-mariadb", false, "rewrite the testdata/mariadb-*.binlog.000001 fixtures from a live server")

// mariadbFixtures are binlogs recorded by TestTrackerOnLiveMariaDB with
// -record-mariadb (see testdata/README.md).
var mariadbFixtures = []string{"mariadb-10.11-crc32.binlog.000001", "mariadb-10.11-none.binlog.000001"}

// mariadbWorkload is SQL that makes a MariaDB server write every shape of
// event group the tracker must delimit: standalone DDL, row and statement
// transactions, non-transactional changes, savepoints, XA, CREATE ... SELECT,
// temporary tables, and compressed events (log_bin_compress).
func mariadbWorkload() []string {
	long := strings.Repeat("z", 300)
	var qs []string
	for _, format := range []string{"ROW", "STATEMENT"} {
		for _, compress := range []string{"OFF", "ON"} {
			d := "d_" + strings.ToLower(format) + "_" + strings.ToLower(compress)
			t, m := d+".t", d+".m"
			qs = append(qs,
				"SET GLOBAL log_bin_compress="+compress,
				"SET SESSION binlog_format="+format,
				"CREATE DATABASE "+d,
				"CREATE TABLE "+t+" (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB",
				"CREATE TABLE "+m+" (id INT PRIMARY KEY, v TEXT) ENGINE=MyISAM",
				"INSERT INTO "+t+" VALUES (1, '"+long+"')",
				"INSERT INTO "+m+" VALUES (1, '"+long+"')",
				"BEGIN", "INSERT INTO "+t+" VALUES (2,'a')", "INSERT INTO "+t+" VALUES (3,'a')", "COMMIT",
				"BEGIN", "INSERT INTO "+t+" VALUES (4,'a')", "SAVEPOINT sp", "INSERT INTO "+t+" VALUES (5,'a')",
				"INSERT INTO "+m+" VALUES (5,'a')", "ROLLBACK TO sp", "COMMIT",
				"BEGIN", "INSERT INTO "+m+" VALUES (6,'a')", "INSERT INTO "+t+" VALUES (6,'a')", "ROLLBACK",
				"BEGIN", "INSERT INTO "+t+" VALUES (7,'a')", "INSERT INTO "+m+" VALUES (7,'a')", "COMMIT",
				"XA START 'a'", "INSERT INTO "+t+" VALUES (8,'a')", "XA END 'a'", "XA PREPARE 'a'", "XA COMMIT 'a'",
				"XA START 'b'", "INSERT INTO "+t+" VALUES (9,'a')", "XA END 'b'", "XA PREPARE 'b'", "XA ROLLBACK 'b'",
				"XA START 'c'", "INSERT INTO "+t+" VALUES (10,'"+long+"')", "XA END 'c'", "XA COMMIT 'c' ONE PHASE",
				"CREATE TABLE "+d+".c AS SELECT * FROM "+t,
				"CREATE TEMPORARY TABLE "+d+".tmp (id INT)", "INSERT INTO "+d+".tmp VALUES (1)",
				"INSERT INTO "+t+" SELECT id+100, NULL FROM "+d+".tmp", "DROP TEMPORARY TABLE "+d+".tmp",
				"ALTER TABLE "+t+" COMMENT '"+long+"'",
				"UPDATE "+t+" SET v = '"+long+long+"' WHERE id < 5",
				"DROP TABLE "+d+".c",
			)
		}
	}
	return qs
}

// TestTrackerOnLiveMariaDB runs the workload on a real server and checks the
// tracker's boundaries in the binlog it writes.
func TestTrackerOnLiveMariaDB(t *testing.T) {
	for i, checksum := range []string{"CRC32", "NONE"} {
		t.Run(checksum, func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{BinlogChecksum: checksum})
			// Start a fresh file so that it holds the workload only.
			db.Exec(t, "FLUSH BINARY LOGS")
			conn, err := db.DB(t).Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, q := range mariadbWorkload() {
				if _, err := conn.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Exec(t, "FLUSH BINARY LOGS")
			files := db.BinlogFiles(t)
			file, err := os.ReadFile(files[len(files)-2])
			if err != nil {
				t.Fatal(err)
			}
			groups := checkMariaDBBoundaries(t, file, checksum == "CRC32")
			t.Logf("%s: %d bytes, %d event groups", db.Version(), len(file), groups)
			if *recordMariaDB {
				if err := os.WriteFile(filepath.Join("testdata", mariadbFixtures[i]), file, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestTrackerOnMariaDBFixtures checks the tracker on the recorded MariaDB binlogs.
func TestTrackerOnMariaDBFixtures(t *testing.T) {
	for _, name := range mariadbFixtures {
		t.Run(name, func(t *testing.T) {
			file := readFixture(t, name)
			groups := checkMariaDBBoundaries(t, file, strings.Contains(name, "crc32"))
			if groups < 80 {
				t.Errorf("%d event groups, the workload writes more", groups)
			}
			// The fixture must hold the events that once broke the tracker.
			types := map[EventType]bool{}
			for _, ev := range fileEvents(t, file) {
				types[EventType(ev.b[4])] = true
			}
			for _, typ := range []EventType{MariaDBQueryCompressed, XAPrepareEvent, MariaDBAnnotateRows, XIDEvent} {
				if !types[typ] {
					t.Errorf("fixture has no event of type %d", typ)
				}
			}
		})
	}
}

// checkMariaDBBoundaries feeds a MariaDB binlog file to a tracker and checks
// its transactions against the file's event groups: every group begins with
// a GTID event and runs until the next event that belongs to no group (a
// GTID, binlog checkpoint, GTID list, Rotate or Stop event, or the end of the
// file). It returns the number of groups.
func checkMariaDBBoundaries(t *testing.T, file []byte, checksum bool) int {
	t.Helper()
	evs := fileEvents(t, file)
	outside := func(typ EventType) bool {
		switch typ {
		case MariaDBGTIDEvent, MariaDBCheckpoint, MariaDBGTIDListEvent, RotateEvent, StopEvent, FormatDescription:
			return true
		}
		return false
	}
	end := evs[len(evs)-1].pos + uint64(len(evs[len(evs)-1].b))
	var tr Tracker
	var txns []*Txn
	var want []string
	for i, ev := range evs {
		h, err := ParseHeader(ev.b)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == MariaDBGTIDEvent {
			if open, start := tr.Open(); open {
				t.Errorf("transaction from %d still open at the GTID event at %d", start, ev.pos)
			}
			f, _ := tr.Format()
			gi, err := f.parseMariaDBGTID(h, ev.b)
			if err != nil {
				t.Fatal(err)
			}
			groupEnd := end
			for _, next := range evs[i+1:] {
				if outside(EventType(next.b[4])) {
					groupEnd = next.pos
					break
				}
			}
			want = append(want, fmt.Sprintf("[%d,%d) %s", ev.pos, groupEnd, gi.GTID))
		}
		tx, err := tr.Feed(ev.b, ev.pos)
		if err != nil {
			t.Fatalf("event at %d: %v", ev.pos, err)
		}
		if tx != nil {
			txns = append(txns, tx)
		}
	}
	if f, _ := tr.Format(); f.Checksum != checksum || !f.MariaDB() {
		t.Errorf("format %+v, want MariaDB with checksum %v", f, checksum)
	}
	var got []string
	for _, tx := range txns {
		got = append(got, fmt.Sprintf("[%d,%d) %s", tx.Start, tx.End, tx.GTID))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("transactions differ from the event groups:\n got %q\nwant %q", got, want)
	}
	return len(want)
}

// TestTrackerOnMySQLFixtures follows the transactions of real MySQL binlogs.
func TestTrackerOnMySQLFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			evs := fileEvents(t, readFixture(t, fx.name))
			var tr Tracker
			var txns []*Txn
			// boundaries are the positions a transaction may end at: the
			// start of the next transaction, or of an event outside any.
			boundaries := map[uint64]bool{}
			gtids := map[uint64]bool{}
			var last time.Time
			for i, ev := range evs {
				h, err := ParseHeader(ev.b)
				if err != nil {
					t.Fatal(err)
				}
				if h.Type == AnonymousGTIDEvent || h.Type == GTIDEvent {
					gtids[ev.pos] = true
				}
				if h.Type == AnonymousGTIDEvent || h.Type == GTIDEvent || h.Type == StopEvent || h.Type == RotateEvent {
					boundaries[ev.pos] = true
					if open, start := tr.Open(); open {
						t.Errorf("transaction from %d still open at the %d event at %d", start, h.Type, ev.pos)
					}
				}
				tx, err := tr.Feed(ev.b, ev.pos)
				if err != nil {
					t.Fatalf("event %d at %d: %v", i, ev.pos, err)
				}
				if tx == nil {
					continue
				}
				txns = append(txns, tx)
				if tx.HasGTID {
					t.Errorf("%s: GTID mode is off in the fixture", describeTxn(tx))
				}
				// original_commit_timestamp has microseconds and falls within
				// the second of the committing event or the next.
				if tx.CommitTime.Nanosecond() == 0 || tx.CommitTime.Nanosecond()%1000 != 0 {
					t.Errorf("%s: commit time lacks microsecond precision", describeTxn(tx))
				}
				if d := tx.CommitTime.Sub(h.Time()); d < 0 || d >= 2*time.Second {
					t.Errorf("%s: commit time %v from the committing event's time %v", describeTxn(tx), d, h.Time())
				}
				if tx.CommitTime.Before(last) {
					t.Errorf("%s: commit time before the previous one, %s", describeTxn(tx), last)
				}
				last = tx.CommitTime
			}
			if len(txns) != fx.transactions {
				t.Errorf("%d transactions, want %d", len(txns), fx.transactions)
			}
			end := evs[len(evs)-1].pos + uint64(len(evs[len(evs)-1].b))
			boundaries[end] = true
			if len(gtids) != fx.transactions {
				t.Errorf("%d GTID events, want one per transaction", len(gtids))
			}
			for i, tx := range txns {
				if !gtids[tx.Start] {
					t.Errorf("%s does not start at a GTID event", describeTxn(tx))
				}
				if !boundaries[tx.End] {
					t.Errorf("%s ends inside a transaction", describeTxn(tx))
				}
				if i > 0 && tx.Start < txns[i-1].End {
					t.Errorf("%s overlaps %s", describeTxn(tx), describeTxn(txns[i-1]))
				}
			}
			if open, start := tr.Open(); open {
				t.Errorf("transaction from %d open at the end of the file", start)
			}
		})
	}
}
