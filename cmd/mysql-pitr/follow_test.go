package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestAgentFollowsFailover runs the agent on a source with --follow naming
// its replica, takes a snapshot, and records checkpoints under writes: two
// on the source, then the source is killed and the replica promoted, two
// on the new primary. The agent goes on from the new primary in a timeline
// of reason failover, and every checkpoint, before and after the failover,
// restores from the one snapshot on the old primary's timeline exactly
// (CHECKSUM TABLE), as does latest.
func TestAgentFollowsFailover(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) { followAndRestore(t, f) })
	}
}

func followAndRestore(t *testing.T, f testbed.Flavor) {
	a := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 1})
	b := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 2})
	testbed.ReplicateFrom(t, b, a)
	// One account across the cluster, as replication gives it.
	a.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", testbed.PitrUser, a.PitrPassword()))
	a.Exec(t, "CREATE DATABASE app")
	a.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))")
	a.Exec(t, "INSERT INTO app.t (v) VALUES ('before the snapshot')")
	t.Setenv("MYSQL_PITR_PASSWORD", a.PitrPassword())
	if dir := f.BinDir(); dir != "" {
		t.Setenv("MYSQL_PITR_SERVER_BINDIR", dir)
	}
	root := t.TempDir()
	storageURL := "file://" + root
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, a.Port())
	// The replica by a name that resolves to several addresses, as a
	// headless Service's does: it is one candidate, however reached.
	ag := startAgent(t, nil, "--dsn", dsn, "--follow", "localhost:"+strconv.Itoa(b.Port()),
		"--storage", storageURL, "--spool-dir", t.TempDir(), "--flush-interval", "200ms", "--server-id", "4246")
	ag.waitReady(30 * time.Second)
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}

	type checkpoint struct {
		at   time.Time
		sums map[string]string
	}
	var cps []checkpoint
	phase := func(db *testbed.MariaDB, name string) {
		if len(cps) > 0 {
			testbed.NextSecond(t, cps[len(cps)-1].at) // later commits fall after the checkpoint
		}
		for i := range 10 {
			db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprint(name, " ", i))
		}
		db.Exec(t, "UPDATE app.t SET v = CONCAT(v, '+') WHERE id % 3 = 0")
		cps = append(cps, checkpoint{at: time.Now(), sums: checksums(t, db.DB(t))})
	}
	phase(a, "a1")
	phase(a, "a2")
	ag.waitDurable(a, 30*time.Second)
	testbed.WaitReplicated(t, b, a)
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if f.MySQL() {
		b.Exec(t, "STOP REPLICA")
	} else {
		b.Exec(t, "STOP SLAVE")
	}
	b.Exec(t, "SET GLOBAL read_only = OFF")
	phase(b, "b1")
	phase(b, "b2")
	phase(b, "b3") // commits after the last time restored to; latest has them
	want := fmt.Sprintf(":%d)", b.Port())
	testbed.Eventually(t, 30*time.Second, func() error {
		var st struct {
			Binlog struct {
				Server   string `json:"server"`
				Timeline int    `json:"timeline"`
			} `json:"binlog"`
		}
		resp, err := http.Get("http://" + ag.listen + "/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return err
		}
		if !strings.HasSuffix(st.Binlog.Server, want) || st.Binlog.Timeline != 2 {
			return fmt.Errorf("streaming %s on timeline %d, want %s on timeline 2", st.Binlog.Server, st.Binlog.Timeline, want)
		}
		return nil
	})
	ag.waitDurable(b, 30*time.Second)
	if err := ag.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(arch.Timelines); n != 2 || arch.Timelines[1].Reason != catalog.ReasonFailover {
		t.Fatalf("%d timelines, the last %+v; want 2, the second of reason failover", n, arch.Last().Timeline)
	}

	// One window, through the failover, and no gap.
	out, stderr, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--json")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, stderr)
	}
	var listed struct {
		Windows []catalog.Window `json:"windows"`
		Gaps    []catalog.Gap    `json:"gaps"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed.Windows) != 1 || len(listed.Windows[0].Through) != 1 || len(listed.Gaps) != 0 {
		t.Errorf("list: windows %+v, gaps %+v; want one window through timeline 2, no gap", listed.Windows, listed.Gaps)
	}
	if _, stderr, code := runCLI(t, t.Context(), "verify", "--storage", storageURL); code != 0 {
		t.Errorf("verify: exit %d: %s", code, stderr)
	}

	// Latest by both replay modes, each checkpoint by the binlog server.
	targets := []string{"latest", "latest"}
	for _, cp := range cps[:len(cps)-1] {
		targets = append(targets, cp.at.UTC().Format(time.RFC3339Nano))
	}
	for i, to := range targets {
		wantSums, replay := cps[len(cps)-1].sums, "mysqlbinlog"
		if i > 0 {
			replay = "server"
		}
		if i > 1 {
			wantSums = cps[i-2].sums
		}
		datadir := filepath.Join(t.TempDir(), "data")
		stdout, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", to, "--datadir", datadir, "--threads", "1",
			"--replay", replay)
		if code != 0 {
			t.Fatalf("restore --to %s: exit %d: %s", to, code, stderr)
		}
		restored := testbed.NewMariaDBOn(t, testbed.MariaDBOptions{Flavor: f, ServerID: uint32(70 + i)}, datadir)
		sameSums(t, "restored to "+to+" by "+replay, checksums(t, restored.DB(t)), wantSums)
		if err := restored.Stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("restore --to %s: %s", to, stdout)
	}
}

// TestScheduledSnapshotsRefuseAFollowedAwayServer demotes the agent's own
// server and promotes its replica: the archive follows the replica, and a
// scheduled snapshot of the agent's server, whose binlog positions are not
// the archive's, is refused, saying why.
func TestScheduledSnapshotsRefuseAFollowedAwayServer(t *testing.T) {
	a := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 1})
	b := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 2})
	testbed.ReplicateFrom(t, b, a)
	a.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", testbed.PitrUser, a.PitrPassword()))
	testbed.WaitReplicated(t, b, a)
	ag := startAgent(t, []string{"MYSQL_PITR_PASSWORD=" + a.PitrPassword()},
		"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, a.Port()), "--follow", "127.0.0.1:"+strconv.Itoa(b.Port()),
		"--storage", "file://"+t.TempDir(), "--spool-dir", t.TempDir(), "--flush-interval", "200ms", "--server-id", "4247",
		"--schedule", "@every 1s", "--snapshot-new-timelines=false")
	ag.waitReady(30 * time.Second)
	a.Exec(t, "SET GLOBAL read_only = ON")
	b.Exec(t, "STOP SLAVE")
	b.Exec(t, "SET GLOBAL read_only = OFF")
	testbed.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(ag.logs(), "a snapshot of --dsn's server (server_id 1) would not fit it") {
			return fmt.Errorf("no scheduled snapshot refused yet")
		}
		return nil
	})
}
