package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// server is a MariaDB under test.
type server struct{ *benchkit.Server }

// serverArgs are the settings of every server, the source and each load
// target alike: the tables fit in the buffer pool, and durability is a
// production server's (the testbed's own defaults trade it for speed).
func serverArgs(cfg config) []string {
	return []string{
		"--innodb-buffer-pool-size=" + strconv.FormatInt(cfg.bufferPool, 10),
		"--innodb-log-file-size=" + strconv.FormatInt(cfg.redoLog, 10),
		"--innodb-flush-log-at-trx-commit=1",
		"--sync-binlog=1",
		"--max-connections=200",
	}
}

func startServer(cfg config) (*server, error) {
	s, err := benchkit.StartServer(testbed.MariaDBOptions{ExtraArgs: serverArgs(cfg)})
	if err != nil {
		return nil, err
	}
	return &server{s}, nil
}

// sysbenchDB is the database sysbench fills and every tool dumps.
const sysbenchDB = "sbtest"

// sysbench runs sysbench's OLTP scripts against the server's sbtest database.
type sysbench struct {
	bin       string
	port      int
	tables    int
	tableSize int
}

func (b sysbench) args(script string, extra ...string) []string {
	a := []string{b.bin, script,
		"--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(b.port),
		"--mysql-user=root", "--mysql-db=" + sysbenchDB,
		"--tables=" + strconv.Itoa(b.tables), "--table-size=" + strconv.Itoa(b.tableSize),
	}
	return append(a, extra...)
}

// prepare creates and fills the tables with oltp_read_write's prepare (the
// oltp_common schema: id, k, c, pad and a secondary index on k).
func (b sysbench) prepare(ctx context.Context, s *server, threads int, logPath string) error {
	if _, err := s.DB.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+sysbenchDB); err != nil {
		return fmt.Errorf("create %s: %w", sysbenchDB, err)
	}
	a := b.args("oltp_read_write", "--threads="+strconv.Itoa(threads), "prepare")
	out, err := exec.CommandContext(ctx, a[0], a[1:]...).CombinedOutput()
	os.WriteFile(logPath, out, 0o644)
	if err != nil {
		return fmt.Errorf("sysbench prepare: %w\n%s", err, benchkit.LastLines(string(out), 20))
	}
	return nil
}

// dataset is the size of the sysbench database as the server accounts for
// it, after ANALYZE TABLE so that the statistics are fresh.
type dataset struct {
	Bytes int64 // SUM(data_length + index_length)
	Rows  int64 // exact, from COUNT(*)
	// Sums are CHECKSUM TABLE of each table: every load must reproduce them.
	Sums map[string]string
}

func (s *server) measureDataset(ctx context.Context, tables int) (dataset, error) {
	var d dataset
	for i := 1; i <= tables; i++ {
		t := fmt.Sprintf("%s.sbtest%d", sysbenchDB, i)
		if _, err := s.DB.ExecContext(ctx, "ANALYZE TABLE "+t); err != nil {
			return d, fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	n, err := s.countRows(ctx, tables)
	if err != nil {
		return d, err
	}
	d.Rows = n
	if d.Sums, err = s.checksums(ctx, tables); err != nil {
		return d, err
	}
	err = s.DB.QueryRowContext(ctx, "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = ?",
		sysbenchDB).Scan(&d.Bytes)
	if err != nil {
		return d, fmt.Errorf("size of %s: %w", sysbenchDB, err)
	}
	return d, nil
}

// checksums returns CHECKSUM TABLE of each sysbench table.
func (s *server) checksums(ctx context.Context, tables int) (map[string]string, error) {
	sums := map[string]string{}
	for i := 1; i <= tables; i++ {
		t := fmt.Sprintf("%s.sbtest%d", sysbenchDB, i)
		var name string
		var sum sql.NullString
		if err := s.DB.QueryRowContext(ctx, "CHECKSUM TABLE "+t).Scan(&name, &sum); err != nil {
			return nil, fmt.Errorf("checksum %s: %w", t, err)
		}
		sums[t] = sum.String
	}
	return sums, nil
}

// countRows counts the rows of the sysbench tables exactly.
func (s *server) countRows(ctx context.Context, tables int) (int64, error) {
	var total int64
	for i := 1; i <= tables; i++ {
		var n int64
		t := fmt.Sprintf("%s.sbtest%d", sysbenchDB, i)
		if err := s.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n); err != nil {
			return 0, fmt.Errorf("count %s: %w", t, err)
		}
		total += n
	}
	return total, nil
}

// waitFlushed asks InnoDB to write every dirty page and waits until none is
// left, so that no run competes with the flushing of what came before it and
// each physical backup copies about the same redo log. The I/O capacity is
// raised meanwhile: at the default 200 pages a second, the 2 GB that
// prepare leaves dirty would take over ten minutes.
func (s *server) waitFlushed(ctx context.Context, timeout time.Duration) error {
	var oldPct float64
	var oldCap, oldCapMax int64
	err := s.DB.QueryRowContext(ctx, "SELECT @@GLOBAL.innodb_max_dirty_pages_pct, @@GLOBAL.innodb_io_capacity, @@GLOBAL.innodb_io_capacity_max").
		Scan(&oldPct, &oldCap, &oldCapMax)
	if err != nil {
		return fmt.Errorf("read flushing settings: %w", err)
	}
	for _, q := range []string{
		"SET GLOBAL innodb_io_capacity_max = 100000",
		"SET GLOBAL innodb_io_capacity = 100000",
		"SET GLOBAL innodb_max_dirty_pages_pct = 0",
	} {
		if _, err := s.DB.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		s.DB.ExecContext(ctx, "SET GLOBAL innodb_max_dirty_pages_pct = "+strconv.FormatFloat(oldPct, 'f', -1, 64))
		s.DB.ExecContext(ctx, "SET GLOBAL innodb_io_capacity = "+strconv.FormatInt(oldCap, 10))
		s.DB.ExecContext(ctx, "SET GLOBAL innodb_io_capacity_max = "+strconv.FormatInt(oldCapMax, 10))
	}()
	deadline := time.Now().Add(timeout)
	for {
		var name string
		var dirty int64
		err := s.DB.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty)
		if err != nil {
			return err
		}
		if dirty == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			benchkit.Logf("  %d dirty pages left after %s; going on", dirty, timeout)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// probe commits a one-row UPDATE every probeInterval on its own connection,
// so that a stall of writes shows as the commit's latency, whatever the
// snapshot says about itself.
type probe struct {
	lat  []probeSample
	err  error
	done chan struct{}
}

type probeSample struct {
	at  time.Time // when the commit started
	lat time.Duration
}

const probeInterval = 10 * time.Millisecond

// startProbe creates pitr_bench.probe and starts committing to it until ctx
// ends; wait for done before reading the samples.
func (s *server) startProbe(ctx context.Context) (*probe, error) {
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS pitr_bench",
		"CREATE TABLE IF NOT EXISTS pitr_bench.probe (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
		"INSERT IGNORE INTO pitr_bench.probe VALUES (1, 0)",
	} {
		if _, err := s.DB.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("probe table: %w", err)
		}
	}
	conn, err := s.DB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("probe connection: %w", err)
	}
	p := &probe{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer conn.Close()
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			_, err := conn.ExecContext(ctx, "UPDATE pitr_bench.probe SET n = n + 1 WHERE id = 1")
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.err = err
				return
			}
			p.lat = append(p.lat, probeSample{at: start, lat: time.Since(start)})
		}
	}()
	return p, nil
}

// maxBetween is the longest commit that started in [from, to], and how many
// commits started then.
func (p *probe) maxBetween(from, to time.Time) (time.Duration, int) {
	var worst time.Duration
	n := 0
	for _, s := range p.lat {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		n++
		worst = max(worst, s.lat)
	}
	return worst, n
}

// p99Between is the 99th percentile (nearest rank) of the commits started
// in [from, to].
func (p *probe) p99Between(from, to time.Time) time.Duration {
	var ds []time.Duration
	for _, s := range p.lat {
		if !s.at.Before(from) && !s.at.After(to) {
			ds = append(ds, s.lat)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, (len(ds)*99+99)/100-1)]
}
