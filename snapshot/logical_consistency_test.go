package snapshot

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

const (
	logicalBankAccounts = 200
	logicalBankStart    = 1000
)

var logicalBankTables = []string{"acct_a", "acct_b", "acct_c"}

// logicalTransfers moves money between accounts of the three tables in
// multi-statement transactions, logging each in the ledger, until stop.
func logicalTransfers(ctx context.Context, src *testbed.MariaDB, t *testing.T, stop <-chan struct{}, commits *atomic.Int64) error {
	db := src.DB(t)
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		from, to := logicalBankTables[rand.IntN(3)], logicalBankTables[rand.IntN(3)]
		fromID, toID := 1+rand.IntN(logicalBankAccounts), 1+rand.IntN(logicalBankAccounts)
		amount := 1 + rand.IntN(50)
		stmts := []string{
			"START TRANSACTION",
			fmt.Sprintf("UPDATE bank.%s SET balance = balance - %d WHERE id = %d", from, amount, fromID),
			fmt.Sprintf("UPDATE bank.%s SET balance = balance + %d WHERE id = %d", to, amount, toID),
			fmt.Sprintf("INSERT INTO bank.ledger (src_t, src_id, dst_t, dst_id, amount) VALUES ('%s', %d, '%s', %d, %d)",
				from, fromID, to, toID, amount),
			"COMMIT",
		}
		var err error
		for _, s := range stmts {
			if _, err = conn.ExecContext(ctx, s); err != nil {
				break
			}
		}
		if err != nil {
			if mysqlErrno(err) == 1213 { // deadlock: rolled back, try another
				continue
			}
			return err
		}
		commits.Add(1)
	}
}

// TestLogicalConsistencyUnderLoad takes a snapshot while transfers commit,
// loads it, checks that the books balance (a torn snapshot would not), then
// replays the source's binlog from the manifest's position and compares
// every table's checksum with the source's: equal proves the snapshot was
// exactly its recorded position.
func TestLogicalConsistencyUnderLoad(t *testing.T) {
	t.Parallel()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	// The ledger's ids come from a sequence whose small cache is refilled
	// (its row written) again and again while the snapshot runs.
	logicalExec(t, src, "CREATE DATABASE bank",
		"CREATE SEQUENCE bank.ledger_id CACHE 5",
		"CREATE TABLE bank.ledger (id BIGINT NOT NULL DEFAULT NEXTVAL(bank.ledger_id) PRIMARY KEY, src_t VARCHAR(10) NOT NULL, src_id INT NOT NULL, "+
			"dst_t VARCHAR(10) NOT NULL, dst_id INT NOT NULL, amount INT NOT NULL, at DATETIME(6) NOT NULL DEFAULT NOW(6))")
	for _, tbl := range logicalBankTables {
		logicalExec(t, src,
			fmt.Sprintf("CREATE TABLE bank.%s (id INT PRIMARY KEY, balance BIGINT NOT NULL)", tbl),
			fmt.Sprintf("INSERT INTO bank.%s SELECT seq, %d FROM bank.seq_1_to_%d", tbl, logicalBankStart, logicalBankAccounts),
			"ANALYZE TABLE bank."+tbl)
	}

	stop := make(chan struct{})
	var commits atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			if err := logicalTransfers(t.Context(), src, t, stop, &commits); err != nil {
				errs <- err
			}
		})
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopWriters()
	waitCommits := func(want int64) {
		t.Helper()
		testbed.Eventually(t, 30*time.Second, func() error {
			if got := commits.Load(); got < want {
				return fmt.Errorf("the writers have committed %d transfers, want %d", got, want)
			}
			return nil
		})
	}
	waitCommits(50) // the load is on when the snapshot starts

	st := storagetest.NewMemory()
	before := commits.Load()
	m, err := TakeLogical(t.Context(), LogicalOptions{
		Source:    logicalConfig(t, src.PitrDSN()),
		Storage:   st,
		Logger:    logicalLogger(t),
		Threads:   4,
		ChunkRows: 40, // several chunks per table, read at different times
		SkipUsers: true,
	})
	if err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	during := commits.Load() - before
	waitCommits(before + during + 50) // and the binlog goes on past the snapshot
	stopWriters()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("writes blocked %s; %d commits during the snapshot, %d in all; position %s gtid %s",
		m.WritesBlocked, during, commits.Load(), m.Binlog, m.GTIDSet)
	if during == 0 {
		t.Error("no transaction committed while the snapshot ran: the test proves nothing")
	}
	if m.WritesBlocked <= 0 || m.WritesBlocked > 2*time.Second {
		t.Errorf("WritesBlocked = %s, want small and positive", m.WritesBlocked)
	}

	if err := LoadLogical(t.Context(), st, m, logicalConfig(t, dst.DSN()), LoadOptions{Threads: 4}); err != nil {
		t.Fatalf("LoadLogical: %v", err)
	}
	b := dst.DB(t)
	var total int64
	q := "SELECT (SELECT SUM(balance) FROM bank.acct_a) + (SELECT SUM(balance) FROM bank.acct_b) + (SELECT SUM(balance) FROM bank.acct_c)"
	if err := b.QueryRowContext(t.Context(), q).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if want := int64(len(logicalBankTables) * logicalBankAccounts * logicalBankStart); total != want {
		t.Errorf("loaded snapshot: total balance %d, want %d (torn snapshot)", total, want)
	}
	// Every balance agrees with the ledger: the ledger and the accounts
	// were read as of the same instant.
	for _, tbl := range logicalBankTables {
		var wrong int
		q := fmt.Sprintf("SELECT COUNT(*) FROM bank.%[1]s a WHERE a.balance != %[2]d "+
			"- COALESCE((SELECT SUM(amount) FROM bank.ledger WHERE src_t = '%[1]s' AND src_id = a.id), 0) "+
			"+ COALESCE((SELECT SUM(amount) FROM bank.ledger WHERE dst_t = '%[1]s' AND dst_id = a.id), 0)", tbl, logicalBankStart)
		if err := b.QueryRowContext(t.Context(), q).Scan(&wrong); err != nil {
			t.Fatal(err)
		}
		if wrong != 0 {
			t.Errorf("loaded snapshot: %d accounts of %s disagree with the ledger", wrong, tbl)
		}
	}

	// The loaded sequence hands out no id the loaded ledger holds.
	var next, maxID int64
	if err := b.QueryRowContext(t.Context(), "SELECT next_not_cached_value, (SELECT COALESCE(MAX(id), 0) FROM bank.ledger) FROM bank.ledger_id").Scan(&next, &maxID); err != nil {
		t.Fatal(err)
	}
	if next <= maxID {
		t.Errorf("loaded sequence's next value %d, the loaded ledger holds id %d", next, maxID)
	}

	src.ReplayBinlog(t, m.Binlog.File, m.Binlog.Pos, dst.Port())
	logicalCompareChecksums(t, src.DB(t), b)
	if got, want := sequenceRow(t, b, "bank.ledger_id"), sequenceRow(t, src.DB(t), "bank.ledger_id"); got != want {
		t.Errorf("sequence after the replay:\n got %s\nwant %s", got, want)
	}
}
