package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

type listDoc struct {
	Binlogs []struct {
		Timeline uint32 `json:"timeline"`
		Reason   string `json:"reason"`
		Holes    []any  `json:"holes"`
		Segments int    `json:"segments"`
	} `json:"binlogs"`
	Gaps []struct {
		Reason  string   `json:"reason"`
		Missing []string `json:"missing"`
		Detail  string   `json:"detail"`
	} `json:"gaps"`
}

func listJSON(t *testing.T, storageURL string) listDoc {
	t.Helper()
	out, errs, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--json")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	var doc listDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return doc
}

// writeLoad writes small transactions, DDL, a 20 MB transaction and a
// FLUSH BINARY LOGS until stop is closed; holding pause (when not nil)
// pauses it between two of them.
func writeLoad(t *testing.T, db *testbed.MariaDB, stop <-chan struct{}, pause *sync.Mutex) (done chan struct{}) {
	done = make(chan struct{})
	sqlDB := db.DB(t)
	exec := func(q string, args ...any) {
		if _, err := sqlDB.Exec(q, args...); err != nil {
			t.Errorf("load: %s: %v", q, err)
		}
	}
	exec("CREATE DATABASE IF NOT EXISTS app")
	exec("CREATE TABLE app.orders (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(200), body LONGBLOB)")
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if pause != nil {
				pause.Lock()
			}
			switch {
			case i == 40:
				big := make([]byte, 20<<20)
				rand.Read(big)
				exec("INSERT INTO app.orders (note, body) VALUES ('big', ?)", big)
			case i == 80:
				exec("FLUSH BINARY LOGS")
			case i%50 == 25:
				exec(fmt.Sprintf("CREATE TABLE app.t%d (id INT PRIMARY KEY, v TEXT)", i))
				exec(fmt.Sprintf("ALTER TABLE app.t%d ADD COLUMN w INT", i))
			default:
				tx, err := sqlDB.Begin()
				if err != nil {
					t.Errorf("load: %v", err)
					if pause != nil {
						pause.Unlock()
					}
					return
				}
				for j := 0; j < 5; j++ {
					tx.Exec("INSERT INTO app.orders (note) VALUES (?)", fmt.Sprintf("order %d/%d", i, j))
				}
				tx.Exec("UPDATE app.orders SET note = CONCAT(note, '!') WHERE id = ?", i)
				if err := tx.Commit(); err != nil {
					t.Errorf("load: commit: %v", err)
				}
			}
			if pause != nil {
				pause.Unlock()
			}
			// Pacing, not waiting: a steady load the agent can keep up with.
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return done
}

// TestAgentSurvivesKillsAndRestartsByteForByte runs the agent binary on
// each test server release under a load with DDL, a 20 MB transaction,
// FLUSH BINARY LOGS and 1 MiB binlog files, killing it (SIGKILL or
// SIGTERM) six times and the server (kill -9) twice while it runs: the
// archive, fetched back, is byte-identical to the server's binlog files,
// on one timeline without a hole.
func TestAgentSurvivesKillsAndRestartsByteForByte(t *testing.T) {
	for _, f := range testbed.Servers(t) {
		t.Run(f.String(), func(t *testing.T) { agentSurvivesKills(t, f) })
	}
}

func agentSurvivesKills(t *testing.T, f testbed.Flavor) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, MaxBinlogSize: 1 << 20})
	s3 := testbed.StartS3(t)
	storageURL := s3.URL("cluster-a")
	env := append(s3.Env(), "MYSQL_PITR_PASSWORD="+db.PitrPassword())
	s3.SetEnv(t)
	spool := t.TempDir()
	args := []string{"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port()), "--storage", storageURL,
		"--spool-dir", spool, "--agent-id", "sidecar-0", "--flush-interval", "200ms", "--server-id", "4242"}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	stop := make(chan struct{})
	var pause sync.Mutex
	loadDone := writeLoad(t, db, stop, &pause)
	for round := 0; round < 6; round++ {
		a := startAgent(t, env, args...)
		a.waitReady(30 * time.Second)
		// The scenario: the agent runs for a random while under the load
		// before it is killed; the kill lands wherever the agent is then.
		time.Sleep(time.Duration(200+rng.IntN(1500)) * time.Millisecond)
		if round == 1 || round == 4 {
			// The server crashes under the running agent, which
			// reconnects once it is back.
			pause.Lock()
			if err := db.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := db.Start(); err != nil {
				t.Fatal(err)
			}
			pause.Unlock()
			// The scenario again: a random while after the reconnect.
			time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		}
		if round%2 == 0 {
			a.signal(syscall.SIGKILL)
		} else if err := a.signal(syscall.SIGTERM); err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, a.logs())
		}
	}
	close(stop)
	<-loadDone
	a := startAgent(t, env, args...)
	a.waitReady(30 * time.Second)
	a.waitDurable(db, 60*time.Second)
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("final agent: %v", err)
	}
	compareArchive(t, storageURL, db)
	doc := listJSON(t, storageURL)
	if len(doc.Binlogs) != 1 || len(doc.Gaps) != 0 || len(doc.Binlogs[0].Holes) != 0 {
		t.Fatalf("want one whole timeline and no gap, got %+v", doc)
	}
	if !strings.Contains(a.logs(), "resuming archive") {
		t.Error("the final agent did not resume the archive")
	}
}

// TestAgentRecordsPurgedBinlogAsGap purges, on each test server release,
// binlog files the agent never archived while it was down: the agent
// records the gap and begins a new timeline, list and verify name it with
// the GTIDs it lacks, and verify finds a damaged segment.
func TestAgentRecordsPurgedBinlogAsGap(t *testing.T) {
	for _, f := range testbed.Servers(t) {
		t.Run(f.String(), func(t *testing.T) { agentRecordsPurgedGap(t, f) })
	}
}

func agentRecordsPurgedGap(t *testing.T, f testbed.Flavor) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	storageURL := "file://" + t.TempDir()
	env := []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}
	args := []string{"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port()), "--storage", storageURL,
		"--spool-dir", t.TempDir(), "--flush-interval", "100ms"}
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	a := startAgent(t, env, args...)
	a.waitReady(30 * time.Second)
	db.Exec(t, "INSERT INTO app.t VALUES (1)")
	a.waitDurable(db, 30*time.Second)
	a.signal(syscall.SIGTERM)

	// While the agent is down the server moves on and purges what it never archived.
	db.Exec(t, "INSERT INTO app.t VALUES (2)")
	db.Exec(t, "FLUSH BINARY LOGS")
	db.Exec(t, "INSERT INTO app.t VALUES (3)")
	db.Exec(t, "FLUSH BINARY LOGS")
	purgeAll(t, db)
	db.Exec(t, "INSERT INTO app.t VALUES (4)")

	a = startAgent(t, env, args...)
	a.waitReady(30 * time.Second)
	a.waitDurable(db, 30*time.Second)
	a.signal(syscall.SIGTERM)
	doc := listJSON(t, storageURL)
	if len(doc.Gaps) != 1 || doc.Gaps[0].Reason != "purged" || len(doc.Binlogs) != 2 {
		t.Fatalf("want one purged gap between two timelines, got %+v", doc)
	}
	if len(doc.Gaps[0].Missing) < 2 {
		t.Errorf("gap names %v as missing, want the purged files", doc.Gaps[0].Missing)
	}
	if !strings.Contains(a.logs(), "GAP in the archive") {
		t.Errorf("the agent did not log the gap:\n%s", a.logs())
	}
	out, _, _ := runCLI(t, t.Context(), "list", "--storage", storageURL)
	if !strings.Contains(out, "GAP between timeline 000001") {
		t.Errorf("list does not show the gap:\n%s", out)
	}
	compareArchive(t, storageURL, db)

	// A recorded gap is history the archive says it lacks, not damage.
	out, stderr, code := runCLI(t, t.Context(), "verify", "--storage", storageURL)
	if code != 0 || !strings.Contains(out, "gap between timeline 1 and 2: purged") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, stderr)
	}
	// It names the transactions lost with the purged files, INSERT 2 and
	// 3: 0-1-N..0-1-N+1 on MariaDB, uuid:N..uuid:N+1 on MySQL.
	if m := regexp.MustCompile(`GTIDs (\S*?[-:])(\d+)\.\.(\S*?[-:])(\d+) missing`).FindStringSubmatch(out); m == nil {
		t.Errorf("verify does not name the GTIDs the gap lacks:\n%s", out)
	} else if lo, _ := strconv.Atoi(m[2]); lo < 1 || m[1] != m[3] || m[4] != strconv.Itoa(lo+1) {
		t.Errorf("verify names GTIDs %s%s..%s%s as missing, want the two purged inserts:\n%s", m[1], m[2], m[3], m[4], out)
	}
	// A damaged object is.
	segs, _ := filepath.Glob(filepath.Join(strings.TrimPrefix(storageURL, "file://"), "binlog", "000002", "*", "*.zst"))
	if len(segs) == 0 {
		t.Fatal("no segment of timeline 2 found")
	}
	if err := os.Truncate(segs[0], 10); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = runCLI(t, t.Context(), "verify", "--storage", storageURL)
	if code != 1 || !strings.Contains(out, "bad object binlog/000002/") || !strings.Contains(out, ": truncated: ") || !strings.Contains(stderr, "damaged") {
		t.Fatalf("verify of a truncated segment: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = runCLI(t, t.Context(), "verify", "--storage", storageURL, "--json")
	var report struct {
		Damaged bool `json:"damaged"`
		Objects []struct {
			Key  string `json:"key"`
			Kind string `json:"kind"`
		} `json:"objects"`
		Gaps []struct {
			MissingGTIDs []string `json:"missing_gtids"`
		} `json:"gaps"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != 1 {
		t.Fatalf("verify --json: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	rel, _ := filepath.Rel(strings.TrimPrefix(storageURL, "file://"), segs[0])
	if !report.Damaged || len(report.Objects) != 1 || report.Objects[0].Key != filepath.ToSlash(rel) || report.Objects[0].Kind != "truncated" {
		t.Errorf("verify --json names %+v, want %s truncated", report, rel)
	}
}

// purgeAll purges every binlog but the current one. MariaDB keeps files a
// crash recovery still needs until InnoDB's checkpoint passes them, so it retries.
func purgeAll(t *testing.T, db *testbed.MariaDB) {
	t.Helper()
	testbed.Eventually(t, 20*time.Second, func() error {
		current, _ := masterStatus(t, db)
		db.Exec(t, "PURGE BINARY LOGS TO '"+current+"'")
		if files := db.BinlogFiles(t); len(files) > 1 {
			db.Exec(t, "FLUSH TABLES")
			return fmt.Errorf("could not purge binlogs: %v remain", files)
		}
		return nil
	})
}

func TestSecondAgentRefusesToStart(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	storageURL := "file://" + t.TempDir()
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	a := startAgent(t, nil, "--dsn", dsn, "--storage", storageURL, "--spool-dir", t.TempDir(), "--agent-id", "pod-a")
	a.waitReady(30 * time.Second)
	_, stderr, code := runCLI(t, t.Context(), "agent", "--dsn", dsn, "--storage", storageURL, "--spool-dir", t.TempDir(),
		"--agent-id", "pod-b", "--listen", "")
	if code != 1 || !strings.Contains(stderr, "pod-a") || !strings.Contains(stderr, "lease") {
		t.Fatalf("second agent: exit %d, stderr %q; want a refusal naming pod-a", code, stderr)
	}
}

func TestBadInputFailsWithOneLine(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	noBinlog := testbed.NewMariaDB(t, testbed.MariaDBOptions{NoBinlog: true, ServerID: 2})
	s3 := testbed.StartS3(t)
	s3.SetEnv(t)
	const secret = "not-the-password-123"
	dsnFor := func(m *testbed.MariaDB) string {
		return fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, m.Port())
	}
	file := "file://" + t.TempDir()
	cases := []struct {
		name     string
		password string
		args     []string
		code     int
		want     string
	}{
		{"unreachable server", db.PitrPassword(), []string{"--dsn", "pitr@tcp(127.0.0.1:1)/", "--storage", file, "--connect-timeout", "1s"}, 1, "unreachable"},
		{"wrong password", secret, []string{"--dsn", dsnFor(db), "--storage", file}, 1, "access denied"},
		{"binlog disabled", noBinlog.PitrPassword(), []string{"--dsn", dsnFor(noBinlog), "--storage", file}, 1, "binary logging is disabled"},
		{"malformed storage URL", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", "ftp://host/x"}, 2, "unknown scheme"},
		{"file URL without path", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", "file://relative"}, 2, "absolute path"},
		{"s3 URL without bucket", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", "s3://"}, 2, "bucket"},
		{"unknown bucket", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", strings.Replace(s3.URL("x"), s3.Bucket, "no-such-bucket", 1)}, 1, "no-such-bucket"},
		{"missing dsn", db.PitrPassword(), []string{"--storage", file}, 2, "--dsn is required"},
		{"bad flush interval", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", file, "--flush-interval", "1ns"}, 2, "--flush-interval"},
		{"unknown ack mode", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", file, "--ack", "durable"}, 2, "--ack: unknown acknowledgement mode"},
		{"follow without a port", db.PitrPassword(), []string{"--dsn", dsnFor(db), "--storage", file, "--follow", "db-1.db"}, 2, `--follow: "db-1.db" is not host:port`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("MYSQL_PITR_PASSWORD", c.password)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			args := append([]string{"agent", "--listen", "", "--spool-dir", t.TempDir()}, c.args...)
			_, stderr, code := runCLI(t, ctx, args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code != c.code || !strings.HasPrefix(last, "mysql-pitr: ") || !strings.Contains(strings.ToLower(last), strings.ToLower(c.want)) {
				t.Fatalf("exit %d, last line %q; want exit %d and a line mentioning %q", code, last, c.code, c.want)
			}
			if strings.Contains(stderr, secret) || strings.Contains(stderr, db.PitrPassword()) {
				t.Fatalf("a password leaked into the output: %q", stderr)
			}
		})
	}
}

func TestStatementFormatIsAWarning(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{BinlogFormat: "STATEMENT"})
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, stderr, code := runCLI(t, ctx, "agent", "--listen", "", "--log-format", "text", "--spool-dir", t.TempDir(),
		"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port()), "--storage", "file://"+t.TempDir())
	if code != 0 || !strings.Contains(stderr, "binlog_format=STATEMENT") {
		t.Fatalf("exit %d; want the agent to run and warn about binlog_format:\n%s", code, stderr)
	}
}

var _ sync.Mutex
