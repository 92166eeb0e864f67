package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestAgentFollowsFailover runs the agent on a source with --follow naming
// its replica: after the source is killed and the replica promoted, the
// agent streams the replica, and the archive goes on in a timeline of
// reason failover.
func TestAgentFollowsFailover(t *testing.T) {
	a := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 1})
	b := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 2})
	testbed.ReplicateFrom(t, b, a)
	// One account across the cluster, as replication gives it.
	a.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", testbed.PitrUser, a.PitrPassword()))
	a.Exec(t, "CREATE DATABASE app")
	a.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(10))")
	root := t.TempDir()
	storageURL := "file://" + root
	ag := startAgent(t, []string{"MYSQL_PITR_PASSWORD=" + a.PitrPassword()},
		"--dsn", fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, a.Port()), "--follow", "127.0.0.1:"+strconv.Itoa(b.Port()),
		"--storage", storageURL, "--spool-dir", t.TempDir(), "--flush-interval", "200ms", "--server-id", "4246")
	ag.waitReady(30 * time.Second)
	for range 20 {
		a.Exec(t, "INSERT INTO app.t (v) VALUES ('on a')")
	}
	ag.waitDurable(a, 30*time.Second)
	testbed.WaitReplicated(t, b, a)
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	b.Exec(t, "STOP SLAVE")
	b.Exec(t, "SET GLOBAL read_only = OFF")
	for range 20 {
		b.Exec(t, "INSERT INTO app.t (v) VALUES ('on b')")
	}
	want := fmt.Sprintf("tcp(127.0.0.1:%d)", b.Port())
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
		if st.Binlog.Server != want || st.Binlog.Timeline != 2 {
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
}
