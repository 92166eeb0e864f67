package snapshot

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// sequenceRow is SELECT * of a sequence: its whole state.
func sequenceRow(t *testing.T, db *sql.DB, seq string) string {
	t.Helper()
	var next, minv, maxv, start, inc, cache, cycle, round string
	err := db.QueryRowContext(t.Context(), "SELECT * FROM "+seq).Scan(&next, &minv, &maxv, &start, &inc, &cache, &cycle, &round)
	if err != nil {
		t.Fatalf("read sequence %s: %v", seq, err)
	}
	return fmt.Sprintf("next_not_cached_value=%s minimum_value=%s maximum_value=%s start_value=%s increment=%s cache_size=%s cycle_option=%s cycle_count=%s",
		next, minv, maxv, start, inc, cache, cycle, round)
}

// nextValues calls NEXTVAL n times, recording each value or error.
func nextValues(t *testing.T, db *sql.DB, seq string, n int) []string {
	t.Helper()
	var out []string
	for range n {
		var v string
		if err := db.QueryRowContext(t.Context(), "SELECT NEXTVAL("+seq+")").Scan(&v); err != nil {
			v = "error: " + err.Error()
		}
		out = append(out, v)
	}
	return out
}

// TestLogicalSequences snapshots sequences of every shape, one the default
// of columns in another schema, and wants each restored with its
// definition and state: the restored server's NEXTVAL returns what the
// source's returns next after the snapshot.
func TestLogicalSequences(t *testing.T) {
	t.Parallel()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, src,
		"CREATE DATABASE app",
		"CREATE DATABASE `z ids`",
		"CREATE SEQUENCE app.s1",
		"CREATE TABLE app.orders (id BIGINT NOT NULL DEFAULT NEXTVAL(app.s1) PRIMARY KEY, item VARCHAR(20))",
		"INSERT INTO app.orders (item) VALUES ('a'), ('b'), ('c')",
		"CREATE SEQUENCE app.s2 NOCACHE",
		"SELECT NEXTVAL(app.s2), NEXTVAL(app.s2), NEXTVAL(app.s2), NEXTVAL(app.s2), NEXTVAL(app.s2)",
		"CREATE SEQUENCE app.s3 START WITH 100 MINVALUE 10 MAXVALUE 200 INCREMENT BY 7 CACHE 5 CYCLE",
		// 15 values up to 198, then round 1 from 10.
		"SELECT NEXTVAL(app.s3) FROM app.seq_1_to_20",
		// A sequence in a schema that sorts after the table that uses it.
		"CREATE SEQUENCE `z ids`.`line-no` INCREMENT BY -2 MINVALUE -1000 MAXVALUE -1 START WITH -1 CACHE 3",
		"CREATE TABLE app.lines (n BIGINT NOT NULL DEFAULT NEXTVAL(`z ids`.`line-no`) PRIMARY KEY, order_id BIGINT)",
		"INSERT INTO app.lines (order_id) VALUES (1), (1), (2)",
		// Moved below its start, which SETVAL could not do.
		"CREATE SEQUENCE app.s5 START WITH 100 MINVALUE 10 CACHE 10",
		"ALTER SEQUENCE app.s5 RESTART 50",
		// Run out.
		"CREATE SEQUENCE app.s6 MAXVALUE 3 NOCACHE",
		"SELECT NEXTVAL(app.s6), NEXTVAL(app.s6), NEXTVAL(app.s6)",
		"CREATE SEQUENCE app.s7 INCREMENT BY 10 ENGINE=Aria",
		"SELECT NEXTVAL(app.s7)",
	)
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := TakeLogical(t.Context(), LogicalOptions{Source: logicalConfig(t, src.PitrDSN()), Storage: st, Logger: logicalLogger(t), Threads: 2, SkipUsers: true})
	if err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	if err := LoadLogical(t.Context(), st, m, logicalConfig(t, dst.DSN()), LoadOptions{Threads: 2, Logger: logicalLogger(t)}); err != nil {
		t.Fatalf("LoadLogical: %v", err)
	}
	logicalCompareChecksums(t, src.DB(t), dst.DB(t))
	for _, seq := range []string{"app.s1", "app.s2", "app.s3", "`z ids`.`line-no`", "app.s5", "app.s6", "app.s7"} {
		t.Run(seq, func(t *testing.T) {
			q := "SHOW CREATE SEQUENCE " + seq
			if got, want := logicalShow(t, dst.DB(t), q, "create table"), logicalShow(t, src.DB(t), q, "create table"); got != want {
				t.Errorf("%s:\n got %s\nwant %s", q, got, want)
			}
			if got, want := sequenceRow(t, dst.DB(t), seq), sequenceRow(t, src.DB(t), seq); got != want {
				t.Errorf("state:\n got %s\nwant %s", got, want)
			}
			// Nothing has called NEXTVAL on the source since the snapshot.
			got, want := nextValues(t, dst.DB(t), seq, 3), nextValues(t, src.DB(t), seq, 3)
			if strings.Join(got, ", ") != strings.Join(want, ", ") {
				t.Errorf("NEXTVAL: got %q, want %q", got, want)
			}
			t.Logf("NEXTVAL after the snapshot, three times: %q", got)
		})
	}
	// A row inserted by default takes the same key on both.
	for _, db := range []*sql.DB{src.DB(t), dst.DB(t)} {
		if _, err := db.ExecContext(t.Context(), "INSERT INTO app.orders (item) VALUES ('after')"); err != nil {
			t.Fatal(err)
		}
	}
	logicalCompareChecksums(t, src.DB(t), dst.DB(t))
}
