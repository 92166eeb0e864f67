package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	_ "github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// server is the source MariaDB.
type server struct{ *benchkit.Server }

// startServer starts the source with the testbed's settings (ROW binlog,
// GTID strict mode, innodb_flush_log_at_trx_commit=2, sync_binlog=0) and
// a buffer pool the tables fit in, so that writing the binlog is bound by
// CPU.
func startServer(cfg config) (*server, error) {
	s, err := benchkit.StartServer(testbed.MariaDBOptions{
		MaxBinlogSize: cfg.maxBinlogSize,
		ExtraArgs:     []string{"--innodb-buffer-pool-size=" + strconv.FormatInt(cfg.bufferPool, 10), "--max-connections=200"},
	})
	if err != nil {
		return nil, err
	}
	return &server{s}, nil
}

// bytesAfter is how many binlog bytes the server holds after from: the rest
// of from's file and every later file.
func bytesAfter(logs []benchkit.BinaryLog, from catalog.Position) int64 {
	fromNum, err := catalog.FileNumber(from.File)
	if err != nil {
		return 0
	}
	var n int64
	for _, l := range logs {
		num, err := catalog.FileNumber(l.Name)
		switch {
		case err != nil || num < fromNum:
		case num == fromNum:
			n += max(0, l.Size-int64(from.Pos))
		default:
			n += l.Size
		}
	}
	return n
}

// dataset is the size of the sysbench database as the server accounts for
// it, after ANALYZE TABLE so that the statistics are fresh.
type dataset struct {
	Bytes int64 // SUM(data_length + index_length)
	Rows  int64 // exact, from COUNT(*)
}

func (s *server) measureDataset(ctx context.Context, tables int) (dataset, error) {
	var d dataset
	for i := 1; i <= tables; i++ {
		t := fmt.Sprintf("sbtest.sbtest%d", i)
		if _, err := s.DB.ExecContext(ctx, "ANALYZE TABLE "+t); err != nil {
			return d, fmt.Errorf("analyze %s: %w", t, err)
		}
		var n int64
		if err := s.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n); err != nil {
			return d, fmt.Errorf("count %s: %w", t, err)
		}
		d.Rows += n
	}
	err := s.DB.QueryRowContext(ctx, "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = 'sbtest'").Scan(&d.Bytes)
	if err != nil {
		return d, fmt.Errorf("size of sbtest: %w", err)
	}
	return d, nil
}

// checksums is CHECKSUM TABLE of every sysbench table, by table name.
func checksums(ctx context.Context, db *sql.DB, tables int) (map[string]int64, error) {
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

func (s *server) checksums(ctx context.Context, tables int) (map[string]int64, error) {
	return checksums(ctx, s.DB, tables)
}

// sysbench runs sysbench's oltp_write_only against the server's sbtest
// database.
type sysbench struct {
	bin       string
	port      int
	tables    int
	tableSize int
	threads   int
}

func (b sysbench) args(extra ...string) []string {
	a := []string{b.bin, "oltp_write_only",
		"--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(b.port),
		"--mysql-user=root", "--mysql-db=sbtest",
		"--tables=" + strconv.Itoa(b.tables), "--table-size=" + strconv.Itoa(b.tableSize),
		"--threads=" + strconv.Itoa(b.threads),
	}
	return append(a, extra...)
}

// prepare creates and fills the tables.
func (b sysbench) prepare(ctx context.Context, s *server, logPath string) error {
	if _, err := s.DB.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS sbtest"); err != nil {
		return fmt.Errorf("create sbtest: %w", err)
	}
	a := b.args("prepare")
	out, err := exec.CommandContext(ctx, a[0], a[1:]...).CombinedOutput()
	os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return fmt.Errorf("sysbench prepare: %w\n%s", err, benchkit.LastLines(string(out), 20))
	}
	return nil
}

// start starts an unthrottled run that the caller stops; sysbench stops on
// its own only by time or event count, neither of which maps to binlog
// bytes, so the time limit is only a backstop.
func (b sysbench) start(logPath string) (*benchkit.Child, error) {
	return benchkit.StartChild("sysbench", b.args("--time=36000", "--report-interval=10", "run"), nil, logPath)
}
