package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// promote makes replica the primary, as an operator's failover does.
func promote(t *testing.T, replica *testbed.MariaDB) {
	t.Helper()
	if replica.Flavor().MySQL() {
		replica.Exec(t, "STOP REPLICA")
	} else {
		replica.Exec(t, "STOP SLAVE")
	}
	replica.Exec(t, "SET GLOBAL read_only = OFF")
}

// writeUntilFailover inserts rows into app.t on whichever of the servers
// takes them until stop is closed; it returns how many it committed.
func writeUntilFailover(conns []*sql.DB, stop <-chan struct{}) int {
	n := 0
	for {
		select {
		case <-stop:
			return n
		default:
		}
		for _, db := range conns {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := db.ExecContext(ctx, "INSERT INTO app.t (v) VALUES ('x')")
			cancel()
			if err == nil {
				n++
				break
			}
		}
	}
}

// TestStreamerFollowsFailover archives a source with a GTID replica, under
// writes. The source is killed and the replica promoted: the streamer
// finds the new primary within 5 s and goes on from it on a timeline of
// reason failover, which names the archived GTIDs the new primary holds;
// so it does when the old primary is not killed but made read-only. Killed
// in the middle of the writes, the source may take transactions the
// archive has and the replica never received: then it is that divergence.
// Each timeline is byte-identical to its server's binlog. When the replica
// lacks the source's last transactions (its replication stopped before
// them), the failover is recorded as a divergence naming them.
func TestStreamerFollowsFailover(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		for _, kind := range []string{"continued", "diverged", "demoted", "mid-load"} {
			diverge, midLoad := kind == "diverged", kind == "mid-load"
			t.Run(f.String()+"/"+kind, func(t *testing.T) {
				a := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 1})
				b := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 2})
				a.Exec(t, "CREATE DATABASE app")
				a.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(10))")
				testbed.ReplicateFrom(t, b, a)
				st, err := file.New(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				s := newStreamer(t, a, st, t.TempDir())
				s.Follow = []*Source{newSource(t, b)}
				s.ReadTimeout = 3 * time.Second
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- s.Run(ctx) }()
				testbed.Eventually(t, 30*time.Second, func() error {
					if !s.Status().Connected {
						return fmt.Errorf("not streaming yet")
					}
					return nil
				})

				stop := make(chan struct{})
				var wg sync.WaitGroup
				var written int
				wg.Go(func() { written = writeUntilFailover([]*sql.DB{a.DB(t)}, stop) })
				testbed.Eventually(t, 30*time.Second, func() error {
					if n := s.Status().Received.Pos; n < 20000 {
						return fmt.Errorf("received up to %d", n)
					}
					return nil
				})
				if !midLoad {
					close(stop)
					wg.Wait()
					// The replica has what the source committed; an
					// operator promotes a replica that has caught up.
					testbed.WaitReplicated(t, b, a)
				}
				if diverge {
					// The replica stops short: the source's next
					// transactions reach only the archive.
					if f.MySQL() {
						b.Exec(t, "STOP REPLICA")
					} else {
						b.Exec(t, "STOP SLAVE")
					}
					end := binlogEnd(t, a)
					a.Exec(t, "INSERT INTO app.t (v) VALUES ('lost')")
					waitDurable(t, s, end, 30*time.Second)
					waitDurable(t, s, binlogEnd(t, a), 30*time.Second)
				}
				if !diverge {
					// Files of the replica's that hold only archived
					// transactions: the continuing timeline starts after
					// them.
					b.Exec(t, "FLUSH BINARY LOGS")
					b.Exec(t, "FLUSH BINARY LOGS")
				}
				newest := binlogEnd(t, b).File
				if kind == "demoted" {
					// The old primary stays up, read-only, as operators
					// demote one they can reach.
					a.Exec(t, "SET GLOBAL read_only = ON")
				} else if err := a.Kill(); err != nil {
					t.Fatal(err)
				}
				promote(t, b)
				promoted := time.Now()
				if midLoad {
					close(stop)
					wg.Wait()
				}
				stop = make(chan struct{})
				wg.Go(func() { written += writeUntilFailover([]*sql.DB{b.DB(t)}, stop) })
				testbed.Eventually(t, 30*time.Second, func() error {
					if st := s.Status(); !st.Connected || st.Timeline < 2 {
						return fmt.Errorf("not yet streaming the new primary: %+v", st)
					}
					return nil
				})
				if took := time.Since(promoted); took > 5*time.Second {
					t.Errorf("the streamer went on from the new primary %s after its promotion, want within 5 s", took.Round(time.Millisecond))
				}
				t.Logf("streaming the new primary %s after its promotion", time.Since(promoted).Round(time.Millisecond))
				testbed.Eventually(t, 30*time.Second, func() error {
					if st := s.Status(); st.Received.Pos < 1000 {
						return fmt.Errorf("received up to %s", st.Received)
					}
					return nil
				})
				close(stop)
				wg.Wait()
				waitDurable(t, s, binlogEnd(t, b), 30*time.Second)
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				t.Logf("%d rows written", written)

				arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(arch.Timelines) != 2 {
					t.Fatalf("%d timelines, want 2", len(arch.Timelines))
				}
				second := arch.Timelines[1]
				switch {
				case midLoad && second.Reason == catalog.ReasonDiverged:
					// The source died with transactions the archive has and
					// its replica had not received yet: a real divergence,
					// named as one.
					if !strings.Contains(second.Detail, "lacks archived transactions") {
						t.Errorf("timeline 2: diverged (%s); want it to name what the new primary lacks", second.Detail)
					}
				case !diverge && (second.Reason != catalog.ReasonFailover || len(second.Continues) == 0):
					t.Errorf("timeline 2: reason %s, continues %v; want failover naming the GTIDs it continues (%s)", second.Reason, second.Continues, second.Detail)
				case diverge && (second.Reason != catalog.ReasonDiverged || !strings.Contains(second.Detail, "lacks archived transactions")):
					t.Errorf("timeline 2: reason %s (%s); want diverged, naming what the new primary lacks", second.Reason, second.Detail)
				}
				t.Logf("timeline 2: %s: %s", second.Reason, second.Detail)
				if second.Reason == catalog.ReasonFailover && second.Start.File != newest {
					t.Errorf("timeline 2 starts at %s, want the new primary's file %s: the ones before it hold only archived transactions", second.Start, newest)
				}
				for i, db := range []*testbed.MariaDB{a, b} {
					tl := arch.Timelines[i]
					for _, seg := range tl.Segments {
						if seg.ServerID != uint32(i+1) {
							t.Fatalf("timeline %s: segment %s records server_id %d, want %d", tl.ID, seg.Ref().DataKey(), seg.ServerID, i+1)
						}
					}
					compareTimeline(t, st, tl, db)
				}
			})
		}
	}
}
