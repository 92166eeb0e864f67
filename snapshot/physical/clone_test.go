//go:build linux

package physical

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// cloneServer starts a MySQL 9.7 server with the bank tables. The test bed
// installs the clone plugin as an administrator would (the chart loads it):
// the pitr account holds the documented privileges only.
func cloneServer(t *testing.T, fillerMB int) *testbed.MariaDB {
	t.Helper()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97})
	fillBank(t, src, fillerMB)
	return src
}

// cloneOptions are the options of a clone snapshot of src into st.
func cloneOptions(t *testing.T, src *testbed.MariaDB, st storage.Storage) Options {
	return Options{
		Source:     sourceOf(t, src),
		Storage:    st,
		ServerPath: testbed.MySQL97.Binary(t, "mysqld"),
		TempDir:    t.TempDir(),
		Agent:      "test",
		Logger:     testLogger(t, nil),
	}
}

// cloneLeftovers lists the clone staging directories beside src's datadir.
func cloneLeftovers(t *testing.T, src *testbed.MariaDB) []string {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(filepath.Dir(src.DataDir()), cloneStagingPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return left
}

// TestCloneUnderLoad takes a physical snapshot of MySQL with the
// clone plugin while transfers run, restores it into a datadir, starts
// MySQL on it, and checks that it holds exactly the manifest's GTID set
// with balanced books; then it replays the source's binlog from the
// manifest's position with new GTIDs (a transaction replayed twice or left
// out changes a checksum or fails on a duplicate key) and compares every
// table's CHECKSUM TABLE with the source's.
func TestCloneUnderLoad(t *testing.T) {
	src := cloneServer(t, 32)
	st, _ := newStore(t)
	opts := cloneOptions(t, src, st)
	opts.PartSize = 8 << 20

	load := startBankLoad(t, src.DB(t), 4)
	load.waitCommits(t, 200)
	before := load.commits.Load()
	m, err := Take(t.Context(), opts)
	during := load.commits.Load() - before
	load.waitCommits(t, before+during+200)
	load.Stop(t)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	t.Logf("snapshot %s: %d transfers committed during it (longest COMMIT %s); position %s gtid %s; %d bytes in %d parts, %d stored; took %s",
		m.ID, during, time.Duration(load.maxCommit.Load()), m.Binlog, m.GTIDSet, m.Bytes, len(m.Objects), m.StoredBytes, m.Finished.Sub(m.Started))
	if during == 0 {
		t.Errorf("no transfer committed while the snapshot was taken; the test proves nothing about consistency")
	}
	if m.Method != catalog.MethodPhysical || m.Flavor != "mysql" || !strings.HasPrefix(m.Tool, "mysql clone plugin (mysqld 9.7") ||
		m.ServerVersion != src.Version() || !strings.HasPrefix(m.Binlog.File, "binlog.") || m.GTIDSet == "" {
		t.Errorf("manifest: %+v", m)
	}
	if f, err := formatOf(m); err != nil || f != formatTar || len(m.Objects) < 2 {
		t.Errorf("format %q (%v), %d parts", f, err, len(m.Objects))
	}
	if left := cloneLeftovers(t, src); len(left) > 0 {
		t.Errorf("staging left behind after a snapshot: %v", left)
	}

	datadir := filepath.Join(t.TempDir(), "data")
	pos, err := Restore(t.Context(), st, m, datadir, RestoreOptions{Logger: testLogger(t, nil)})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if pos != m.Binlog {
		t.Errorf("restore returned %s, manifest says %s", pos, m.Binlog)
	}
	restored := startRestoredFlavor(t, testbed.MySQL97, datadir)
	var gtid string
	if err := restored.DB(t).QueryRowContext(t.Context(), "SELECT @@gtid_executed").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	if gtid = strings.ReplaceAll(gtid, "\n", ""); gtid != m.GTIDSet {
		t.Errorf("restored server's gtid_executed %q, manifest %q", gtid, m.GTIDSet)
	}
	checkBank(t, restored.DB(t), "restored snapshot")

	// --skip-gtids: the transactions get the target's GTIDs, so none is
	// skipped for being there already.
	checkReplayed(t, src, restored, m, "--skip-gtids")
}

// TestCloneStagingRemoved checks that the staging directory goes
// away after a snapshot that failed while storing the clone, and that what a
// killed snapshot left (the staging directory with its marker and a clone)
// is removed by the next snapshot, which succeeds.
func TestCloneStagingRemoved(t *testing.T) {
	src := cloneServer(t, 64)

	t.Run("after a failure", func(t *testing.T) {
		mem, _ := newStore(t)
		st := &failingStore{Storage: mem, failKey: formatTar.partName(2)}
		opts := cloneOptions(t, src, st)
		opts.PartSize = 4 << 20
		_, err := Take(t.Context(), opts)
		if !errors.Is(err, errPhysInjected) {
			t.Fatalf("Take: %v; want the injected storage failure", err)
		}
		if left := cloneLeftovers(t, src); len(left) > 0 {
			t.Errorf("staging left behind after a failure: %v", left)
		}
	})

	t.Run("after a kill", func(t *testing.T) {
		location := filepath.Dir(src.DataDir())
		cmd := exec.Command(os.Args[0], "-test.run=^TestCloneHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "PITR_CLONE_HELPER=1", "PITR_CLONE_DSN="+src.PitrDSN(), "PITR_CLONE_STORE="+t.TempDir())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Killed as soon as the server has begun the clone, which may run
		// for under 100 ms: a tight poll.
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		testbed.EventuallyEvery(t, time.Minute, 5*time.Millisecond, func() error {
			if m, _ := filepath.Glob(filepath.Join(location, cloneStagingPrefix+"*", cloneDataName)); len(m) > 0 {
				return nil
			}
			return fmt.Errorf("no clone began:\n%s", out.String())
		})
		cmd.Process.Kill()
		cmd.Wait()
		left := cloneLeftovers(t, src)
		if len(left) != 1 {
			t.Fatalf("after the kill: %v; want one staging directory\n%s", left, out.String())
		}
		if _, err := os.Stat(filepath.Join(left[0], cloneMarkerName)); err != nil {
			t.Fatalf("the killed snapshot's marker: %v", err)
		}

		st, _ := newStore(t)
		var logs syncBuffer
		opts := cloneOptions(t, src, st)
		opts.Logger = testLogger(t, &logs)
		if _, err := Take(t.Context(), opts); err != nil {
			t.Fatalf("the next snapshot: %v", err)
		}
		if !strings.Contains(logs.String(), "removed what an interrupted physical snapshot left") {
			t.Errorf("the next snapshot did not say it removed the leftover")
		}
		if _, err := os.Stat(left[0]); err == nil {
			t.Errorf("%s is still there", left[0])
		}
		if left := cloneLeftovers(t, src); len(left) > 0 {
			t.Errorf("staging left behind: %v", left)
		}
	})
}

// TestCloneHelper is the snapshot TestCloneStagingRemoved
// kills; it runs only as that test's child.
func TestCloneHelper(t *testing.T) {
	if os.Getenv("PITR_CLONE_HELPER") != "1" {
		t.Skip("runs only as a child of TestCloneStagingRemoved")
	}
	cfg, err := mysql.ParseDSN(os.Getenv("PITR_CLONE_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := file.New(os.Getenv("PITR_CLONE_STORE"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Take(t.Context(), Options{Source: src, Storage: st, ServerPath: testbed.MySQL97.Binary(t, "mysqld"),
		TempDir: t.TempDir(), Logger: testLogger(t, nil)})
	t.Logf("Take: %v", err)
}

// TestCloneServerSettings clones a server initialised with settings
// a datadir keeps for life (lower_case_table_names, innodb_page_size): the
// start that finishes the clone must use the same, or mysqld refuses it.
func TestCloneServerSettings(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97,
		ExtraArgs: []string{"--lower-case-table-names=1", "--innodb-page-size=8192"}})
	src.Exec(t, "CREATE DATABASE App")
	src.Exec(t, "CREATE TABLE App.T (id INT PRIMARY KEY)")
	src.Exec(t, "INSERT INTO App.T VALUES (1), (2)")
	st, _ := newStore(t)
	m, err := Take(t.Context(), cloneOptions(t, src, st))
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	t.Logf("snapshot %s at %s", m.ID, m.Binlog)
}
