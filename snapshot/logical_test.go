package snapshot

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// logicalConfig is the connection config of a DSN.
func logicalConfig(t *testing.T, dsn string) *mysql.Config {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func logicalLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// logicalExec runs statements as root, failing the test on error.
func logicalExec(t *testing.T, m *testbed.MariaDB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		m.Exec(t, s)
	}
}

// logicalTables lists the base tables of the user schemas.
func logicalTables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT CONCAT('`', REPLACE(TABLE_SCHEMA, '`', '``'), '`.`', REPLACE(TABLE_NAME, '`', '``'), '`') "+
		"FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN "+
		"('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY TABLE_SCHEMA, TABLE_NAME")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// logicalChecksums is CHECKSUM TABLE of every user table.
func logicalChecksums(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tbl := range logicalTables(t, db) {
		var name string
		var sum sql.NullString
		if err := db.QueryRowContext(t.Context(), "CHECKSUM TABLE "+tbl).Scan(&name, &sum); err != nil {
			t.Fatalf("checksum table %s: %v", tbl, err)
		}
		out[tbl] = sum.String
	}
	return out
}

// logicalCompareChecksums fails the test unless both servers hold the same
// tables with the same checksums.
func logicalCompareChecksums(t *testing.T, a, b *sql.DB) {
	t.Helper()
	want, got := logicalChecksums(t, a), logicalChecksums(t, b)
	if len(want) == 0 {
		t.Fatal("source has no tables")
	}
	for tbl, w := range want {
		if g, ok := got[tbl]; !ok {
			t.Errorf("table %s missing from the target", tbl)
		} else if g != w {
			t.Errorf("CHECKSUM TABLE %s = %s, want %s", tbl, g, w)
		}
	}
	for tbl := range got {
		if _, ok := want[tbl]; !ok {
			t.Errorf("table %s on the target only", tbl)
		}
	}
}

// logicalShow returns column col of a SHOW statement's single row.
func logicalShow(t *testing.T, db *sql.DB, q, col string) string {
	t.Helper()
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := showRow(t.Context(), c, q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	v, ok := m[col]
	if !ok {
		t.Fatalf("%s: no column %q in %v", q, col, m)
	}
	return v
}

func logicalGrants(t *testing.T, db *sql.DB, account string) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SHOW GRANTS FOR "+account)
	if err != nil {
		t.Fatalf("show grants for %s: %v", account, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

// logicalRoundTripSchema creates every type, key shape and object kind the
// snapshot must carry.
var logicalRoundTripSchema = []string{
	"CREATE DATABASE rt CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
	"CREATE DATABASE `we/ird db` CHARACTER SET latin1 COLLATE latin1_swedish_ci",
	`CREATE TABLE rt.types (
		id INT AUTO_INCREMENT PRIMARY KEY,
		n INT NULL,
		big BIGINT UNSIGNED,
		neg BIGINT,
		dec1 DECIMAL(30,10),
		dbl DOUBLE,
		flt FLOAT,
		dt DATETIME(6),
		ts TIMESTAMP(6) NULL DEFAULT NULL,
		d DATE,
		tm TIME(3),
		yr YEAR,
		b BIT(13),
		b1 BIT(1),
		e ENUM('a','b','c'),
		s SET('x','y','z'),
		j JSON,
		vb VARBINARY(300),
		bl BLOB,
		txt TEXT,
		lt VARCHAR(50) CHARACTER SET latin1,
		g GEOMETRY NULL,
		p POINT REF_SYSTEM_ID=4326 NULL,
		gen INT AS (n * 2) VIRTUAL,
		gens VARCHAR(300) AS (CONCAT(txt, '!')) STORED
	) ENGINE=InnoDB`,
	`INSERT INTO rt.types (n, big, neg, dec1, dbl, flt, dt, ts, d, tm, yr, b, b1, e, s, j, vb, bl, txt, lt, g, p) VALUES
		(1, 18446744073709551615, -9223372036854775808, 12345678901234567890.0123456789, 0.1, 3.14159, '2024-02-29 23:59:59.123456',
		 '2024-03-01 01:02:03.000001', '2024-01-01', '-838:59:59.999', 2155, b'1010101010101', b'1', 'b', 'x,z',
		 '{"a": [1, 2.5, "ü"], "b": null}', 0x00, 0x00, 'tab\there\nnew\\back\rret\0nul', 'café',
		 ST_GeomFromText('LINESTRING(0 0, 1 1.5, -2 3)'), ST_GeomFromText('POINT(1.5 -2.25)', 4326)),
		(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(0, 0, 0, -0.0000000001, -1.7976931348623157e308, -3.4e38, '1000-01-01 00:00:00', '1970-01-01 00:00:01', '9999-12-31', '00:00:00', 1901,
		 b'0', b'0', 'a', '', '[]', '', '', '', '', ST_GeomFromText('POLYGON((0 0, 4 0, 4 4, 0 0))'), ST_GeomFromText('POINT(0 0)', 4326)),
		(-5, 1, 1, 1, 5e-324, 1.17549e-38, '2038-01-19 03:14:07.999999', '2038-01-19 03:14:07.999999', '2000-02-29', '838:59:59', 2000,
		 b'1111111111111', b'1', 'c', 'x,y,z', '"\\\\N"', 'NULL', '\\N', '😀 emoji ünïcode 𝄞', 'NULL',
		 ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1), LINESTRING(0 0, 1 1))'), NULL)`,
	// Every byte value, in a VARBINARY and a BLOB.
	`UPDATE rt.types SET vb = (SELECT GROUP_CONCAT(CHAR(seq) ORDER BY seq SEPARATOR '') FROM rt.seq_0_to_255),
		bl = (SELECT GROUP_CONCAT(CHAR(255 - seq) ORDER BY seq SEPARATOR '') FROM rt.seq_0_to_255) WHERE id = 1`,
	// An AUTO_INCREMENT counter above the largest id.
	"INSERT INTO rt.types (n) VALUES (100)",
	"DELETE FROM rt.types WHERE n = 100",
	"CREATE TABLE rt.nokey (a INT, b VARCHAR(10)) ENGINE=InnoDB",
	"INSERT INTO rt.nokey VALUES (1, 'x'), (1, 'x'), (NULL, NULL), (2, '')",
	"CREATE TABLE rt.onecol (v VARCHAR(10) NULL DEFAULT 'dflt') ENGINE=InnoDB",
	"INSERT INTO rt.onecol VALUES (''), (NULL), ('a')",
	`CREATE TABLE rt.parts (id INT NOT NULL, created DATE NOT NULL, v VARCHAR(20), PRIMARY KEY (id, created))
		PARTITION BY RANGE (YEAR(created)) (PARTITION p2023 VALUES LESS THAN (2024), PARTITION p2024 VALUES LESS THAN (2025),
		PARTITION pmax VALUES LESS THAN MAXVALUE)`,
	"INSERT INTO rt.parts VALUES (1, '2023-05-01', 'a'), (2, '2024-05-01', 'b'), (3, '2030-01-01', 'c')",
	"CREATE TABLE rt.child (id INT PRIMARY KEY, parent INT, FOREIGN KEY (parent) REFERENCES rt.types (id))",
	"INSERT INTO rt.child VALUES (1, 1), (2, 3)",
	// The load turns statistics recalculation off while a table loads and
	// gives each table its own setting back.
	"CREATE TABLE rt.stats_on (id INT PRIMARY KEY) ENGINE=InnoDB STATS_AUTO_RECALC=1",
	"CREATE TABLE rt.stats_off (id INT PRIMARY KEY) ENGINE=InnoDB STATS_AUTO_RECALC=0 STATS_SAMPLE_PAGES=10",
	"INSERT INTO rt.stats_on SELECT seq FROM rt.seq_1_to_3000",
	"INSERT INTO rt.stats_off SELECT seq FROM rt.seq_1_to_3000",
	"CREATE TABLE rt.aria (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=Aria",
	"INSERT INTO rt.aria VALUES (1, 'a'), (2, 'b')",
	"CREATE TABLE `we/ird db`.`ta.ble` (`col``q` INT PRIMARY KEY, t VARCHAR(20)) CHARACTER SET latin1",
	"INSERT INTO `we/ird db`.`ta.ble` VALUES (1, 'déjà vu')",
	// a_view depends on b_view, which sorts after it.
	"CREATE VIEW rt.b_view AS SELECT id, n, txt FROM rt.types WHERE n IS NOT NULL",
	"CREATE SQL SECURITY INVOKER VIEW rt.a_view AS SELECT id, n * 2 AS n2 FROM rt.b_view",
	"CREATE TRIGGER rt.types_bi BEFORE INSERT ON rt.types FOR EACH ROW SET NEW.txt = COALESCE(NEW.txt, 'trigger')",
	"CREATE TRIGGER rt.types_bi2 BEFORE INSERT ON rt.types FOR EACH ROW FOLLOWS types_bi SET NEW.n = COALESCE(NEW.n, -1)",
	"CREATE PROCEDURE rt.bump(IN k INT) MODIFIES SQL DATA BEGIN UPDATE rt.types SET n = n + 1 WHERE id = k; SELECT 'ü'; END",
	"CREATE FUNCTION rt.twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
	"CREATE EVENT rt.nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM rt.nokey WHERE a IS NULL",
	"CREATE ROLE reader",
	"GRANT SELECT ON rt.* TO reader",
	"CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret-1'",
	"GRANT SELECT, INSERT, UPDATE ON rt.* TO 'app'@'%'",
	"GRANT EXECUTE ON PROCEDURE rt.bump TO 'app'@'%'",
	"GRANT reader TO 'app'@'%'",
	"SET DEFAULT ROLE reader FOR 'app'@'%'",
	"CREATE USER 'ro'@'10.0.0.%' IDENTIFIED BY 'ro-secret' WITH MAX_QUERIES_PER_HOUR 100",
	"GRANT SELECT (id, n) ON rt.types TO 'ro'@'10.0.0.%'",
	// Every account has these (MariaDB 10.11+).
	"GRANT SELECT ON rt.nokey TO PUBLIC",
	"GRANT EXECUTE ON FUNCTION rt.twice TO PUBLIC",
}

// logicalOracleSchema creates the objects that exist only under
// sql_mode=ORACLE: a package and its body.
var logicalOracleSchema = []string{
	"SET SESSION sql_mode = 'ORACLE'",
	`CREATE PACKAGE rt.pk AS
		FUNCTION total RETURN INT;
		PROCEDURE touch(k INT);
	END`,
	`CREATE PACKAGE BODY rt.pk AS
		FUNCTION total RETURN INT AS BEGIN RETURN (SELECT COUNT(*) FROM rt.types); END;
		PROCEDURE touch(k INT) AS BEGIN UPDATE rt.types SET n = n + 1 WHERE id = k; END;
	END`,
	"SET SESSION sql_mode = DEFAULT",
}

// TestLogicalRoundTrip dumps a server holding every type and object kind
// into file storage, loads it into a fresh server, and compares table
// checksums, CREATE statements and grants.
func TestLogicalRoundTrip(t *testing.T) {
	t.Parallel()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, src, logicalRoundTripSchema...)
	oracle, err := src.DB(t).Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range logicalOracleSchema {
		if _, err := oracle.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	oracle.Close()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var last Progress
	start := time.Now()
	m, err := TakeLogical(t.Context(), LogicalOptions{
		Source:   logicalConfig(t, src.PitrDSN()),
		Storage:  st,
		Logger:   logicalLogger(t),
		Threads:  3,
		Progress: func(p Progress) { last = p },
	})
	if err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	t.Logf("dump: %s, writes blocked %s, %d objects, %d bytes (%d stored)", time.Since(start), m.WritesBlocked,
		len(m.Objects), m.Bytes, m.StoredBytes)
	if last.TablesDone != last.TablesTotal || last.ChunksDone != last.ChunksTotal || last.TablesTotal != 9 {
		t.Errorf("last progress = %+v, want every one of 9 tables done", last)
	}
	if m.Method != catalog.MethodLogical || m.Flavor != "mariadb" || m.ServerID != testbed.DefaultServerID || m.Binlog.Pos < 4 {
		t.Errorf("manifest = %+v", m)
	}
	rows := map[string]int64{}
	for _, ti := range m.Tables {
		rows[ti.Schema+"."+ti.Name] = ti.Rows
	}
	if rows["rt.types"] != 4 || rows["rt.nokey"] != 4 || rows["we/ird db.ta.ble"] != 1 {
		t.Errorf("manifest row counts = %v", rows)
	}
	// The recorded digests are what DigestTables computes over the source,
	// and over the target once loaded (checked below).
	srcDigests, err := DigestTables(t.Context(), logicalConfig(t, src.DSN()), m.Tables)
	if err != nil {
		t.Fatalf("DigestTables on the source: %v", err)
	}
	for i, ti := range m.Tables {
		if !strings.HasPrefix(ti.Digest, DigestAlgorithm+":") || ti.RowsEstimated {
			t.Errorf("manifest table %s.%s = %+v, want a digest and an exact count", ti.Schema, ti.Name, ti)
		}
		if srcDigests[i] != ti {
			t.Errorf("source %s.%s digests to %+v, the manifest records %+v", ti.Schema, ti.Name, srcDigests[i], ti)
		}
	}
	if _, err := DigestTables(t.Context(), logicalConfig(t, src.DSN()), []catalog.TableInfo{{Schema: "rt", Name: "no_such"}}); !errors.Is(err, ErrTableMissing) {
		t.Errorf("DigestTables of a missing table = %v, want ErrTableMissing", err)
	}
	snaps, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil || len(snaps.Complete) != 1 || len(snaps.Partial) != 0 {
		t.Fatalf("LoadSnapshots = %+v, %v; want one complete snapshot", snaps, err)
	}

	start = time.Now()
	// Statistics are paused for every table here, not only large ones.
	err = LoadLogical(t.Context(), st, snaps.Complete[0], logicalConfig(t, dst.DSN()), LoadOptions{Threads: 3, Logger: logicalLogger(t), pauseStatsFrom: 1})
	if err != nil {
		t.Fatalf("LoadLogical: %v", err)
	}
	t.Logf("load: %s", time.Since(start))

	a, b := src.DB(t), dst.DB(t)
	logicalCompareChecksums(t, a, b)
	dstDigests, err := DigestTables(t.Context(), logicalConfig(t, dst.DSN()), m.Tables)
	if err != nil {
		t.Fatalf("DigestTables on the target: %v", err)
	}
	for i, ti := range m.Tables {
		if dstDigests[i] != ti {
			t.Errorf("loaded %s.%s digests to %+v, the manifest records %+v", ti.Schema, ti.Name, dstDigests[i], ti)
		}
	}
	for _, tbl := range logicalTables(t, a) {
		q := "SHOW CREATE TABLE " + tbl
		if got, want := logicalShow(t, b, q, "create table"), logicalShow(t, a, q, "create table"); got != want {
			t.Errorf("%s:\n got %s\nwant %s", q, got, want)
		}
	}
	// Statistics were calculated once the tables had loaded, even where
	// they are never recalculated automatically.
	for _, tbl := range []string{"types", "stats_on", "stats_off", "nokey"} {
		var n int64
		if err := b.QueryRowContext(t.Context(), "SELECT n_rows FROM mysql.innodb_table_stats WHERE database_name = 'rt' AND table_name = ?", tbl).Scan(&n); err != nil {
			t.Fatalf("statistics of rt.%s: %v", tbl, err)
		}
		var rows int64
		if err := b.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM rt."+tbl).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if n != rows {
			t.Errorf("rt.%s: statistics say %d rows, it holds %d", tbl, n, rows)
		}
	}
	shows := []struct{ q, col string }{
		{"SHOW CREATE DATABASE rt", "create database"},
		{"SHOW CREATE DATABASE `we/ird db`", "create database"},
		{"SHOW CREATE VIEW rt.a_view", "create view"},
		{"SHOW CREATE VIEW rt.b_view", "create view"},
		{"SHOW CREATE TRIGGER rt.types_bi", "sql original statement"},
		{"SHOW CREATE TRIGGER rt.types_bi2", "sql original statement"},
		{"SHOW CREATE PROCEDURE rt.bump", "create procedure"},
		{"SHOW CREATE FUNCTION rt.twice", "create function"},
		{"SHOW CREATE EVENT rt.nightly", "create event"},
		{"SHOW CREATE PACKAGE rt.pk", "create package"},
		{"SHOW CREATE PACKAGE BODY rt.pk", "create package body"},
		{"SHOW CREATE USER 'app'@'%'", "create user for app@%"},
		{"SHOW CREATE USER 'ro'@'10.0.0.%'", "create user for ro@10.0.0.%"},
	}
	for _, s := range shows {
		if got, want := logicalShow(t, b, s.q, s.col), logicalShow(t, a, s.q, s.col); got != want {
			t.Errorf("%s:\n got %s\nwant %s", s.q, got, want)
		}
	}
	for _, acct := range []string{"'app'@'%'", "'ro'@'10.0.0.%'", "reader", "PUBLIC"} {
		if got, want := logicalGrants(t, b, acct), logicalGrants(t, a, acct); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("SHOW GRANTS FOR %s:\n got %q\nwant %q", acct, got, want)
		}
	}
	// The snapshot's own account is left out: the target keeps its own.
	if got, want := logicalGrants(t, b, "'pitr'@'%'"), logicalGrants(t, a, "'pitr'@'%'"); len(got) == 0 || got[0] == want[0] {
		t.Errorf("the target's pitr account was replaced by the source's: %q", got)
	}
	// Byte-exact spot checks that a checksum could in principle miss.
	var same int
	q := "SELECT COUNT(*) FROM rt.types WHERE id = 1 AND LENGTH(vb) = 256 AND LENGTH(bl) = 256"
	if err := b.QueryRowContext(t.Context(), q).Scan(&same); err != nil || same != 1 {
		t.Errorf("%s = %d, %v; want 1", q, same, err)
	}
	q = "SELECT COUNT(*) FROM rt.onecol WHERE v = ''"
	if err := b.QueryRowContext(t.Context(), q).Scan(&same); err != nil || same != 1 {
		t.Errorf("%s = %d, %v; want 1", q, same, err)
	}
	var srid int
	q = "SELECT ST_SRID(p) FROM rt.types WHERE id = 1"
	if err := b.QueryRowContext(t.Context(), q).Scan(&srid); err != nil || srid != 4326 {
		t.Errorf("%s = %d, %v; want 4326", q, srid, err)
	}
}

// TestLogicalChunking splits integer, composite, string and unique-key
// tables into several chunks, and checks that a chunk that fails its
// checksum is not applied.
func TestLogicalChunking(t *testing.T) {
	t.Parallel()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, src,
		"CREATE DATABASE ch",
		"CREATE TABLE ch.ints (id BIGINT PRIMARY KEY, v VARCHAR(40))",
		"INSERT INTO ch.ints SELECT CAST(seq AS SIGNED) * 7 - 100000, MD5(seq) FROM ch.seq_1_to_50000",
		"CREATE TABLE ch.comp (a INT NOT NULL, b VARCHAR(20) NOT NULL, v INT, PRIMARY KEY (a, b))",
		"INSERT INTO ch.comp SELECT seq % 50, CONCAT('k', seq), seq FROM ch.seq_1_to_20000",
		"CREATE TABLE ch.strs (k VARCHAR(40) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT)",
		"INSERT INTO ch.strs SELECT CONCAT(IF(seq % 2, 'A', 'a'), MD5(seq)), seq FROM ch.seq_1_to_20000",
		"CREATE TABLE ch.uniq (x INT NULL, u DATETIME(3) NOT NULL, UNIQUE KEY (u))",
		"INSERT INTO ch.uniq SELECT seq, '2020-01-01' + INTERVAL seq SECOND FROM ch.seq_1_to_20000",
		"ANALYZE TABLE ch.ints, ch.comp, ch.strs, ch.uniq",
	)
	st := storagetest.NewMemory()
	start := time.Now()
	m, err := TakeLogical(t.Context(), LogicalOptions{
		Source:    logicalConfig(t, src.PitrDSN()),
		Storage:   st,
		Logger:    logicalLogger(t),
		ChunkRows: 3000,
		SkipUsers: true,
	})
	if err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	t.Logf("dump of 110000 rows: %s, %d bytes (%d stored)", time.Since(start), m.Bytes, m.StoredBytes)
	chunks := map[string]int{}
	for _, o := range m.Objects {
		if strings.Contains(o.Name, "/data-") {
			chunks[strings.Split(o.Name, "/")[2]]++
		}
	}
	for _, tbl := range []string{"ints", "comp", "strs", "uniq"} {
		if chunks[tbl] < 3 {
			t.Errorf("table %s: %d chunks, want several", tbl, chunks[tbl])
		}
	}
	t.Logf("chunks per table: %v", chunks)

	// A chunk replaced by other valid rows fails its SHA-256 and is rolled back.
	name := tableDataObject("ch", "ints", 2)
	key := catalog.SnapshotObjectKey(m.ID, name)
	orig, err := st.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	if _, err := saved.ReadFrom(orig); err != nil {
		t.Fatal(err)
	}
	orig.Close()
	// The forged object is a valid zstd stream of one valid row, stored
	// with a valid storage checksum: only the manifest's SHA-256 tells.
	forger := &dumper{opts: LogicalOptions{Storage: storagetest.NewMemory()}, id: m.ID}
	if _, err := forger.putBytes(t.Context(), name, []byte("999999\tforged\n")); err != nil {
		t.Fatal(err)
	}
	rc, err := forger.opts.Storage.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var forged bytes.Buffer
	if _, err := forged.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := st.Put(t.Context(), key, bytes.NewReader(forged.Bytes()), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// This server loads each table with one statement (bulkLoadsTables);
	// chunked loads a transaction per chunk, as MySQL and older MariaDB
	// releases do. Either way the forged chunk is refused and none of its
	// rows stay; loading the whole table, nothing of it stays.
	if !bulkLoadsTables(dst.Version()) {
		t.Fatalf("server %s does not load tables in one statement: the test would not cover both paths", dst.Version())
	}
	for _, chunked := range []bool{false, true} {
		err = LoadLogical(t.Context(), st, m, logicalConfig(t, dst.DSN()), LoadOptions{Threads: 1, chunked: chunked})
		if !errors.Is(err, storage.ErrChecksum) {
			t.Fatalf("chunked=%v: LoadLogical of a forged chunk = %v, want ErrChecksum", chunked, err)
		}
		var forgedRows, rows int
		if err := dst.DB(t).QueryRowContext(t.Context(), "SELECT COALESCE(SUM(id = 999999), 0), COUNT(*) FROM ch.ints").Scan(&forgedRows, &rows); err != nil {
			t.Fatal(err)
		}
		if forgedRows != 0 || (!chunked && rows != 0) {
			t.Errorf("chunked=%v: forged rows %d, rows %d after the refused load; want no forged row (and no row when the table loads as one)", chunked, forgedRows, rows)
		}
		logicalExec(t, dst, "DROP DATABASE ch")
	}
	if _, err := st.Put(t.Context(), key, bytes.NewReader(saved.Bytes()), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, chunked := range []bool{false, true} {
		start = time.Now()
		if err := LoadLogical(t.Context(), st, m, logicalConfig(t, dst.DSN()), LoadOptions{Logger: logicalLogger(t), chunked: chunked}); err != nil {
			t.Fatalf("chunked=%v: LoadLogical: %v", chunked, err)
		}
		t.Logf("chunked=%v: load of 110000 rows: %s", chunked, time.Since(start))
		logicalCompareChecksums(t, src.DB(t), dst.DB(t))
		if !chunked {
			logicalExec(t, dst, "DROP DATABASE ch")
		}
	}
}

func TestBulkLoadsTables(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"10.11.19-MariaDB-0+deb12u1-log", true},
		{"10.11.11-MariaDB", true},
		{"10.11.10-MariaDB", false},
		{"5.5.5-10.11.19-MariaDB", true},
		{"11.4.5-MariaDB", true},
		{"11.4.4-MariaDB", false},
		{"11.7.2-MariaDB", true},
		{"11.7.1-MariaDB", false},
		{"11.6.2-MariaDB", false},
		{"11.8.1-MariaDB-log", true},
		{"12.0.2-MariaDB", true},
		{"10.6.21-MariaDB", false},
		{"8.0.36", false},
		{"8.4.3-log", false},
		{"", false},
	} {
		t.Run(tc.version, func(t *testing.T) {
			if got := bulkLoadsTables(tc.version); got != tc.want {
				t.Errorf("bulkLoadsTables(%q) = %v, want %v", tc.version, got, tc.want)
			}
		})
	}
}

// TestLogicalFailures checks that a cancelled snapshot leaves no manifest
// and that a missing privilege is named.
func TestLogicalFailures(t *testing.T) {
	t.Parallel()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, src,
		"CREATE DATABASE f",
		"CREATE TABLE f.t (id INT PRIMARY KEY, v VARCHAR(40))",
		"INSERT INTO f.t SELECT seq, MD5(seq) FROM f.seq_1_to_20000",
		"ANALYZE TABLE f.t",
		"CREATE USER 'noreload'@'%' IDENTIFIED BY 'pw'",
		"GRANT SELECT, BINLOG MONITOR ON *.* TO 'noreload'@'%'",
	)
	t.Run("cancelled", func(t *testing.T) {
		st := storagetest.NewMemory()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		_, err := TakeLogical(ctx, LogicalOptions{
			Source:    logicalConfig(t, src.PitrDSN()),
			Storage:   st,
			ChunkRows: 500,
			Threads:   2,
			Progress:  func(p Progress) { cancel() },
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("TakeLogical = %v, want context.Canceled", err)
		}
		snaps, err := catalog.LoadSnapshots(t.Context(), st)
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps.Complete) != 0 || len(snaps.Partial) != 1 {
			t.Errorf("LoadSnapshots = %d complete, %v partial; want 0 and 1", len(snaps.Complete), snaps.Partial)
		}
		// The lock was released: writes go through.
		ctx, cancel2 := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel2()
		if _, err := src.DB(t).ExecContext(ctx, "UPDATE f.t SET v = 'after' WHERE id = 1"); err != nil {
			t.Errorf("write after a cancelled snapshot: %v", err)
		}
	})
	t.Run("long query", func(t *testing.T) {
		// A long-running write makes FTWRL wait for it while blocking new
		// writes; each attempt must give up after LockWaitTimeout.
		long := make(chan error, 1)
		go func() {
			_, err := src.DB(t).ExecContext(t.Context(), "UPDATE f.t SET v = IF(SLEEP(6), 'x', 'y') WHERE id = 3")
			long <- err
		}()
		testbed.Eventually(t, 10*time.Second, func() error {
			var n int
			if err := src.DB(t).QueryRowContext(t.Context(), "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'UPDATE f.t SET v = IF(SLEEP(6)%'").Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return errors.New("the long UPDATE is not running yet")
			}
			return nil
		})
		var worst atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				begin := time.Now()
				if _, err := src.DB(t).ExecContext(t.Context(), "UPDATE f.t SET v = 'w' WHERE id = 2"); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				if d := int64(time.Since(begin)); d > worst.Load() {
					worst.Store(d)
				}
				// Pacing, not waiting: a write every 10 ms measures how
				// long writes are held up.
				time.Sleep(10 * time.Millisecond)
			}
		})
		_, err := TakeLogical(t.Context(), LogicalOptions{
			Source: logicalConfig(t, src.PitrDSN()), Storage: storagetest.NewMemory(), SkipUsers: true,
			LockWaitTimeout: time.Second, LockAttempts: 2, Logger: logicalLogger(t),
		})
		close(stop)
		wg.Wait()
		t.Logf("snapshot: %v; longest write while it ran: %s", err, time.Duration(worst.Load()))
		// Blocked for the long write's whole 6 s would be a failure; one
		// LockWaitTimeout plus scheduling on a loaded machine is not.
		if w := time.Duration(worst.Load()); w > 4*time.Second {
			t.Errorf("a write waited %s, want about LockWaitTimeout at most", w)
		}
		if err == nil || !strings.Contains(err.Error(), "flush tables with read lock (attempt 2)") {
			t.Errorf("TakeLogical while a 6 s write runs = %v, want it to give up after 2 attempts", err)
		}
		<-long
	})
	t.Run("missing RELOAD", func(t *testing.T) {
		cfg := logicalConfig(t, src.DSNFor("noreload", "pw"))
		_, err := TakeLogical(t.Context(), LogicalOptions{Source: cfg, Storage: storagetest.NewMemory(), SkipUsers: true})
		if err == nil || !strings.Contains(err.Error(), "RELOAD") {
			t.Errorf("TakeLogical without RELOAD = %v, want an error naming RELOAD", err)
		}
	})
	t.Run("options", func(t *testing.T) {
		tests := []struct {
			name string
			opts LogicalOptions
			want string
		}{
			{"no source", LogicalOptions{Storage: storagetest.NewMemory()}, "Source"},
			{"no storage", LogicalOptions{Source: mysql.NewConfig()}, "Storage"},
			{"negative threads", LogicalOptions{Source: mysql.NewConfig(), Storage: storagetest.NewMemory(), Threads: -1}, "Threads"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := TakeLogical(t.Context(), tt.opts)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("TakeLogical = %v, want an error naming %s", err, tt.want)
				}
			})
		}
	})
	t.Run("not logical", func(t *testing.T) {
		err := LoadLogical(t.Context(), storagetest.NewMemory(), &catalog.Manifest{Method: catalog.MethodPhysical}, mysql.NewConfig(), LoadOptions{})
		if !errors.Is(err, ErrNotLogical) {
			t.Errorf("LoadLogical of a physical manifest = %v, want ErrNotLogical", err)
		}
	})
}

// TestLoadPausesStatistics checks that a table loading has no automatic
// statistics recalculation, and gets its own setting and fresh statistics
// back once loaded; a partitioned or non-InnoDB table is left as it is.
func TestLoadPausesStatistics(t *testing.T) {
	t.Parallel()
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, dst,
		"CREATE DATABASE ps",
		"CREATE TABLE ps.dflt (id INT PRIMARY KEY) ENGINE=InnoDB",
		"CREATE TABLE ps.on1 (id INT PRIMARY KEY) ENGINE=InnoDB STATS_AUTO_RECALC=1",
		"CREATE TABLE ps.aria (id INT PRIMARY KEY) ENGINE=Aria",
		"CREATE TABLE ps.parts (id INT PRIMARY KEY) ENGINE=InnoDB PARTITION BY HASH (id) PARTITIONS 2",
	)
	db := dst.DB(t)
	options := func(table string) string {
		var o string
		if err := db.QueryRowContext(t.Context(), "SELECT CREATE_OPTIONS FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ps' AND TABLE_NAME = ?", table).Scan(&o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := &loader{statsRecalc: map[int]string{}}
	tables := []tableDef{{Schema: "ps", Name: "dflt"}, {Schema: "ps", Name: "on1"}, {Schema: "ps", Name: "aria"}, {Schema: "ps", Name: "parts"}}
	for i := range tables {
		if err := l.pauseStats(t.Context(), c, i, &tables[i]); err != nil {
			t.Fatalf("pauseStats %s: %v", tables[i].Name, err)
		}
	}
	for table, want := range map[string]string{"dflt": "stats_auto_recalc=0", "on1": "stats_auto_recalc=0", "aria": "transactional=1", "parts": "partitioned"} {
		if got := options(table); got != want {
			t.Errorf("while loading, %s has options %q, want %q", table, got, want)
		}
	}
	logicalExec(t, dst, "INSERT INTO ps.dflt SELECT seq FROM ps.seq_1_to_500", "INSERT INTO ps.on1 SELECT seq FROM ps.seq_1_to_700")
	for i := range tables {
		if err := l.resumeStats(t.Context(), c, i, &tables[i]); err != nil {
			t.Fatalf("resumeStats %s: %v", tables[i].Name, err)
		}
	}
	for table, want := range map[string]string{"dflt": "", "on1": "stats_auto_recalc=1", "aria": "transactional=1", "parts": "partitioned"} {
		if got := options(table); got != want {
			t.Errorf("after loading, %s has options %q, want %q", table, got, want)
		}
	}
	for table, want := range map[string]int64{"dflt": 500, "on1": 700} {
		var n int64
		if err := db.QueryRowContext(t.Context(), "SELECT n_rows FROM mysql.innodb_table_stats WHERE database_name = 'ps' AND table_name = ?", table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("statistics of %s say %d rows, want %d", table, n, want)
		}
	}
}

// TestLogicalOnMySQLWithoutGTIDs: a MySQL 9.7 server that has committed
// nothing with a GTID yet (gtid_executed empty, as a fresh server) cannot
// take the position from performance_schema.log_status, and the snapshot
// falls back to the global read lock and the binlog status, whose old name
// (SHOW MASTER STATUS) MySQL 8.4 dropped.
func TestLogicalOnMySQLWithoutGTIDs(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97})
	src.Exec(t, "SET SESSION sql_log_bin = 0")
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var gtid string
	if err := src.DB(t).QueryRow("SELECT @@global.gtid_executed").Scan(&gtid); err != nil || gtid != "" {
		t.Fatalf("gtid_executed %q, %v: want a server with none", gtid, err)
	}
	m, err := TakeLogical(t.Context(), LogicalOptions{Source: logicalConfig(t, src.PitrDSN()), Storage: st, Logger: logicalLogger(t), Threads: 1})
	if err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	if m.Binlog.File == "" || m.Binlog.Pos < 4 {
		t.Fatalf("manifest position %s", m.Binlog)
	}
}
