package binlog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// enableSemiSync makes db a semi-synchronous source whose commits wait up
// to timeout for an acknowledgement. prefix is the flavor's status prefix.
func enableSemiSync(t *testing.T, db *testbed.MariaDB, f testbed.Flavor, timeout time.Duration) (prefix string) {
	t.Helper()
	ms := timeout.Milliseconds()
	if f.Family() == "mysql" {
		db.Exec(t, "INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'")
		db.Exec(t, fmt.Sprintf("SET GLOBAL rpl_semi_sync_source_enabled = ON, rpl_semi_sync_source_timeout = %d", ms))
		return "Rpl_semi_sync_source_"
	}
	// MariaDB waits AFTER_COMMIT unless told otherwise: other sessions
	// would see a commit the archive may not have.
	db.Exec(t, fmt.Sprintf("SET GLOBAL rpl_semi_sync_master_enabled = ON, rpl_semi_sync_master_timeout = %d, rpl_semi_sync_master_wait_point = AFTER_SYNC", ms))
	return "Rpl_semi_sync_master_"
}

// semiStatus reads one of the server's semi-synchronous status counters.
func semiStatus(t *testing.T, db *testbed.MariaDB, name string) int64 {
	t.Helper()
	var n int64
	if err := db.DB(t).QueryRowContext(t.Context(), "SHOW GLOBAL STATUS LIKE '"+name+"'").Scan(new(string), &n); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// TestStreamerAcknowledgesDurableTransactions runs the streamer as the
// semi-synchronous replica of each server, at each level: every commit
// returns only once its transaction is durable at that level (in storage,
// the uploader's durable position has passed it), the server counts every
// commit as acknowledged and never falls back to asynchronous replication,
// and the archive is byte-identical to the server's binlog.
func TestStreamerAcknowledgesDurableTransactions(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MariaDB118, testbed.MySQL97) {
		for _, mode := range []AckMode{AckSpool, AckStorage} {
			t.Run(f.String()+"/"+string(mode), func(t *testing.T) {
				db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
				db.Exec(t, "CREATE DATABASE semi")
				db.Exec(t, "CREATE TABLE semi.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
				prefix := enableSemiSync(t, db, f, 20*time.Second)
				st, err := file.New(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				s := newStreamer(t, db, st, t.TempDir())
				s.Ack = mode
				s.FlushInterval = 30 * time.Second // only the acknowledgements seal segments early
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- s.Run(ctx) }()
				testbed.Eventually(t, 30*time.Second, func() error {
					if a := s.Status().Ack; a == nil || !a.RPOZero {
						return fmt.Errorf("RPO 0 does not hold yet: %+v", a)
					}
					return nil
				})
				yes := semiStatus(t, db, prefix+"yes_tx")

				// One writer: each commit's end is the binlog's end.
				for i := range 20 {
					t0 := time.Now()
					db.Exec(t, "INSERT INTO semi.t (v) VALUES (?)", fmt.Sprint("one ", i))
					if took := time.Since(t0); took > 10*time.Second {
						t.Fatalf("commit %d took %s: the server waited for its timeout", i, took)
					}
					end := binlogEnd(t, db)
					through := s.Status().Ack.Through
					if catalog.ComparePositions(through, end) < 0 {
						t.Fatalf("commit %d returned at %s, acknowledged only through %s", i, end, through)
					}
					if mode == AckStorage {
						if _, dur, _ := s.Uploader().Durable(); catalog.ComparePositions(dur, end) < 0 {
							t.Fatalf("commit %d returned at %s, in storage only through %s", i, end, dur)
						}
					}
				}
				// Four writers: transactions acknowledged together.
				var wg sync.WaitGroup
				for w := range 4 {
					wg.Go(func() {
						for i := range 20 {
							if _, err := db.DB(t).ExecContext(t.Context(), "INSERT INTO semi.t (v) VALUES (?)", fmt.Sprint("many ", w, " ", i)); err != nil {
								t.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				// The server waits once per group of commits it syncs
				// together: no commit went without an acknowledgement.
				if got := semiStatus(t, db, prefix+"yes_tx") - yes; got < 20 {
					t.Errorf("the server counts %d commits acknowledged, want at least 20", got)
				}
				for _, name := range []string{"no_tx", "no_times"} {
					if n := semiStatus(t, db, prefix+name); n != 0 {
						t.Errorf("%s%s = %d, want 0", prefix, name, n)
					}
				}
				a := s.Status().Ack
				if a.Acknowledged < 20 || a.LatencyP50 <= 0 || a.LatencyP99 < a.LatencyP50 {
					t.Errorf("ack status %+v: want at least 20 acknowledged, with latencies", a)
				}
				t.Logf("%s: acknowledgement latency p50 %.2f ms, p99 %.2f ms", mode, a.LatencyP50*1000, a.LatencyP99*1000)
				waitDurable(t, s, binlogEnd(t, db), 30*time.Second)
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				compareWithServer(t, st, db)
			})
		}
	}
}

// TestStreamerAckWithoutSemiSyncServer checks that a server that cannot
// wait for the agent (MySQL without the plugin, semi-synchronous
// replication not enabled) is still archived, and that the status says RPO
// 0 does not hold and why.
func TestStreamerAckWithoutSemiSyncServer(t *testing.T) {
	cases := []struct {
		name  string
		f     testbed.Flavor
		setup []string
		why   string
	}{
		{"mariadb-10.11 not enabled", testbed.MariaDB1011, nil, "not enabled"},
		{"mysql-9.7 without the plugin", testbed.MySQL97, nil, "INSTALL PLUGIN"},
		{"mysql-9.7 not enabled", testbed.MySQL97, []string{"INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'"}, "not enabled"},
	}
	for _, tc := range cases {
		if len(testbed.ServersAmong(t, tc.f)) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: tc.f})
			for _, q := range tc.setup {
				db.Exec(t, q)
			}
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			s := newStreamer(t, db, st, t.TempDir())
			s.Ack = AckSpool
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
			db.Exec(t, "INSERT INTO app.t VALUES (1), (2)")
			waitDurable(t, s, binlogEnd(t, db), 30*time.Second)
			testbed.Eventually(t, 10*time.Second, func() error {
				a := s.Status().Ack
				if a == nil || a.RPOZero || !strings.Contains(a.Problem, tc.why) {
					return fmt.Errorf("ack status %+v, want RPO 0 not holding because %q", a, tc.why)
				}
				return nil
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			compareWithServer(t, st, db)
		})
	}
}

// TestStreamerAckStorageOutage runs the streamer with durable-storage while
// storage goes down: commits wait for the server's timeout, then the server
// falls back to asynchronous replication and the status says RPO 0 is
// lost; once storage is back and the streamer has caught up, the server
// waits for it again, and the archive has lost nothing.
func TestStreamerAckStorageOutage(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
			db.Exec(t, "CREATE DATABASE semi")
			db.Exec(t, "CREATE TABLE semi.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
			const timeout = time.Second
			enableSemiSync(t, db, f, timeout)
			fs, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			st := storagetest.NewFaulty(fs, 1, storagetest.Faults{})
			s := newStreamer(t, db, st, t.TempDir())
			s.Ack = AckStorage
			s.RetryMax = 200 * time.Millisecond
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			rpoZero := func(want bool) func() error {
				return func() error {
					if a := s.Status().Ack; a == nil || a.RPOZero != want {
						return fmt.Errorf("ack status %+v, want rpo_zero %v", a, want)
					}
					return nil
				}
			}
			testbed.Eventually(t, 30*time.Second, rpoZero(true))
			db.Exec(t, "INSERT INTO semi.t (v) VALUES ('before')")

			st.Down(true)
			t0 := time.Now()
			db.Exec(t, "INSERT INTO semi.t (v) VALUES ('waits for the timeout')")
			if took := time.Since(t0); took < timeout-100*time.Millisecond || took > 10*time.Second {
				t.Errorf("the commit during the outage took %s, want the server's timeout (%s)", took, timeout)
			}
			for i := range 5 {
				db.Exec(t, "INSERT INTO semi.t (v) VALUES (?)", fmt.Sprint("asynchronous ", i))
			}
			testbed.Eventually(t, 10*time.Second, func() error {
				a := s.Status().Ack
				if a.RPOZero || !strings.Contains(a.Problem, "fell back") || a.ServerFallbacks < 1 || a.LastFallback.IsZero() {
					return fmt.Errorf("ack status %+v, want a fallback reported", a)
				}
				return nil
			})

			st.Down(false)
			// The server switches back once the streamer acknowledges a
			// transaction at its binlog's end.
			testbed.Eventually(t, 30*time.Second, func() error {
				db.Exec(t, "INSERT INTO semi.t (v) VALUES ('after')")
				return rpoZero(true)()
			})
			waitDurable(t, s, binlogEnd(t, db), 30*time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			compareWithServer(t, fs, db)
		})
	}
}
