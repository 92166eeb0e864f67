package binlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestZZExplore(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	for _, q := range []string{
		"CREATE DATABASE x", "CREATE TABLE x.t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB",
		"CREATE TABLE x.m (id INT PRIMARY KEY) ENGINE=MyISAM",
		"XA START 'a'", "INSERT INTO x.t VALUES (1,'a')", "XA END 'a'", "XA COMMIT 'a' ONE PHASE",
		"XA START 'b'", "INSERT INTO x.t VALUES (2,'a')", "XA END 'b'", "XA PREPARE 'b'", "XA COMMIT 'b'",
		"XA START 'c'", "INSERT INTO x.t VALUES (3,'a')", "XA END 'c'", "XA PREPARE 'c'", "XA ROLLBACK 'c'",
		"SET GLOBAL log_bin_compress=ON",
	} {
		db.Exec(t, q)
	}
	c := db.DB(t)
	conn, _ := c.Conn(t.Context())
	for _, q := range []string{
		"CREATE TABLE x.long_table_name_for_compression_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx (id INT PRIMARY KEY, a INT, b INT, c INT, d INT, e INT, f INT, g INT, h INT, i INT, j INT, k INT, l INT, m INT, n INT, o INT, p INT, q INT)",
		"INSERT INTO x.t VALUES (10, REPEAT('z', 300))",
		"BEGIN", "INSERT INTO x.t VALUES (11,'a')", "SAVEPOINT sp", "INSERT INTO x.m VALUES (1)", "ROLLBACK TO sp", "COMMIT",
		"BEGIN", "INSERT INTO x.m VALUES (2)", "INSERT INTO x.t VALUES (12,'a')", "ROLLBACK",
	} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Logf("%s: %v", q, err)
		}
	}
	db.Exec(t, "FLUSH BINARY LOGS")
	files := db.BinlogFiles(t)
	b, _ := os.ReadFile(files[0])
	os.WriteFile("/tmp/explore.binlog", b, 0o644)
	sc := NewScanner(bytes.NewReader(b), 0)
	var tr Tracker
	for {
		ev, pos, err := sc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h, _ := ParseHeader(ev)
		extra := ""
		if h.Type == QueryEvent || h.Type == MariaDBQueryCompressed {
			f, _ := tr.Format()
			q, _ := f.queryText(ev)
			extra = fmt.Sprintf("%q", q)
		}
		if h.Type == MariaDBGTIDEvent {
			extra = fmt.Sprintf("flags %x body %x", ev[HeaderSize+12], ev[HeaderSize:len(ev)-4])
		}
		tx, err := tr.Feed(ev, pos)
		open, _ := tr.Open()
		t.Logf("%6d type %3d size %4d open=%v tx=%+v err=%v %s", pos, h.Type, h.Size, open, tx, err, extra)
	}
}
