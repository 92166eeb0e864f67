package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// rpoRounds is how many times TestRPOZeroAfterServerLoss loses a server
// for each flavor and level (MYSQL_PITR_RPO_ROUNDS, default 1; the
// issue's proof runs 20).
func rpoRounds(t *testing.T) int {
	n := 1
	if v := os.Getenv("MYSQL_PITR_RPO_ROUNDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("MYSQL_PITR_RPO_ROUNDS=%q: want a positive number", v)
		}
	}
	return n
}

// TestRPOZeroAfterServerLoss runs the agent as the semi-synchronous replica
// of a server under a sysbench write load and writers that record every
// commit the server acknowledged, kills the server with SIGKILL and
// deletes its datadir. With durable-storage the agent is killed too and
// its spool deleted (the pod, its node and its volumes are lost); with
// durable-spool the agent keeps its spool and is stopped. A restore to
// latest holds every acknowledged commit.
func TestRPOZeroAfterServerLoss(t *testing.T) {
	rounds := rpoRounds(t)
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		for _, mode := range []string{"durable-storage", "durable-spool", "durable-spool+agent-crash"} {
			t.Run(f.String()+"/"+mode, func(t *testing.T) {
				var acked, rows int
				for i := range rounds {
					a, r := rpoZeroRound(t, f, mode)
					acked += a
					rows += r
					t.Logf("round %d: %d commits acknowledged, %d of them and %d more restored", i+1, a, a, r-a)
				}
				t.Logf("%d rounds: %d acknowledged commits, none missing", rounds, acked)
			})
		}
	}
}

// ackStatus is the ack section of the agent's /status.
type ackStatus struct {
	RPOZero bool    `json:"rpo_zero"`
	Problem string  `json:"problem"`
	P50     float64 `json:"latency_p50_seconds"`
	P99     float64 `json:"latency_p99_seconds"`
}

// waitRPOZero waits until the agent says RPO 0 holds.
func (p *agentProc) waitRPOZero() {
	p.t.Helper()
	testbed.Eventually(p.t, 30*time.Second, func() error {
		st, err := p.ackStatus()
		if err == nil && !st.RPOZero {
			err = fmt.Errorf("RPO 0 does not hold yet: %s", st.Problem)
		}
		return err
	})
}

func (p *agentProc) ackStatus() (ackStatus, error) {
	var st struct {
		Binlog struct {
			Ack *ackStatus `json:"ack"`
		} `json:"binlog"`
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.listen + "/status")
	if err != nil {
		return ackStatus{}, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return ackStatus{}, err
	}
	if st.Binlog.Ack == nil {
		return ackStatus{}, errors.New("/status has no ack section")
	}
	return *st.Binlog.Ack, nil
}

// rpoZeroRound loses one server and checks the restore; it returns how
// many commits were acknowledged and how many rows the restore holds. Mode
// durable-spool+agent-crash also kills the agent with SIGKILL under the
// load, and starts it again on its spool, before the server is lost.
func rpoZeroRound(t *testing.T, f testbed.Flavor, variant string) (acked, restored int) {
	mode, crash := strings.CutSuffix(variant, "+agent-crash")
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	// The server's side, as the chart sets it (its test starts servers
	// with those lines): AFTER_SYNC, and a timeout longer than the test.
	if f.Family() == "mysql" {
		db.Exec(t, "INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'")
		db.Exec(t, "SET GLOBAL rpl_semi_sync_source_enabled = ON, rpl_semi_sync_source_wait_point = AFTER_SYNC, rpl_semi_sync_source_timeout = 600000")
	} else {
		db.Exec(t, "SET GLOBAL rpl_semi_sync_master_enabled = ON, rpl_semi_sync_master_wait_point = AFTER_SYNC, rpl_semi_sync_master_timeout = 600000")
	}
	storageURL := "file://" + t.TempDir()
	spool := t.TempDir()
	env := []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}
	if dir := f.BinDir(); dir != "" {
		t.Setenv("MYSQL_PITR_SERVER_BINDIR", dir)
	}
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	agentArgs := []string{"--dsn", dsn, "--storage", storageURL, "--spool-dir", spool, "--server-id", "4245", "--ack", mode,
		"--flush-interval", "1s"}
	a := startAgent(t, env, agentArgs...)
	a.waitReady(30 * time.Second)
	a.waitRPOZero()

	const writers = 4
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.acks (w INT, seq INT, PRIMARY KEY (w, seq))")
	db.Exec(t, "CREATE TABLE app.counts (w INT PRIMARY KEY, n INT NOT NULL)")
	for w := range writers {
		db.Exec(t, "INSERT INTO app.counts VALUES (?, 0)", w)
	}
	sb := startSysbench(t, db)
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}

	// The writers record a commit only once the server said it committed.
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := make([][]int, writers)
	for w := range writers {
		wg.Go(func() {
			conn := db.DB(t)
			for seq := 0; ; seq++ {
				if err := recordCommit(conn, w, seq); err != nil {
					return // the server is gone
				}
				mu.Lock()
				got[w] = append(got[w], seq)
				mu.Unlock()
			}
		})
	}
	commits := func(n int) {
		testbed.Eventually(t, 60*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if have := len(got[0]) + len(got[writers-1]); have < n {
				return fmt.Errorf("%d commits so far", have)
			}
			return nil
		})
	}
	commits(100)
	if crash {
		// Commits wait (for the server's timeout, at most) until the agent
		// is back: what it acknowledged is in its spool's open segment.
		a.cmd.Process.Kill()
		<-a.done
		a.done <- nil
		a = startAgent(t, env, agentArgs...)
		a.waitReady(30 * time.Second)
		a.waitRPOZero()
		commits(200)
	}
	if err := db.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	sb.stop()
	st, err := a.ackStatus()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: acknowledgement latency p50 %.2f ms, p99 %.2f ms", mode, st.P50*1000, st.P99*1000)
	if mode == "durable-storage" {
		// The pod, its node and its volumes are lost with the server.
		a.cmd.Process.Kill()
		<-a.done
		a.done <- nil
		if err := os.RemoveAll(spool); err != nil {
			t.Fatal(err)
		}
	} else if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent: %v", err)
	}
	for _, dir := range []string{db.DataDir(), db.BinlogDir()} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}

	datadir := filepath.Join(t.TempDir(), "data")
	if _, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", "latest", "--datadir", datadir, "--threads", "1"); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	return checkAcknowledged(t, f, datadir, got)
}

// recordCommit commits one transaction of writer w, as an application's
// would: a row of its own and its counter.
func recordCommit(db *sql.DB, w, seq int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO app.acks VALUES (?, ?)", w, seq); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE app.counts SET n = n + 1 WHERE w = ?", w); err != nil {
		return err
	}
	return tx.Commit()
}

// checkAcknowledged starts a server on the restored datadir and checks that
// it holds every commit in got; it returns how many that is and how many
// rows the restore holds.
func checkAcknowledged(t *testing.T, f testbed.Flavor, datadir string, got [][]int) (acked, rows int) {
	t.Helper()
	restored := testbed.NewMariaDBOn(t, testbed.MariaDBOptions{Flavor: f, ServerID: 77}, datadir)
	conn := restored.DB(t)
	have := map[[2]int]bool{}
	r, err := conn.QueryContext(t.Context(), "SELECT w, seq FROM app.acks")
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var k [2]int
		if err := r.Scan(&k[0], &k[1]); err != nil {
			t.Fatal(err)
		}
		have[k] = true
	}
	r.Close()
	var missing []string
	for w, seqs := range got {
		for _, seq := range seqs {
			if !have[[2]int{w, seq}] {
				missing = append(missing, fmt.Sprintf("%d/%d", w, seq))
			}
		}
		acked += len(seqs)
		var n int
		if err := conn.QueryRowContext(t.Context(), "SELECT n FROM app.counts WHERE w = ?", w).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < len(seqs) {
			t.Errorf("writer %d: counter %d in the restore, %d commits acknowledged", w, n, len(seqs))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged commits are missing from the restore, e.g. %v", len(missing), acked, missing[:min(5, len(missing))])
	}
	return acked, len(have)
}

// sysbenchRun is oltp_write_only running against a test server.
type sysbenchRun struct {
	cmd  *exec.Cmd
	done chan error
}

// startSysbench prepares a small sysbench schema and runs oltp_write_only
// on it until stop.
func startSysbench(t *testing.T, db *testbed.MariaDB) *sysbenchRun {
	t.Helper()
	bin := testbed.Binary(t, "sysbench", "scripts/setup.sh installs it")
	db.Exec(t, "CREATE DATABASE sbtest")
	args := []string{"oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(db.Port()),
		"--mysql-user=root", "--mysql-db=sbtest", "--tables=2", "--table-size=1000", "--threads=2"}
	if out, err := exec.CommandContext(t.Context(), bin, append(args, "prepare")...).CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append(args, "--time=600", "run")...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &sysbenchRun{cmd: cmd, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(r.stop)
	return r
}

// stop ends the run; its exit status does not matter once its server is
// killed.
func (r *sysbenchRun) stop() {
	if r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		<-r.done
		r.done <- nil
	}
}
