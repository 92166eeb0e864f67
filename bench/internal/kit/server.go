package kit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // the root pool's driver

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// Server is a throwaway server of one flavor (the test bed's, started as
// its official image starts it) with a root pool for the benchmark's own
// queries.
type Server struct {
	*testbed.MariaDB
	DB *sql.DB
}

// StartServer starts a server with the test bed's settings plus opts and
// opens its root pool (root has no password and may connect over TCP).
func StartServer(opts testbed.MariaDBOptions) (*Server, error) {
	m, err := testbed.StartMariaDB(opts)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("open root pool: %w", err)
	}
	return &Server{MariaDB: m, DB: db}, nil
}

// Close closes the pool and stops the server.
func (s *Server) Close() error {
	s.DB.Close()
	return s.MariaDB.Close()
}

// CPU is the CPU time the server has used so far; 0 if it cannot be read.
func (s *Server) CPU() time.Duration {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(s.DataDir()), "mysqld.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return PidCPU(pid)
}

// RootFlags are the command-line tools' flags to connect as root over TCP.
func (s *Server) RootFlags() []string {
	return []string{"--host=127.0.0.1", "--port=" + strconv.Itoa(s.Port()), "--user=root"}
}

// RedoArgs sets the redo log's size: innodb_log_file_size on MariaDB,
// innodb_redo_log_capacity on MySQL, which has no other.
func RedoArgs(f testbed.Flavor, n int64) []string {
	if f.MySQL() {
		return []string{"--innodb-redo-log-capacity=" + strconv.FormatInt(n, 10)}
	}
	return []string{"--innodb-log-file-size=" + strconv.FormatInt(n, 10)}
}

// BinlogEnd is where the next binlog event will be written: SHOW MASTER
// STATUS, or SHOW BINARY LOG STATUS on MySQL, which dropped the other.
func (s *Server) BinlogEnd(ctx context.Context) (catalog.Position, error) {
	return BinlogEnd(ctx, s.DB, s.Flavor())
}

// BinlogEnd is Server.BinlogEnd on any connection or pool.
func BinlogEnd(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, f testbed.Flavor) (catalog.Position, error) {
	stmt := "SHOW MASTER STATUS"
	if f.MySQL() {
		stmt = "SHOW BINARY LOG STATUS"
	}
	var p catalog.Position
	rows, err := q.QueryContext(ctx, stmt)
	if err != nil {
		return p, fmt.Errorf("%s: %w", stmt, err)
	}
	defer rows.Close()
	vals, err := scanAll(rows)
	if err == nil && (len(vals) != 1 || len(vals[0]) < 2) {
		err = fmt.Errorf("%d rows: is the binlog on?", len(vals))
	}
	if err == nil {
		p.File = vals[0][0]
		p.Pos, err = strconv.ParseUint(vals[0][1], 10, 64)
	}
	if err != nil {
		return p, fmt.Errorf("%s: %w", stmt, err)
	}
	return p, nil
}

// scanAll reads every row as strings, whatever the columns (they differ
// between flavors and releases).
func scanAll(rows *sql.Rows) ([][]string, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = v.String
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// BinaryLog is a row of SHOW BINARY LOGS: a file and its size.
type BinaryLog struct {
	Name string
	Size int64
}

// BinaryLogs is SHOW BINARY LOGS.
func (s *Server) BinaryLogs(ctx context.Context) ([]BinaryLog, error) {
	rows, err := s.DB.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("show binary logs: %w", err)
	}
	defer rows.Close()
	vals, err := scanAll(rows)
	var logs []BinaryLog
	for _, v := range vals {
		size, perr := strconv.ParseInt(v[1], 10, 64)
		err = errors.Join(err, perr)
		logs = append(logs, BinaryLog{Name: v[0], Size: size})
	}
	if err != nil {
		return nil, fmt.Errorf("show binary logs: %w", err)
	}
	return logs, nil
}

// TotalSize sums the files' sizes.
func TotalSize(logs []BinaryLog) int64 {
	var n int64
	for _, l := range logs {
		n += l.Size
	}
	return n
}

// BytesAfter is how many binlog bytes the server holds after from: the rest
// of from's file and every later file.
func BytesAfter(logs []BinaryLog, from catalog.Position) int64 {
	fromNum, err := catalog.FileNumber(from.File)
	if err != nil {
		return 0
	}
	var n int64
	for _, l := range logs {
		switch num, err := catalog.FileNumber(l.Name); {
		case err != nil || num < fromNum:
		case num == fromNum:
			n += max(0, l.Size-int64(from.Pos))
		default:
			n += l.Size
		}
	}
	return n
}

// PosAtLeast reports whether a is at or after b. Positions in different
// files compare by file number; an empty a is at b only when b is empty.
func PosAtLeast(a, b catalog.Position) bool {
	if a.File == "" || a.File == b.File {
		return a.File == b.File && a.Pos >= b.Pos
	}
	na, errA := catalog.FileNumber(a.File)
	nb, errB := catalog.FileNumber(b.File)
	return errA == nil && errB == nil && na > nb
}

// WaitIdle waits until the server's binlog end has not moved for quiet, and
// returns it.
func (s *Server) WaitIdle(ctx context.Context, quiet time.Duration) (catalog.Position, error) {
	last, err := s.BinlogEnd(ctx)
	for since := time.Now(); err == nil && time.Since(since) < quiet; {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		var p catalog.Position
		if p, err = s.BinlogEnd(ctx); p != last {
			last, since = p, time.Now()
		}
	}
	return last, err
}

// Transactions counts the transactions the server has written to its
// binlog, from its GTID state.
func (s *Server) Transactions(ctx context.Context) (uint64, error) {
	set, err := s.GTIDState(ctx)
	if err != nil {
		return 0, err
	}
	return CountGTIDs(set)
}

// GTIDState is what the server has written to its binlog as a GTID
// state: MariaDB's gtid_binlog_pos, MySQL's gtid_executed.
func (s *Server) GTIDState(ctx context.Context) (string, error) {
	q := "SELECT @@GLOBAL.gtid_binlog_pos"
	if s.Flavor().MySQL() {
		q = "SELECT @@GLOBAL.gtid_executed"
	}
	var set string
	if err := s.DB.QueryRowContext(ctx, q).Scan(&set); err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	return set, nil
}

// ReplicaStatus is SHOW REPLICA STATUS by column name; nil when the server
// is no replica.
func (s *Server) ReplicaStatus(ctx context.Context) (map[string]string, error) {
	rows, err := s.DB.QueryContext(ctx, "SHOW REPLICA STATUS")
	if err != nil {
		return nil, fmt.Errorf("show replica status: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("show replica status: %w", err)
	}
	vals, err := scanAll(rows)
	if err != nil || len(vals) == 0 {
		return nil, err
	}
	m := map[string]string{}
	for i, c := range cols {
		m[c] = vals[0][i]
	}
	return m, nil
}

// CountGTIDs counts the transactions of a GTID state: the sum of the
// sequence numbers of a MariaDB position ("0-1-1234,1-1-7"), or the sizes
// of the intervals of a MySQL set ("3E11FA47-…:1-5:7-9,…").
func CountGTIDs(set string) (uint64, error) {
	var n uint64
	for g := range strings.SplitSeq(set, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		parts := strings.Split(g, ":")
		if len(parts) == 1 { // MariaDB: domain-server-seq
			f := strings.Split(g, "-")
			seq, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if len(f) != 3 || err != nil {
				return 0, fmt.Errorf("bad GTID %q in %q", g, set)
			}
			n += seq
			continue
		}
		for _, iv := range parts[1:] {
			if iv == "" || iv[0] < '0' || iv[0] > '9' {
				continue // a tag: "uuid:tag:1-5"
			}
			lo, hi, isRange := strings.Cut(iv, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.ParseUint(lo, 10, 64)
			b, err2 := strconv.ParseUint(hi, 10, 64)
			if err1 != nil || err2 != nil || b < a {
				return 0, fmt.Errorf("bad interval %q in %q", iv, set)
			}
			n += b - a + 1
		}
	}
	return n, nil
}

// Dataset is the size of a sysbench database as the server accounts for
// it, after ANALYZE TABLE so that the statistics are fresh.
type Dataset struct {
	Bytes int64 // SUM(data_length + index_length)
	Rows  int64 // exact, from COUNT(*)
	Sums  map[string]int64
}

// MeasureDataset analyzes, counts and checksums the sysbench tables.
func (s *Server) MeasureDataset(ctx context.Context, tables int) (Dataset, error) {
	var d Dataset
	for i := 1; i <= tables; i++ {
		t := fmt.Sprintf("sbtest.sbtest%d", i)
		if _, err := s.DB.ExecContext(ctx, "ANALYZE TABLE "+t); err != nil {
			return d, fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	n, err := CountRows(ctx, s.DB, tables)
	if err != nil {
		return d, err
	}
	d.Rows = n
	if d.Sums, err = Checksums(ctx, s.DB, tables); err != nil {
		return d, err
	}
	err = s.DB.QueryRowContext(ctx, "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = 'sbtest'").Scan(&d.Bytes)
	if err != nil {
		return d, fmt.Errorf("size of sbtest: %w", err)
	}
	return d, nil
}

// CountRows counts the rows of the sysbench tables exactly.
func CountRows(ctx context.Context, db *sql.DB, tables int) (int64, error) {
	var total int64
	for i := 1; i <= tables; i++ {
		var n int64
		t := fmt.Sprintf("sbtest.sbtest%d", i)
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n); err != nil {
			return 0, fmt.Errorf("count %s: %w", t, err)
		}
		total += n
	}
	return total, nil
}

// Checksums is CHECKSUM TABLE of every sysbench table, by table name.
func Checksums(ctx context.Context, db *sql.DB, tables int) (map[string]int64, error) {
	sums := map[string]int64{}
	for i := 1; i <= tables; i++ {
		t := fmt.Sprintf("sbtest.sbtest%d", i)
		var name string
		var sum sql.NullInt64
		if err := db.QueryRowContext(ctx, "CHECKSUM TABLE "+t).Scan(&name, &sum); err != nil {
			return nil, fmt.Errorf("checksum %s: %w", t, err)
		}
		if !sum.Valid {
			return nil, fmt.Errorf("checksum %s: the table does not exist", t)
		}
		sums[t] = sum.Int64
	}
	return sums, nil
}

// WaitFlushed asks InnoDB to write every dirty page and waits until none is
// left, so that no run competes with the flushing of what came before it.
// The I/O capacity is raised meanwhile: at the default 200 pages a second,
// the 2 GB that a large prepare leaves dirty would take over ten minutes.
func (s *Server) WaitFlushed(ctx context.Context, timeout time.Duration) error {
	vars := []string{"innodb_max_dirty_pages_pct", "innodb_io_capacity", "innodb_io_capacity_max"}
	old := make([]string, len(vars))
	err := s.DB.QueryRowContext(ctx, "SELECT @@GLOBAL."+strings.Join(vars, ", @@GLOBAL.")).Scan(&old[0], &old[1], &old[2])
	if err != nil {
		return fmt.Errorf("read flushing settings: %w", err)
	}
	set := func(ctx context.Context, pairs ...string) error {
		for i := 0; i < len(pairs); i += 2 {
			if _, err := s.DB.ExecContext(ctx, "SET GLOBAL "+pairs[i]+" = "+pairs[i+1]); err != nil {
				return fmt.Errorf("set %s: %w", pairs[i], err)
			}
		}
		return nil
	}
	if err := set(ctx, vars[2], "100000", vars[1], "100000", vars[0], "0"); err != nil {
		return err
	}
	defer set(context.WithoutCancel(ctx), vars[0], old[0], vars[1], old[1], vars[2], old[2])
	for deadline := time.Now().Add(timeout); ; {
		var name string
		var dirty int64
		if err := s.DB.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil {
			return err
		}
		if dirty == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			Logf("  %d dirty pages left after %s; going on", dirty, timeout)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// PurgeOld rotates the binlog and purges every older file.
func (s *Server) PurgeOld(ctx context.Context) error {
	if _, err := s.DB.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		return fmt.Errorf("flush binary logs: %w", err)
	}
	p, err := s.BinlogEnd(ctx)
	if err != nil {
		return err
	}
	if _, err := s.DB.ExecContext(ctx, "PURGE BINARY LOGS TO '"+p.File+"'"); err != nil {
		return fmt.Errorf("purge binary logs: %w", err)
	}
	return nil
}
