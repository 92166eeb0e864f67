package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestScheduleAndRetentionBadInput(t *testing.T) {
	file := "file://" + t.TempDir()
	agent := []string{"agent", "--listen", "", "--dsn", "pitr@tcp(127.0.0.1:1)/", "--storage", file, "--spool-dir", t.TempDir()}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"cron with a bad minute", append(agent, "--schedule", "61 * * * *"), `--schedule "61 * * * *" is not a valid schedule`},
		{"cron with too few fields", append(agent, "--schedule", "0 3 * *"), "expected exactly 5 fields"},
		{"cron that is not one", append(agent, "--schedule", "daily please"), `--schedule "daily please"`},
		{"unknown descriptor", append(agent, "--schedule", "@fortnightly"), "@fortnightly"},
		{"time zone without expression", append(agent, "--schedule", "CRON_TZ=UTC"), "time zone must be followed"},
		{"unknown snapshot method", append(agent, "--schedule", "@daily", "--snapshot-method", "zfs"), `--snapshot-method "zfs"`},
		{"zero snapshot threads", append(agent, "--schedule", "@daily", "--snapshot-threads", "0"), "--snapshot-threads 0"},
		{"agent keeping no snapshot", append(agent, "--schedule", "@daily", "--keep-snapshots", "0"), "--keep-snapshots 0: keep at least 1"},
		{"agent negative keep-within", append(agent, "--schedule", "@daily", "--keep-within", "-24h"), "--keep-within -24h0m0s"},
		{"agent retention without schedule", append(agent, "--keep-snapshots", "3"), "add --schedule"},
		{"agent negative compact interval", append(agent, "--compact-interval", "-1m"), "--compact-interval -1m0s is negative"},
		{"snapshot with zero threads", []string{"snapshot", "--dsn", "pitr@tcp(127.0.0.1:1)/", "--storage", file, "--threads", "0"}, "--threads 0"},
		{"prune keeping no snapshot", []string{"prune", "--storage", file, "--keep-snapshots", "0"}, "--keep-snapshots 0"},
		{"prune with a negative count", []string{"prune", "--storage", file, "--keep-snapshots", "-2"}, "--keep-snapshots -2"},
		{"prune with a negative duration", []string{"prune", "--storage", file, "--keep-within", "-1h"}, "--keep-within -1h0m0s"},
		{"prune with a bad duration", []string{"prune", "--storage", file, "--keep-within", "a week"}, `"a week" is not a duration`},
		{"prune with a negative grace", []string{"prune", "--storage", file, "--keep-snapshots", "1", "--orphan-grace", "-1h"}, "--orphan-grace"},
		{"prune without a policy", []string{"prune", "--storage", file}, "say what to keep"},
		{"prune without storage", []string{"prune", "--keep-snapshots", "1"}, "--storage is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, t.Context(), c.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code != 2 || !strings.HasPrefix(last, "mysql-pitr: ") || !strings.Contains(last, c.want) {
				t.Fatalf("exit %d, last line %q; want exit 2 and a line mentioning %q", code, last, c.want)
			}
		})
	}
}

type scheduleStatus struct {
	Snapshots *struct {
		LastSnapshot string    `json:"last_snapshot"`
		LastSuccess  time.Time `json:"last_success"`
		NextRun      time.Time `json:"next_run"`
		Failures     int       `json:"failures"`
		LastError    string    `json:"last_error"`
	} `json:"snapshots"`
}

func (p *agentProc) scheduleStatus() (scheduleStatus, error) {
	var st scheduleStatus
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.listen + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

type snapshotList struct {
	Snapshots []struct {
		ID string `json:"id"`
	} `json:"snapshots"`
	Partial []string `json:"partial_snapshots"`
}

func listSnapshots(t *testing.T, storageURL string) snapshotList {
	t.Helper()
	out, errs, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--json")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	var l snapshotList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	return l
}

// snapshotDirs returns the snapshot ids in a file archive that hold at
// least one stored object (not a put's temporary file) and whether each has
// its manifest.
func snapshotDirs(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	entries, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	for _, e := range entries {
		dir := filepath.Join(root, "snapshots", e.Name())
		stored := false
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".tmp-") {
				stored = true
			}
			return nil
		})
		if !stored {
			continue
		}
		_, err := os.Stat(filepath.Join(dir, "manifest.json"))
		out[e.Name()] = err == nil
	}
	return out
}

// TestScheduledSnapshotSurvivesSIGKILL kills the agent in the middle of a
// scheduled snapshot: the snapshot never appears complete, the restarted
// agent's next one succeeds, and prune collects what the killed one left.
func TestScheduledSnapshotSurvivesSIGKILL(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	root := t.TempDir()
	storageURL := "file://" + root
	env := []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}
	args := []string{"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port()), "--storage", storageURL,
		"--spool-dir", t.TempDir(), "--agent-id", "sidecar-0", "--flush-interval", "100ms",
		"--schedule", "@every 1s", "--snapshot-threads", "1"}
	// A table large enough that a snapshot takes a moment.
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.big (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(200))")
	db.Exec(t, "INSERT INTO app.big (v) VALUES (REPEAT('x', 150))")
	for i := 0; i < 18; i++ {
		db.Exec(t, "INSERT INTO app.big (v) SELECT LEFT(CONCAT(MD5(RAND()), v), 150) FROM app.big")
	}

	// Kill the agent while a snapshot is under way; a snapshot that wins
	// the race and completes first is simply a reason to try again.
	var killed string
	for attempt := 0; attempt < 5 && killed == ""; attempt++ {
		a := startAgent(t, env, args...)
		a.waitReady(30 * time.Second)
		// It must be seen while it runs, which may be for well under
		// 100 ms: a tight poll.
		var running string
		testbed.EventuallyEvery(t, 45*time.Second, 5*time.Millisecond, func() error {
			for id, done := range snapshotDirs(t, root) {
				if !done {
					running = id
					return nil
				}
			}
			return errors.New("no snapshot in progress")
		})
		a.signal(syscall.SIGKILL)
		if !snapshotDirs(t, root)[running] {
			killed = running
		}
	}
	if killed == "" {
		t.Fatal("in 5 attempts every snapshot completed before the kill landed")
	}
	l := listSnapshots(t, storageURL)
	for _, s := range l.Snapshots {
		if s.ID == killed {
			t.Fatalf("the killed snapshot %s is listed as complete", killed)
		}
	}
	if !slices.Contains(l.Partial, killed) {
		t.Fatalf("the killed snapshot %s is not listed as partial: %+v", killed, l)
	}

	a := startAgent(t, env, args...)
	a.waitReady(30 * time.Second)
	var st scheduleStatus
	testbed.Eventually(t, 60*time.Second, func() error {
		st, _ = a.scheduleStatus()
		if st.Snapshots == nil || st.Snapshots.LastSnapshot <= killed {
			return fmt.Errorf("no snapshot after the restart; status %+v", st.Snapshots)
		}
		return nil
	})
	if st.Snapshots == nil || st.Snapshots.LastSnapshot <= killed || st.Snapshots.NextRun.IsZero() {
		t.Fatalf("no snapshot after the restart; status %+v", st.Snapshots)
	}
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent exit: %v", err)
	}

	out, stderr, code := runCLI(t, t.Context(), "prune", "--storage", storageURL, "--keep-snapshots", "1", "--dry-run", "--orphan-grace", "1ns")
	if code != 0 || !strings.Contains(out, "would delete snapshots/"+killed+"/") {
		t.Fatalf("prune --dry-run: exit %d, stdout:\n%s\nstderr: %s", code, out, stderr)
	}
	if !slices.Contains(listSnapshots(t, storageURL).Partial, killed) {
		t.Fatal("the dry run deleted the partial snapshot")
	}
	out, stderr, code = runCLI(t, t.Context(), "prune", "--storage", storageURL, "--keep-snapshots", "1", "--orphan-grace", "1ns")
	if code != 0 {
		t.Fatalf("prune: exit %d: %s", code, stderr)
	}
	t.Logf("prune:\n%s", out)
	l = listSnapshots(t, storageURL)
	if len(l.Partial) != 0 || len(l.Snapshots) != 1 {
		t.Fatalf("after prune: %+v; want one complete snapshot and no partial", l)
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", killed, "manifest.json")); !os.IsNotExist(err) {
		t.Fatalf("killed snapshot: %v", err)
	}
	restoreDoc := listJSON(t, storageURL)
	for _, b := range restoreDoc.Binlogs {
		if len(b.Holes) > 0 {
			t.Errorf("timeline %d shows holes after the prune: %v", b.Timeline, b.Holes)
		}
	}
}

// TestSnapshotOnNewTimeline: an agent whose schedule is far off takes a
// snapshot as soon as the archive begins a timeline (the first one, and
// the one after a purge made a gap), so each timeline has a recoverable
// window at once; with --snapshot-new-timelines=false it waits.
func TestSnapshotOnNewTimeline(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	root := t.TempDir()
	storageURL := "file://" + root
	env := []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}
	args := []string{"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port()), "--storage", storageURL,
		"--spool-dir", t.TempDir(), "--agent-id", "sidecar-0", "--flush-interval", "100ms",
		"--schedule", "0 3 1 1 *", "--snapshot-threads", "1"}
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
	db.Exec(t, "INSERT INTO app.t (v) VALUES (1)")

	// windows returns the timelines that have a recoverable window.
	windows := func() map[uint32]bool {
		out, errs, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--json")
		if code != 0 {
			t.Fatalf("list: exit %d: %s", code, errs)
		}
		var doc struct {
			Windows []struct {
				Timeline uint32 `json:"timeline"`
			} `json:"windows"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("list --json: %v", err)
		}
		w := map[uint32]bool{}
		for _, x := range doc.Windows {
			w[x.Timeline] = true
		}
		return w
	}
	waitWindow := func(a *agentProc, tl uint32) {
		t.Helper()
		testbed.Eventually(t, 60*time.Second, func() error {
			if !windows()[tl] {
				return fmt.Errorf("no window on timeline %d; agent log:\n%s", tl, a.logs())
			}
			return nil
		})
	}

	a := startAgent(t, env, args...)
	a.waitReady(30 * time.Second)
	waitWindow(a, 1)
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent exit: %v", err)
	}

	// A gap: the binlog the archive would continue from is purged while
	// the agent is down.
	db.Exec(t, "INSERT INTO app.t (v) VALUES (2)")
	db.Exec(t, "FLUSH BINARY LOGS")
	purgeAll(t, db)
	db.Exec(t, "INSERT INTO app.t (v) VALUES (3)")

	a = startAgent(t, env, args...)
	a.waitReady(30 * time.Second)
	waitWindow(a, 2)
	if !strings.Contains(a.logs(), "taking a snapshot outside the schedule") {
		t.Errorf("the agent's log does not say why it took the snapshot:\n%s", a.logs())
	}
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent exit: %v", err)
	}

	// Switched off: a third timeline gets no snapshot of its own.
	db.Exec(t, "FLUSH BINARY LOGS")
	purgeAll(t, db)
	a = startAgent(t, env, append(args, "--snapshot-new-timelines=false")...)
	a.waitReady(30 * time.Second)
	a.waitDurable(db, 30*time.Second)
	// An absence has no event to wait on: only a while (3 s after the
	// agent caught up) in which the snapshot must not appear.
	time.Sleep(3 * time.Second)
	if w := windows(); w[3] {
		t.Errorf("a snapshot was taken on timeline 3 with --snapshot-new-timelines=false: windows %v", w)
	}
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent exit: %v", err)
	}
}
