package benchkit

import (
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestServer starts a server as the benchmarks do, writes to it, and reads
// its CPU time and the binlog end it settles at.
func TestServer(t *testing.T) {
	testbed.Binary(t, "mariadbd", testbed.MariaDBInstall)
	testbed.Binary(t, "mariadb-install-db", testbed.MariaDBInstall)
	s, err := StartServer(testbed.MariaDBOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	before, err := MasterStatus(t.Context(), s.DB)
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
	now, err := MasterStatus(t.Context(), s.DB)
	if err != nil {
		t.Fatal(err)
	}
	if end != now || !PosAtLeast(end, before) || end == before {
		t.Errorf("WaitIdle = %v; the binlog went from %v to %v", end, before, now)
	}
	if cpu := s.CPU(); cpu <= 0 {
		t.Errorf("CPU = %v, want the server's CPU time so far", cpu)
	}
}
