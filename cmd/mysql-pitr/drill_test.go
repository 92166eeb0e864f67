package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// metric returns the value of an unlabelled metric on the agent's /metrics.
func (p *agentProc) metric(name string) (float64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.listen + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// shortTempDir is a temporary directory with a path short enough for a
// temporary server's socket below it.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type drillListDoc struct {
	LastDrill *struct {
		Success  bool   `json:"success"`
		Reason   string `json:"reason"`
		Snapshot string `json:"snapshot"`
	} `json:"last_drill"`
	LastSuccessfulDrill *struct {
		Snapshot string `json:"snapshot"`
	} `json:"last_successful_drill"`
}

func drillList(t *testing.T, storageURL string) (drillListDoc, string) {
	t.Helper()
	out, errs, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d: %s", code, errs)
	}
	var d drillListDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	text, errs, code := runCLI(t, t.Context(), "list", "--storage", storageURL)
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	return d, text
}

// TestDrillCommandAndSchedule runs drills from the agent's --drill-schedule
// and from the drill command, and checks what list, /status and /metrics
// report, for a restorable archive and for one that is not.
func TestDrillCommandAndSchedule(t *testing.T) {
	t.Run("an archive without a snapshot fails the drill", func(t *testing.T) {
		dir := t.TempDir()
		storageURL := "file://" + dir
		st, err := file.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := catalog.EnsureArchive(t.Context(), st, "test"); err != nil {
			t.Fatal(err)
		}
		// Without --record the drill only reads.
		before := treeOf(t, dir)
		out, stderr, code := runCLI(t, t.Context(), "drill", "--storage", storageURL, "--scratch", shortTempDir(t), "--log-level", "error")
		if code != 1 || !strings.Contains(stderr, "restore drill failed: restore refused: the archive holds no complete snapshot") ||
			!strings.Contains(out, "FAILED") {
			t.Fatalf("drill: exit %d, stdout:\n%s\nstderr: %s; want exit 1 naming the missing snapshot", code, out, stderr)
		}
		if after := treeOf(t, dir); !slices.Equal(before, after) {
			t.Fatalf("drill without --record changed the archive:\n%v\nto\n%v", before, after)
		}
		out, stderr, code = runCLI(t, t.Context(), "drill", "--record", "--storage", storageURL, "--scratch", shortTempDir(t), "--log-level", "error")
		if code != 1 || !strings.Contains(out, "FAILED") {
			t.Fatalf("drill --record: exit %d, stdout:\n%s\nstderr: %s; want exit 1", code, out, stderr)
		}
		d, text := drillList(t, storageURL)
		if d.LastDrill == nil || d.LastDrill.Success || !strings.Contains(d.LastDrill.Reason, "no complete snapshot") || d.LastSuccessfulDrill != nil {
			t.Errorf("list --json: %+v; want the failed drill and no successful one", d)
		}
		if !strings.Contains(text, "last drill: FAILED") || !strings.Contains(text, "last passing drill: none") {
			t.Errorf("list:\n%s", text)
		}
	})
	for _, bad := range [][]string{{"--to", "2026-11-27T10:00:00"}, {"--threads", "0"}} {
		_, stderr, code := runCLI(t, t.Context(), append([]string{"drill", "--storage", "file:///tmp"}, bad...)...)
		if code != 2 {
			t.Errorf("drill %v: exit %d (%s), want 2", bad, code, stderr)
		}
	}
	_, stderr, code := runCLI(t, t.Context(), "agent", "--listen", "", "--dsn", "pitr@tcp(127.0.0.1:1)/", "--storage", "file:///tmp",
		"--drill-schedule", "every day")
	if code != 2 || !strings.Contains(stderr, `--drill-schedule "every day" is not a valid schedule`) {
		t.Errorf("agent with a bad --drill-schedule: exit %d, %s", code, stderr)
	}

	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run("the agent's schedule and the command pass on a restorable archive/"+f.String(), func(t *testing.T) {
			drillPasses(t, f)
		})
	}
}

// drillPasses runs scheduled drills and the drill command against an
// archive of a server of release f, which they restore with f's programs.
func drillPasses(t *testing.T, f testbed.Flavor) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	storageURL := "file://" + t.TempDir()
	env := []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}
	if dir := f.BinDir(); dir != "" {
		env = append(env, "MYSQL_PITR_SERVER_BINDIR="+dir)
		t.Setenv("MYSQL_PITR_SERVER_BINDIR", dir)
	}
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
	db.Exec(t, "INSERT INTO app.t VALUES (1, 'a'), (2, 'b')")
	a := startAgent(t, env, "--dsn", dsn, "--storage", storageURL, "--spool-dir", t.TempDir(), "--flush-interval", "100ms",
		"--drill-schedule", "@every 1s", "--drill-scratch", shortTempDir(t), "--drill-threads", "1")
	a.waitReady(30 * time.Second)
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	if out, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"); code != 0 {
		t.Fatalf("snapshot: exit %d: %s %s", code, out, stderr)
	}
	db.Exec(t, "INSERT INTO app.t VALUES (3, 'after')")
	a.waitDurable(db, 30*time.Second)
	since := float64(time.Now().Unix())

	// Scheduled drills before the snapshot failed; one after it passes.
	var restored, duration float64
	testbed.Eventually(t, 90*time.Second, func() error {
		if last, _ := a.metric("mysqlpitr_last_drill_success_timestamp_seconds"); last < since {
			return fmt.Errorf("no drill passed yet (mysqlpitr_last_drill_success_timestamp_seconds = %v)", last)
		}
		return nil
	})
	restored, _ = a.metric("mysqlpitr_drill_restored_bytes")
	duration, _ = a.metric("mysqlpitr_drill_duration_seconds")
	if restored <= 0 || duration <= 0 {
		t.Errorf("mysqlpitr_drill_restored_bytes = %v, mysqlpitr_drill_duration_seconds = %v; want both positive", restored, duration)
	}
	var st struct {
		Ready  bool `json:"ready"`
		Drills *struct {
			Last *struct {
				Success      bool `json:"success"`
				Transactions int  `json:"transactions_replayed"`
			} `json:"last"`
			LastSuccess time.Time `json:"last_success"`
		} `json:"drills"`
	}
	resp, err := http.Get("http://" + a.listen + "/status")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if !st.Ready || st.Drills == nil || st.Drills.LastSuccess.IsZero() {
		t.Errorf("/status: ready %v, drills %+v; want ready with a successful drill", st.Ready, st.Drills)
	}
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent exit: %v", err)
	}
	if !strings.Contains(a.logs(), `"component":"drill"`) {
		t.Errorf("the agent's log has no drill lines")
	}

	out, stderr, code := runCLI(t, t.Context(), "drill", "--record", "--storage", storageURL, "--scratch", shortTempDir(t), "--threads", "1", "--log-level", "warn")
	if code != 0 || !strings.Contains(out, "drill:        PASSED") || !strings.Contains(out, "1 tables checked") {
		t.Fatalf("drill: exit %d, stdout:\n%s\nstderr: %s", code, out, stderr)
	}
	t.Logf("drill:\n%s", out)
	d, text := drillList(t, storageURL)
	if d.LastDrill == nil || !d.LastDrill.Success || d.LastSuccessfulDrill == nil || d.LastSuccessfulDrill.Snapshot != d.LastDrill.Snapshot {
		t.Errorf("list --json: %+v; want the passing drill as last and last successful", d)
	}
	if !strings.Contains(text, "last drill: PASSED") {
		t.Errorf("list:\n%s", text)
	}
}
