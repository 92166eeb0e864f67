package testbed

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// masterStatus returns SHOW MASTER STATUS's file and position.
func masterStatus(t *testing.T, db *sql.DB) (string, uint64) {
	t.Helper()
	var (
		file           string
		pos            uint64
		doDB, ignoreDB sql.NullString
	)
	if err := db.QueryRowContext(t.Context(), "SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignoreDB); err != nil {
		t.Fatalf("show master status: %v", err)
	}
	return file, pos
}

func countRows(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestMariaDBWritesBinlog(t *testing.T) {
	t.Parallel()
	m := NewMariaDB(t, MariaDBOptions{})
	t.Logf("mariadb %s started in %s", m.Version(), m.StartupTime())
	db := m.DB(t)

	file0, pos0 := masterStatus(t, db)
	m.Exec(t, "CREATE DATABASE shop")
	m.Exec(t, "CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(100))")
	for i := range 100 {
		m.Exec(t, "INSERT INTO shop.orders VALUES (?, ?)", i, fmt.Sprintf("order %d", i))
	}
	file1, pos1 := masterStatus(t, db)
	if file1 == file0 && pos1 <= pos0 {
		t.Errorf("SHOW MASTER STATUS did not advance: before %s:%d, after %s:%d", file0, pos0, file1, pos1)
	}
	if got, want := countRows(t, db, "shop.orders"), 100; got != want {
		t.Errorf("rows = %d, want %d", got, want)
	}

	files := m.BinlogFiles(t)
	if len(files) == 0 {
		t.Fatal("no binlog files")
	}
	if got, want := filepath.Base(files[len(files)-1]), file1; got != want {
		t.Errorf("last binlog file = %s, want %s (SHOW MASTER STATUS)", got, want)
	}
	for _, f := range files {
		if filepath.Dir(f) != m.BinlogDir() {
			t.Errorf("binlog %s is not in %s", f, m.BinlogDir())
		}
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < 4 {
			t.Errorf("binlog %s has %d bytes", f, fi.Size())
		}
	}
	data, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data[:4]), "\xfebin"; got != want {
		t.Errorf("binlog magic = %q, want %q", got, want)
	}

	// The setup of the pitr user must stay out of the binlog.
	var gtid string
	if err := db.QueryRowContext(t.Context(), "SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	if got, want := gtid, "0-1-102"; got != want {
		t.Errorf("gtid_binlog_pos = %q, want %q (2 DDL + 100 inserts)", got, want)
	}
}

func TestMariaDBRestartKeepsData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		halt func(*MariaDB) error
	}{
		{"stop", (*MariaDB).Stop},
		{"kill", (*MariaDB).Kill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := NewMariaDB(t, MariaDBOptions{})
			m.Exec(t, "CREATE DATABASE d")
			m.Exec(t, "CREATE TABLE d.t (id INT PRIMARY KEY)")
			m.Exec(t, "INSERT INTO d.t VALUES (1), (2), (3)")
			before := m.BinlogFiles(t)
			port := m.Port()

			if err := tt.halt(m); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if _, err := m.DB(t).ExecContext(t.Context(), "SELECT 1"); err == nil {
				t.Fatalf("server still answers after %s", tt.name)
			}
			if err := m.Start(); err != nil {
				t.Fatalf("start: %v", err)
			}

			if got, want := m.Port(), port; got != want {
				t.Errorf("port = %d, want %d", got, want)
			}
			if got, want := countRows(t, m.DB(t), "d.t"), 3; got != want {
				t.Errorf("rows after %s = %d, want %d", tt.name, got, want)
			}
			// A restart rotates to a new binlog file and keeps the old ones.
			after := m.BinlogFiles(t)
			if len(after) <= len(before) {
				t.Errorf("binlog files after restart = %v, want more than %v", after, before)
			}
			m.Exec(t, "INSERT INTO d.t VALUES (4)")
			if got, want := countRows(t, m.DB(t), "d.t"), 4; got != want {
				t.Errorf("rows after insert = %d, want %d", got, want)
			}
		})
	}
}

func TestMariaDBTwoServers(t *testing.T) {
	t.Parallel()
	a := NewMariaDB(t, MariaDBOptions{ServerID: 11})
	b := NewMariaDB(t, MariaDBOptions{ServerID: 12, BinlogChecksum: "NONE"})
	if a.Port() == b.Port() {
		t.Fatalf("both servers on port %d", a.Port())
	}
	for _, tt := range []struct {
		m            *MariaDB
		wantID       uint32
		wantChecksum string
	}{
		{a, 11, "CRC32"},
		{b, 12, "NONE"},
	} {
		var id uint32
		var checksum string
		if err := tt.m.DB(t).QueryRowContext(t.Context(), "SELECT @@server_id, @@binlog_checksum").Scan(&id, &checksum); err != nil {
			t.Fatal(err)
		}
		if id != tt.wantID || checksum != tt.wantChecksum {
			t.Errorf("port %d: server_id, binlog_checksum = %d, %s; want %d, %s", tt.m.Port(), id, checksum, tt.wantID, tt.wantChecksum)
		}
	}
	a.Exec(t, "CREATE DATABASE only_a")
	var n int
	if err := b.DB(t).QueryRowContext(t.Context(), "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'only_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("database created on one server is visible on the other")
	}
}

func TestMariaDBOptions(t *testing.T) {
	t.Parallel()
	t.Run("small binlogs rotate", func(t *testing.T) {
		t.Parallel()
		m := NewMariaDB(t, MariaDBOptions{MaxBinlogSize: 4096})
		m.Exec(t, "CREATE DATABASE d")
		m.Exec(t, "CREATE TABLE d.pad (id INT PRIMARY KEY AUTO_INCREMENT, b TEXT)")
		for range 10 {
			m.Exec(t, "INSERT INTO d.pad (b) VALUES (REPEAT('x', 2000))")
		}
		if got := len(m.BinlogFiles(t)); got < 3 {
			t.Errorf("binlog files = %d, want at least 3 with max_binlog_size=4096", got)
		}
	})
	t.Run("no binlog", func(t *testing.T) {
		t.Parallel()
		m := NewMariaDB(t, MariaDBOptions{NoBinlog: true})
		var logBin int
		if err := m.DB(t).QueryRowContext(t.Context(), "SELECT @@log_bin").Scan(&logBin); err != nil {
			t.Fatal(err)
		}
		if logBin != 0 {
			t.Errorf("log_bin = %d, want 0", logBin)
		}
	})
	t.Run("statement format", func(t *testing.T) {
		t.Parallel()
		m := NewMariaDB(t, MariaDBOptions{BinlogFormat: "STATEMENT", ExtraArgs: []string{"--binlog-row-image=MINIMAL"}})
		var format, image string
		if err := m.DB(t).QueryRowContext(t.Context(), "SELECT @@binlog_format, @@binlog_row_image").Scan(&format, &image); err != nil {
			t.Fatal(err)
		}
		if format != "STATEMENT" || image != "MINIMAL" {
			t.Errorf("binlog_format, binlog_row_image = %s, %s; want STATEMENT, MINIMAL", format, image)
		}
	})
}

func TestMariaDBPitrUser(t *testing.T) {
	t.Parallel()
	m := PackageMariaDB(t)
	db, err := sql.Open("mysql", m.PitrDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// What a binlog streamer, a logical snapshot and mariadb-backup run as this user.
	for _, q := range []string{"SHOW MASTER STATUS", "SHOW BINARY LOGS", "FLUSH TABLES WITH READ LOCK", "UNLOCK TABLES", "SELECT COUNT(*) FROM mysql.user"} {
		rows, err := db.QueryContext(t.Context(), q)
		if err != nil {
			t.Errorf("%s as %s: %v", q, PitrUser, err)
			continue
		}
		rows.Close()
	}
	// Not ALL: writing data is the restore's job, done as root.
	_, err = db.ExecContext(t.Context(), "CREATE DATABASE pitr_must_not_create")
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1044 {
		t.Errorf("CREATE DATABASE as %s: err = %v, want access denied (1044)", PitrUser, err)
	}

	wrong, err := sql.Open("mysql", m.DSNFor(PitrUser, "wrong"))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := wrong.PingContext(t.Context()); err == nil {
		t.Error("pitr user accepted a wrong password")
	}
}

func TestMariaDBSetPitrPassword(t *testing.T) {
	m := NewMariaDB(t, MariaDBOptions{})
	old := m.PitrPassword()
	m.SetPitrPassword(t, "canary-Set_pw-0123")
	if got := m.PitrPassword(); got != "canary-Set_pw-0123" {
		t.Fatalf("PitrPassword() = %q after SetPitrPassword", got)
	}
	for _, c := range []struct {
		pass string
		ok   bool
	}{{"canary-Set_pw-0123", true}, {old, false}} {
		db, err := sql.Open("mysql", m.DSNFor(PitrUser, c.pass))
		if err != nil {
			t.Fatal(err)
		}
		err = db.PingContext(t.Context())
		db.Close()
		if (err == nil) != c.ok {
			t.Errorf("connect with the password %s: err = %v", map[bool]string{true: "set", false: "replaced"}[c.ok], err)
		}
	}
	// The change stays out of the binlog, so no archive or replay holds it.
	for _, f := range m.BinlogFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "canary-Set_pw") {
			t.Errorf("%s holds the password", f)
		}
	}
	var logBin int
	if err := m.DB(t).QueryRowContext(t.Context(), "SELECT @@session.sql_log_bin").Scan(&logBin); err != nil || logBin != 1 {
		t.Errorf("a pooled connection has sql_log_bin = %d (%v), want 1", logBin, err)
	}
}

func TestPackageMariaDB(t *testing.T) {
	t.Parallel()
	a := PackageMariaDB(t)
	b := PackageMariaDB(t)
	if a != b {
		t.Fatal("PackageMariaDB returned two servers")
	}
	if got, want := a.Options().ServerID, uint32(100); got != want {
		t.Errorf("server_id = %d, want %d from TestMain's options", got, want)
	}
	if got, want := a.DSN(), fmt.Sprintf("root@tcp(127.0.0.1:%d)/", a.Port()); got != want {
		t.Errorf("DSN = %q, want %q", got, want)
	}
	if _, err := os.Stat(a.Socket()); err != nil {
		t.Errorf("socket: %v", err)
	}
}

// BenchmarkStartMariaDB measures what every test using NewMariaDB pays:
// install, start, bootstrap and, separately, a restart after a clean stop.
func BenchmarkStartMariaDB(b *testing.B) {
	Binary(b, "mariadbd", MariaDBInstall)
	b.Run("new", func(b *testing.B) {
		for b.Loop() {
			m, err := StartMariaDB(MariaDBOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := m.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("restart", func(b *testing.B) {
		m := NewMariaDB(b, MariaDBOptions{})
		for b.Loop() {
			if err := m.Stop(); err != nil {
				b.Fatal(err)
			}
			if err := m.Start(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
