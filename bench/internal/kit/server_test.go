package kit

import (
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestServer starts each server of MYSQL_PITR_TEST_SERVERS as the
// benchmarks do, writes to it, and reads what they read: the binlog end it
// settles at (SHOW BINARY LOG STATUS on MySQL), its files, its transaction
// count, its GTID state, its CPU time, and that it is no replica.
func TestServer(t *testing.T) {
	for _, f := range testbed.Servers(t) {
		t.Run(f.String(), func(t *testing.T) {
			f.Binary(t, f.ServerProgram())
			s, err := StartServer(testbed.MariaDBOptions{Flavor: f})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			before, err := s.BinlogEnd(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			tx0, err := s.Transactions(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{"CREATE DATABASE kit", "CREATE TABLE kit.t (id INT PRIMARY KEY)", "INSERT INTO kit.t VALUES (1), (2)"} {
				if _, err := s.DB.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			end, err := s.WaitIdle(t.Context(), 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if !PosAtLeast(end, before) || end == before {
				t.Errorf("WaitIdle = %v; the binlog was at %v before the writes", end, before)
			}
			logs, err := s.BinaryLogs(t.Context())
			if err != nil || len(logs) == 0 || logs[len(logs)-1].Name != end.File || uint64(logs[len(logs)-1].Size) != end.Pos {
				t.Errorf("BinaryLogs = %v, %v; want the last to end at %v", logs, err, end)
			}
			if tx1, err := s.Transactions(t.Context()); err != nil || tx1-tx0 != 3 {
				t.Errorf("Transactions went from %d to %d (%v), want 3 more", tx0, tx1, err)
			}
			if s.CPU() <= 0 {
				t.Error("CPU is 0")
			}
			if set, err := s.GTIDState(t.Context()); err != nil || set == "" {
				t.Errorf("GTIDState = %q, %v; want the writes'", set, err)
			}
			if st, err := s.ReplicaStatus(t.Context()); err != nil || st != nil {
				t.Errorf("ReplicaStatus of a server that is no replica = %v, %v; want nil", st, err)
			}
		})
	}
}
