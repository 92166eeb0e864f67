package restore

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// killedChildEnv tells the test binary, run again as a child, to restore
// and stop in the middle: "STORE DATADIR WORKDIR", tab-separated.
const killedChildEnv = "PITR_TEST_KILLED_RESTORE"

// midway is what the child prints once the snapshot is loaded on its
// temporary server, just before it would replay the binlog.
const midway = "restore is midway"

// TestKilledRestoreChild is the restore that TestRestoreRerun kills: it
// does nothing unless run as that child.
func TestKilledRestoreChild(t *testing.T) {
	spec := os.Getenv(killedChildEnv)
	if spec == "" {
		return
	}
	args := strings.Split(spec, "\t")
	st, err := file.New(args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := latestPlan(t, st)
	_, err = Apply(t.Context(), p, Options{Store: st, Datadir: args[1], WorkDir: args[2], Threads: 1,
		AfterSnapshot: func(ctx context.Context, _ *mysql.Config) error {
			fmt.Println(midway)
			<-ctx.Done() // until killed
			return ctx.Err()
		}})
	t.Fatalf("the restore was to be killed midway, and returned %v", err)
}

// latestPlan plans a restore of st to its latest moment.
func latestPlan(t *testing.T, st *file.Store) *Plan {
	t.Helper()
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Make(arch, snaps.Complete, Target{Kind: Latest}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// killMidway runs a restore of the archive in root into datadir as a
// child process and kills it (SIGKILL: no deferred cleanup runs) once the
// snapshot is loaded on its temporary server.
func killMidway(t *testing.T, root, datadir, work string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledRestoreChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killedChildEnv+"="+strings.Join([]string{root, datadir, work}, "\t"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := make(chan bool, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == midway {
				reached <- true
				return
			}
		}
		reached <- false
	}()
	select {
	case ok := <-reached:
		cmd.Process.Kill()
		cmd.Wait()
		if !ok {
			t.Fatalf("the child restore ended before it was midway:\n%s\n%s", strings.Join(lines, "\n"), stderr.String())
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the child restore was not midway after 3 minutes: %s", stderr.String())
	}
}

// mountTmpfs mounts a tmpfs on dir: a directory that is a volume's root.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1g,mode=0750"); err != nil {
		msg := fmt.Sprintf("mount a tmpfs on %s, to stand for a volume: %v (the test needs root)", dir, err)
		if testbed.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// stagingLeftovers lists the staging directories beside datadir and in it.
func stagingLeftovers(t *testing.T, datadir string) []string {
	t.Helper()
	pattern := "." + filepath.Base(datadir) + ".restore-*"
	beside, _ := filepath.Glob(filepath.Join(filepath.Dir(datadir), pattern))
	inside, _ := filepath.Glob(filepath.Join(datadir, pattern))
	return append(beside, inside...)
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRestoreRerun kills restores midway, into a plain directory and into
// a volume's root, and runs them again: the second run succeeds and
// leaves nothing of the first. And --force is refused before any work
// when what it would do at the end cannot be done.
func TestRestoreRerun(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	root := t.TempDir()
	st, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 100*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	src.Exec(t, "INSERT INTO app.t VALUES (1), (2), (3)")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1, SkipUsers: true}); err != nil {
		t.Fatal(err)
	}
	src.Exec(t, "INSERT INTO app.t VALUES (4)")
	src.Exec(t, "INSERT INTO app.t VALUES (5)")
	archivetest.WaitArchived(t, streamer, src)
	p := latestPlan(t, st)

	for _, tc := range []struct {
		name   string
		volume bool
	}{
		{"killed in a plain directory", false},
		{"killed in a volume's root", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := os.MkdirTemp("", "rr-") // short: the temporary server's socket lies in it
			t.Cleanup(func() { os.RemoveAll(dir) })
			datadir := filepath.Join(dir, "data")
			if tc.volume {
				mountTmpfs(t, datadir)
			}
			killMidway(t, root, datadir, filepath.Join(dir, "w1"))
			left := stagingLeftovers(t, datadir)
			if len(left) == 0 {
				t.Fatal("the killed restore left no staging directory: it was not killed midway")
			}

			var logs lockedBuffer
			res, err := Apply(t.Context(), p, Options{Store: st, Datadir: datadir, WorkDir: filepath.Join(dir, "w2"), Threads: 1,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("restore again after the killed one: %v\n%s", err, logs.String())
			}
			if testing.Verbose() {
				t.Logf("the second restore's log:\n%s", logs.String())
			}
			if got := stagingLeftovers(t, datadir); len(got) > 0 {
				t.Errorf("left after the second restore: %v", got)
			}
			for _, l := range left {
				if !strings.Contains(logs.String(), l) {
					t.Errorf("the log does not name the removed %s:\n%s", l, logs.String())
				}
			}
			srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: mysqld.MariaDB, Datadir: datadir, RunDir: filepath.Join(dir, "r")})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop(context.WithoutCancel(t.Context()))
			if n, err := countRows(t.Context(), srv.Config()); err != nil || n != 5 || res.Marker.Transactions != 2 {
				t.Errorf("restored %d rows (%v) with %d transactions replayed, want 5 rows, 2 transactions", n, err, res.Marker.Transactions)
			}
		})
	}

	for _, tc := range []struct {
		name    string
		mount   string // below the test's directory
		discard bool
		want    string
	}{
		{"--force moving a volume's root aside", "data", false, "on another filesystem"},
		{"--force --discard-existing over a mount point in the datadir", "data/binlog", true, "mount point"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			datadir := filepath.Join(dir, "data")
			mountTmpfs(t, filepath.Join(dir, tc.mount))
			old := filepath.Join(datadir, "ibdata1")
			if err := os.WriteFile(old, []byte("the old datadir"), 0o640); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			phases := map[string]bool{}
			_, err := Apply(t.Context(), p, Options{Store: st, Datadir: datadir, WorkDir: filepath.Join(dir, "w"), Threads: 1,
				Force: true, DiscardExisting: tc.discard, Progress: func(p Progress) {
					mu.Lock()
					phases[p.Phase] = true
					mu.Unlock()
				}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("restore = %v, want a refusal naming %q", err, tc.want)
			}
			mu.Lock()
			if len(phases) > 0 {
				t.Errorf("refused only after work began: progress reported in %v", phases)
			}
			mu.Unlock()
			if b, err := os.ReadFile(old); err != nil || string(b) != "the old datadir" {
				t.Errorf("the refused restore changed the datadir: %q, %v", b, err)
			}
			if got := stagingLeftovers(t, datadir); len(got) > 0 {
				t.Errorf("left by the refused restore: %v", got)
			}
		})
	}
}
