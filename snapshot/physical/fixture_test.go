//go:build linux

package physical

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

const (
	bankAccounts = 50
	bankOpening  = 1000
)

// sourceOf connects to the test server as the pitr user, whose grants are
// the production ones.
func sourceOf(t *testing.T, m *testbed.MariaDB) *binlog.Source {
	t.Helper()
	cfg, err := mysql.ParseDSN(m.PitrDSN())
	if err != nil {
		t.Fatal(err)
	}
	src, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func newStore(t *testing.T) (*file.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st, dir
}

// testLogger writes the code's log to the test log and to buf.
func testLogger(t *testing.T, buf *syncBuffer) *slog.Logger {
	var w io.Writer = testWriter{t}
	if buf != nil {
		w = io.MultiWriter(w, buf)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fillBank creates accounts that transfers move money between, a transfer
// log, and fillerMB of filler rows so the backup takes a moment.
func fillBank(t *testing.T, m *testbed.MariaDB, fillerMB int) {
	t.Helper()
	m.Exec(t, "CREATE DATABASE bank")
	m.Exec(t, "CREATE TABLE bank.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB")
	m.Exec(t, "CREATE TABLE bank.transfers (id BIGINT AUTO_INCREMENT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount BIGINT NOT NULL) ENGINE=InnoDB")
	m.Exec(t, "CREATE TABLE bank.filler (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000) NOT NULL) ENGINE=InnoDB")
	var vals []string
	for i := 1; i <= bankAccounts; i++ {
		vals = append(vals, fmt.Sprintf("(%d, %d)", i, bankOpening))
	}
	m.Exec(t, "INSERT INTO bank.accounts VALUES "+strings.Join(vals, ","))
	if fillerMB > 0 {
		if m.Flavor().MySQL() {
			// MySQL has no sequence engine (1000 pairs of accounts instead), and 9.7 no MD5().
			m.Exec(t, "INSERT INTO bank.filler (pad) SELECT REPEAT(SHA2(a.id * 1000 + b.id, 256), 15) FROM bank.accounts a CROSS JOIN bank.accounts b LIMIT 1000")
		} else {
			m.Exec(t, "INSERT INTO bank.filler (pad) SELECT REPEAT(MD5(seq), 30) FROM bank.seq_1_to_1000")
		}
		for rows := 1000; rows*1000 < fillerMB<<20; rows *= 2 {
			m.Exec(t, "INSERT INTO bank.filler (pad) SELECT pad FROM bank.filler")
		}
	}
}

// bankLoad runs transfers on several connections until stopped. Each is one
// transaction of two updates and an insert; a torn backup breaks the sums.
type bankLoad struct {
	commits atomic.Int64
	// maxCommit is the longest COMMIT in nanoseconds: while the backup
	// blocks commits, one of the workers waits in COMMIT all along.
	maxCommit atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
	errMu     sync.Mutex
	err       error
}

func startBankLoad(t *testing.T, db *sql.DB, workers int) *bankLoad {
	l := &bankLoad{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				a, b := 1+r.IntN(bankAccounts), 1+r.IntN(bankAccounts)
				if a == b {
					continue
				}
				took, err := bankTransfer(t.Context(), db, a, b, 1+r.Int64N(50))
				if err != nil {
					var me *mysql.MySQLError
					if errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205) {
						continue // deadlock or lock wait: retry another
					}
					l.errMu.Lock()
					l.err = errors.Join(l.err, err)
					l.errMu.Unlock()
					return
				}
				l.commits.Add(1)
				for {
					old := l.maxCommit.Load()
					if int64(took) <= old || l.maxCommit.CompareAndSwap(old, int64(took)) {
						break
					}
				}
			}
		})
	}
	return l
}

// waitCommits waits until the load has committed n transfers in all.
func (l *bankLoad) waitCommits(t *testing.T, n int64) {
	t.Helper()
	testbed.Eventually(t, time.Minute, func() error {
		l.errMu.Lock()
		err := l.err
		l.errMu.Unlock()
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		if got := l.commits.Load(); got < n {
			return fmt.Errorf("the load has committed %d transfers, want %d", got, n)
		}
		return nil
	})
}

func (l *bankLoad) Stop(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.err != nil {
		t.Fatalf("load: %v", l.err)
	}
}

// bankTransfer moves amount from src to dst and returns how long COMMIT took.
func bankTransfer(ctx context.Context, db *sql.DB, src, dst int, amount int64) (time.Duration, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"UPDATE bank.accounts SET balance = balance - ? WHERE id = ?", []any{amount, src}},
		{"UPDATE bank.accounts SET balance = balance + ? WHERE id = ?", []any{amount, dst}},
		{"INSERT INTO bank.transfers (src, dst, amount) VALUES (?, ?, ?)", []any{src, dst, amount}},
	} {
		if _, err := tx.ExecContext(ctx, q.sql, q.args...); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	err = tx.Commit()
	return time.Since(start), err
}

// checkBank fails unless money is conserved and every account's balance
// is its opening balance plus the transfers logged in and out of it.
func checkBank(t *testing.T, db *sql.DB, label string) {
	t.Helper()
	var total int64
	if err := db.QueryRowContext(t.Context(), "SELECT SUM(balance) FROM bank.accounts").Scan(&total); err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	if want := int64(bankAccounts * bankOpening); total != want {
		t.Errorf("%s: total balance %d, want %d", label, total, want)
	}
	var bad int
	err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM bank.accounts a WHERE a.balance <> ?
		+ COALESCE((SELECT SUM(amount) FROM bank.transfers WHERE dst = a.id), 0)
		- COALESCE((SELECT SUM(amount) FROM bank.transfers WHERE src = a.id), 0)`, bankOpening).Scan(&bad)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	if bad != 0 {
		t.Errorf("%s: %d accounts disagree with the transfer log", label, bad)
	}
}

// checkReplayed replays src's binlog from m's position into restored (with
// the replay's extra args) and compares every table's CHECKSUM TABLE with
// the source's, then the books.
func checkReplayed(t *testing.T, src, restored *testbed.MariaDB, m *catalog.Manifest, args ...string) {
	t.Helper()
	src.ReplayBinlog(t, m.Binlog.File, m.Binlog.Pos, restored.Port(), args...)
	got, want := tableChecksums(t, restored.DB(t)), tableChecksums(t, src.DB(t))
	if len(want) < 3 {
		t.Fatalf("source has tables %v", want)
	}
	for tb, w := range want {
		if got[tb] != w {
			t.Errorf("CHECKSUM TABLE %s: restored and replayed %d, source %d", tb, got[tb], w)
		}
	}
	checkBank(t, restored.DB(t), "restored and replayed")
}

// tableChecksums returns CHECKSUM TABLE of every base table outside the
// system schemas.
func tableChecksums(t *testing.T, db *sql.DB) map[string]int64 {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT CONCAT('`+"`"+`', table_schema, '`+"`.`"+`', table_name, '`+"`"+`')
		FROM information_schema.tables WHERE table_type = 'BASE TABLE'
		AND table_schema NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	sums := map[string]int64{}
	for _, tb := range tables {
		var name string
		var sum sql.NullInt64
		if err := db.QueryRowContext(t.Context(), "CHECKSUM TABLE "+tb).Scan(&name, &sum); err != nil {
			t.Fatalf("checksum %s: %v", tb, err)
		}
		sums[tb] = sum.Int64
	}
	return sums
}

// startRestored starts MariaDB 10.11 on a restored datadir, with the
// grants the backup brought along.
func startRestored(t *testing.T, datadir string) *testbed.MariaDB {
	t.Helper()
	return startRestoredFlavor(t, testbed.MariaDB1011, datadir)
}

// startRestoredFlavor is startRestored for a flavor's server, started as
// the test bed starts it; without a binlog on MariaDB, with one as the
// image has it on MySQL.
func startRestoredFlavor(t *testing.T, f testbed.Flavor, datadir string) *testbed.MariaDB {
	t.Helper()
	return testbed.NewMariaDBOn(t, testbed.MariaDBOptions{Flavor: f, ServerID: 99, NoBinlog: !f.MySQL()}, datadir)
}
