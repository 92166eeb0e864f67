package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// treeOf lists every file and directory under dir with its size, mode and
// modification time: equal listings mean nothing was created, removed or
// written there.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, fmt.Sprintf("%s %d %s %d", rel, fi.Size(), fi.Mode(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// archiveWithSnapshot runs the agent on a fresh file:// archive, takes a
// snapshot, writes more, and stops the agent once everything is durable.
func archiveWithSnapshot(t *testing.T, db *testbed.MariaDB, dir string) {
	t.Helper()
	storageURL := "file://" + dir
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	a := startAgent(t, nil, "--dsn", dsn, "--storage", storageURL, "--spool-dir", t.TempDir(), "--flush-interval", "100ms")
	a.waitReady(30 * time.Second)
	db.Exec(t, "CREATE DATABASE IF NOT EXISTS app")
	db.Exec(t, "CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
	db.Exec(t, "INSERT INTO app.t (v) VALUES ('before')")
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}
	db.Exec(t, "INSERT INTO app.t (v) VALUES ('after')")
	a.waitDurable(db, 30*time.Second)
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent: %v", err)
	}
}

// readCommands are the commands that only read an archive, each with the
// arguments it needs besides --storage.
func readCommands(t *testing.T) map[string][]string {
	return map[string][]string{
		"list":         {"list"},
		"verify":       {"verify"},
		"binlog fetch": {"binlog", "fetch", "--out", filepath.Join(t.TempDir(), "fetched")},
		"restore":      {"restore", "--to", "latest", "--datadir", filepath.Join(t.TempDir(), "restored"), "--log-level", "warn"},
		"drill":        {"drill", "--scratch", shortTempDir(t), "--threads", "1", "--log-level", "warn"},
	}
}

// TestReadOnlyCommandsWriteNothing: list, verify, binlog fetch, restore and
// drill read an archive on a read-only mount, and leave a writable one
// exactly as it was: no probe file, no directory, and a temporary file a
// crashed writer left long ago is not swept.
func TestReadOnlyCommandsWriteNothing(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dir := t.TempDir()
	archiveWithSnapshot(t, db, dir)
	stale := filepath.Join(dir, "binlog", ".tmp-crashed-put")
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}

	t.Run("writable", func(t *testing.T) {
		for name, args := range readCommands(t) {
			before := treeOf(t, dir)
			out, stderr, code := runCLI(t, t.Context(), append(args, "--storage", "file://"+dir)...)
			if code != 0 {
				t.Fatalf("%s: exit %d: %s%s", name, code, out, stderr)
			}
			if after := treeOf(t, dir); !slices.Equal(before, after) {
				t.Errorf("%s changed the archive:\n%s\nto\n%s", name, strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
		}
	})
	t.Run("read-only mount", func(t *testing.T) {
		ro := readOnlyView(t, dir)
		if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o644); err == nil {
			t.Fatal("the read-only view is writable")
		}
		for name, args := range readCommands(t) {
			out, stderr, code := runCLI(t, t.Context(), append(args, "--storage", "file://"+ro)...)
			if code != 0 {
				t.Errorf("%s on a read-only mount: exit %d: %s%s", name, code, out, stderr)
			}
		}
	})
}

// readOnlyView makes dir readable, not writable, at another path: a
// read-only bind mount as root (as a volume mounted readOnly in a pod),
// the permission bits otherwise.
func readOnlyView(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if out, err := exec.Command("chmod", "-R", "a-w", dir).CombinedOutput(); err != nil {
			t.Fatalf("chmod: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("chmod", "-R", "u+w", dir).Run() })
		return dir
	}
	ro := t.TempDir()
	for _, args := range [][]string{{"--bind", dir, ro}, {"-o", "remount,bind,ro", ro}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", ro).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", ro, err, out)
		}
	})
	return ro
}

// TestNoArchiveIsAnError: a location holding no archive (a typo in a path
// or an S3 prefix) is an error naming it, from every command that reads
// or prunes an archive, and nothing is created there.
func TestNoArchiveIsAnError(t *testing.T) {
	s3 := testbed.StartS3(t)
	s3.SetEnv(t)
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	for _, loc := range []struct{ name, url string }{
		{"missing directory", "file://" + missing},
		{"empty directory", "file://" + empty},
		{"S3 prefix with nothing under it", s3.URL("typo-in-the-prefix")},
	} {
		commands := readCommands(t)
		commands["prune"] = []string{"prune", "--keep-snapshots", "1"}
		commands["drill --record"] = []string{"drill", "--record", "--scratch", shortTempDir(t)}
		for name, args := range commands {
			t.Run(loc.name+"/"+name, func(t *testing.T) {
				out, stderr, code := runCLI(t, t.Context(), append(args, "--storage", loc.url)...)
				if code != 1 || !strings.Contains(stderr, "no mysql-pitr archive") {
					t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 saying there is no archive", code, out, stderr)
				}
			})
		}
		if _, err := os.Stat(missing); err == nil {
			t.Fatalf("%s was created", missing)
		}
		if ents, _ := os.ReadDir(empty); len(ents) != 0 {
			t.Fatalf("%s holds %d entries", empty, len(ents))
		}
	}
	if _, err := os.Stat(s3.ObjectPath("typo-in-the-prefix")); err == nil {
		t.Fatal("objects were created under the S3 prefix")
	}
}

// exited waits up to timeout for the agent to exit and returns its error
// and whether it exited.
func (p *agentProc) exited(timeout time.Duration) (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err
		return err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// verifyWhole runs verify and fails the test unless it finds the archive whole.
func verifyWhole(t *testing.T, storageURL string) string {
	t.Helper()
	out, stderr, code := runCLI(t, t.Context(), "verify", "--storage", storageURL)
	if code != 0 {
		t.Fatalf("verify: exit %d:\n%s%s", code, out, stderr)
	}
	return out
}

// TestSplitBrainIsFenced: agent A is cut off from storage (the network path
// to its S3 gateway cut, as a partition cuts a node off) for longer than its
// lease while it keeps receiving the binlog; agent B, a rescheduled pod,
// takes the lapsed lease through another gateway to the same store and
// archives on; then A's path heals and its hung and spooled uploads reach
// storage. A must stop at once, nothing it stores after B took over may
// count, and the archive must end byte-identical to the server's binlog with
// verify finding it whole.
func TestSplitBrainIsFenced(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{MaxBinlogSize: 1 << 20})
	gw1 := testbed.StartS3(t)
	gw2 := gw1.Another(t)
	gw1.SetEnv(t)
	path := testbed.StartProxy(t, strings.TrimPrefix(gw1.Endpoint, "http://"))
	env := append(gw1.Env(), "MYSQL_PITR_PASSWORD="+db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	common := []string{"--dsn", dsn, "--flush-interval", "200ms", "--lease-ttl", "3s", "--compact-interval", "0", "--log-level", "debug"}
	storageURL := gw2.URL("split")
	throughPath := strings.Replace(gw1.URL("split"), url.QueryEscape(gw1.Endpoint), url.QueryEscape("http://"+path.Addr()), 1)

	stop := make(chan struct{})
	load := writeLoad(t, db, stop, nil)
	a := startAgent(t, env, append(common, "--storage", throughPath, "--agent-id", "pod-a", "--spool-dir", t.TempDir())...)
	a.waitReady(30 * time.Second)
	a.waitDurable(db, 30*time.Second)

	path.Cut()
	// The scenario: A's lease (--lease-ttl 3s) runs out by the wall clock
	// while A, cut off, keeps spooling; nothing else to wait on.
	time.Sleep(4 * time.Second)
	b := startAgent(t, env, append(common, "--storage", storageURL, "--agent-id", "pod-b", "--spool-dir", t.TempDir())...)
	b.waitReady(30 * time.Second)
	b.waitDurable(db, 30*time.Second) // B archives on
	path.Heal()
	err, done := a.exited(30 * time.Second)
	if !done {
		t.Fatal("agent A went on writing after another agent took the archive over")
	}
	if err == nil || !strings.Contains(a.logs(), "taken") {
		t.Errorf("agent A exited with %v; want a failure saying the archive was taken over", err)
	}
	close(stop)
	<-load
	b.waitDurable(db, 60*time.Second)
	if err := b.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent B: %v", err)
	}
	compareArchive(t, storageURL, db)
	verifyWhole(t, storageURL)
	doc := listJSON(t, storageURL)
	if len(doc.Gaps) != 0 {
		t.Errorf("gaps %+v: the takeover must not break the archive", doc.Gaps)
	}
	out, _, _ := runCLI(t, t.Context(), "verify", "--storage", storageURL, "--json")
	var report struct {
		Superseded []string `json:"superseded"`
	}
	json.Unmarshal([]byte(out), &report)
	t.Logf("A stopped: %v; objects A stored after B took over, left out: %d", err, len(report.Superseded))
}

// TestSecondAgentLeavesTheFirstAlone: an agent refused because another holds
// the archive touches nothing of the first one's, whether it shares its
// spool directory (the default --spool-dir) or only its name (the default
// --agent-id, the host name); the first goes on, and the archive stays
// whole.
func TestSecondAgentLeavesTheFirstAlone(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sameSpool bool
		agentID   string
		want      string
	}{
		{"another agent id on the same spool", true, "pod-b", "spool directory is in use"},
		{"the same agent id on another spool", false, "pod-a", "lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
			dir := t.TempDir()
			storageURL := "file://" + dir
			env := []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}
			t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
			dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
			spool := t.TempDir()
			// A long flush interval keeps a segment open in A's spool while B starts.
			a := startAgent(t, env, "--dsn", dsn, "--storage", storageURL, "--spool-dir", spool, "--agent-id", "pod-a",
				"--flush-interval", "3s", "--lease-ttl", "3s")
			a.waitReady(30 * time.Second)
			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
			for range 20 {
				db.Exec(t, "INSERT INTO app.t (v) VALUES ('x')")
			}
			bSpool := spool
			if !tc.sameSpool {
				bSpool = t.TempDir()
			}
			began := time.Now()
			_, stderr, code := runCLI(t, t.Context(), "agent", "--dsn", dsn, "--storage", storageURL, "--spool-dir", bSpool,
				"--agent-id", tc.agentID, "--lease-ttl", "3s", "--listen", "")
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("second agent: exit %d, stderr %q; want a refusal about the %s", code, stderr, tc.want)
			}
			t.Logf("refused after %s: %s", time.Since(began).Round(time.Millisecond), strings.TrimSpace(stderr))
			for range 20 {
				db.Exec(t, "INSERT INTO app.t (v) VALUES ('y')")
			}
			a.waitDurable(db, 30*time.Second)
			if err, done := a.exited(0); done {
				t.Fatalf("the first agent exited: %v", err)
			}
			if err := a.signal(syscall.SIGTERM); err != nil {
				t.Fatalf("first agent: %v", err)
			}
			compareArchive(t, storageURL, db)
			verifyWhole(t, storageURL)
			if doc := listJSON(t, storageURL); len(doc.Binlogs) != 1 {
				t.Errorf("%d timelines, want 1", len(doc.Binlogs))
			}
		})
	}
}

// TestQuietPeriodTargets: with the agent connected and caught up and the
// server quiet, a moment after the last commit ("a few seconds ago") can
// be restored: the agent records how far the archive is known complete,
// list shows it as the end of the recoverable window, and the restore
// holds every row. A moment the agent has not vouched for is refused.
func TestQuietPeriodTargets(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dir := t.TempDir()
	storageURL := "file://" + dir
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	a := startAgent(t, nil, "--dsn", dsn, "--storage", storageURL, "--spool-dir", t.TempDir(), "--flush-interval", "100ms",
		"--complete-interval", "1s")
	a.waitReady(30 * time.Second)
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
	db.Exec(t, "INSERT INTO app.t (v) VALUES ('one'), ('two')")
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}
	db.Exec(t, "INSERT INTO app.t (v) VALUES ('last')")
	lastCommit := time.Now()
	a.waitDurable(db, 30*time.Second)
	want := checksums(t, db.DB(t))

	// Quiet: nothing is written from here on.
	target := lastCommit.Add(3 * time.Second)
	var doc struct {
		Windows []struct {
			To time.Time `json:"to"`
		} `json:"windows"`
	}
	testbed.Eventually(t, 30*time.Second, func() error {
		out, stderr, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--json")
		if code != 0 {
			t.Fatalf("list: exit %d: %s", code, stderr)
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Windows) != 1 || doc.Windows[0].To.Before(target) {
			return fmt.Errorf("the recoverable window %+v has not reached %v, 3 s after the last commit", doc.Windows, target)
		}
		return nil
	})
	datadir := filepath.Join(t.TempDir(), "data")
	to := target.UTC().Format(time.RFC3339Nano)
	if out, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", to, "--datadir", datadir, "--log-level", "warn"); code != 0 {
		t.Fatalf("restore --to %s (3 s after the last commit, the server quiet since): exit %d: %s%s", to, code, out, stderr)
	}
	sameSums(t, "restored 3 s after the last commit", restoredChecksums(t, datadir), want)

	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	_, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", future, "--datadir", filepath.Join(t.TempDir(), "x"), "--dry-run")
	if code != 1 || !strings.Contains(stderr, "past the end of the archive") || !strings.Contains(stderr, "complete up to") {
		t.Fatalf("restore to an hour from now: exit %d: %s; want a refusal naming how far the archive is known complete", code, stderr)
	}
}

// TestRestoreSaysWhatItSkipped: a newest manifest that is emptied, or
// replaced by an older snapshot's under the newer key, is not silently
// passed over: restore names it and why, and uses the older snapshot;
// list shows it damaged and verify fails on it.
func TestRestoreSaysWhatItSkipped(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dir := t.TempDir()
	storageURL := "file://" + dir
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	a := startAgent(t, nil, "--dsn", dsn, "--storage", storageURL, "--spool-dir", t.TempDir(), "--flush-interval", "100ms")
	a.waitReady(30 * time.Second)
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
	var ids []string
	for i := range 2 {
		db.Exec(t, "INSERT INTO app.t (v) VALUES ('x')")
		if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"); code != 0 {
			t.Fatalf("snapshot: exit %d: %s", code, stderr)
		}
		ents, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
		ids = append(ids, ents[len(ents)-1].Name())
		if i == 0 {
			testbed.NextSecond(t, time.Now()) // snapshot ids are per second
		}
	}
	db.Exec(t, "INSERT INTO app.t (v) VALUES ('after')")
	a.waitDurable(db, 30*time.Second)
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	older, err := os.ReadFile(filepath.Join(dir, "snapshots", ids[0], "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	newerKey := "snapshots/" + ids[1] + "/manifest.json"
	for _, tc := range []struct {
		name, content, why string
	}{
		{"emptied", "{}", "names no snapshot"},
		{"an older snapshot's under the newer key", string(older), "describes snapshot " + ids[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := st.Put(t.Context(), newerKey, strings.NewReader(tc.content), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", "latest", "--datadir", filepath.Join(t.TempDir(), "d"), "--dry-run")
			if code != 0 || !strings.Contains(out, "snapshot:  "+ids[0]) || !strings.Contains(out, "skipped:   "+newerKey) || !strings.Contains(out, tc.why) {
				t.Fatalf("restore --dry-run: exit %d:\n%s%s\nwant the older snapshot used and the newer named as skipped (%s)", code, out, stderr, tc.why)
			}
			if text, _, _ := runCLI(t, t.Context(), "list", "--storage", storageURL); !strings.Contains(text, "DAMAGED: "+newerKey) {
				t.Errorf("list does not show the damaged manifest:\n%s", text)
			}
			if out, _, code := runCLI(t, t.Context(), "verify", "--storage", storageURL); code != 1 || !strings.Contains(out, newerKey) {
				t.Errorf("verify: exit %d:\n%s\nwant 1 naming %s", code, out, newerKey)
			}
		})
	}
}
