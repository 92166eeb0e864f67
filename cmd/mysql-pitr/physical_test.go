package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/s3"
)

// physRun is one run of `mysql-pitr snapshot --method physical` as a child.
type physRun struct {
	stdout, stderr string
	code           int
	// maxRSS is mysql-pitr's rusage maxrss, which covers the programs it
	// ran and waited for (mariadb-backup, the mysqld that finishes a
	// clone); hwm is its own VmHWM, sampled until it exits.
	maxRSS, hwm int64
	took        time.Duration
}

func runPhysical(t *testing.T, srv *testbed.MariaDB, dsn, password string, args ...string) physRun {
	t.Helper()
	// The servers' self-made certificates name no IP address; the chart
	// too connects over loopback without TLS.
	argv := append([]string{binary, "snapshot", "--method", "physical", "--dsn", dsn, "--mysql-tls", "off", "--log-format", "json"}, args...)
	// GNU time reports the child's rusage maxrss. The test's own: a child
	// Go starts shares the test's memory until its exec (vfork), and Linux
	// counts that memory's peak as the child's.
	timeBin := testbed.Binary(t, "time", "apt-get install time")
	rusage := filepath.Join(t.TempDir(), "rusage")
	cmd := exec.Command(timeBin, append([]string{"-o", rusage, "-f", "%M"}, argv...)...)
	env := append(os.Environ(), "MYSQL_PITR_PASSWORD="+password)
	if dir := srv.Flavor().BinDir(); dir != "" {
		// The flavor's own programs first: mysqld finishes a clone.
		env = append(env, "PATH="+dir+":"+os.Getenv("PATH"))
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var hwm int64
	go func() {
		defer close(done)
		for {
			if v := procHWM(childOf(cmd.Process.Pid)); v > hwm {
				hwm = v
			}
			select {
			case <-time.After(10 * time.Millisecond):
			case <-stop:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(stop)
	<-done
	r := physRun{stdout: out.String(), stderr: errb.String(), took: time.Since(begin), hwm: hwm, code: cmd.ProcessState.ExitCode()}
	if err != nil && r.code < 0 {
		t.Fatalf("snapshot: %v", err)
	}
	if b, err := os.ReadFile(rusage); err == nil {
		// A failed command's line comes first: the number is last.
		f := strings.Fields(string(b))
		if len(f) > 0 {
			kb, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			r.maxRSS = kb << 10
		}
	}
	return r
}

// childOf is the first child of pid, 0 when it has none.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

// procHWM is VmHWM of a process in bytes, 0 once it is gone.
func procHWM(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// dirEntries lists what is in dir, recursively, as relative paths.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestPhysicalMySQLRefusals runs `snapshot --method physical` on MySQL 9.7
// where a clone cannot be taken, and checks that each reason is named
// before any work: nothing in the archive, no clone staging directory.
func TestPhysicalMySQLRefusals(t *testing.T) {
	srv := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97})
	location := filepath.Dir(srv.DataDir())
	noWork := func(t *testing.T, archive string) {
		t.Helper()
		t.Logf("refused before any work: archive and clone directory empty")
		if left := dirEntries(t, archive); len(left) > 0 {
			t.Errorf("the archive holds %v", left)
		}
		if left, _ := filepath.Glob(filepath.Join(location, "mysql-pitr-clone-*")); len(left) > 0 {
			t.Errorf("clone staging left: %v", left)
		}
	}

	t.Run("clone plugin not loaded and not installable", func(t *testing.T) {
		// The test bed installs it, as an administrator would.
		srv.Exec(t, "UNINSTALL PLUGIN clone")
		archive := t.TempDir()
		r := runPhysical(t, srv, srv.DSNFor(testbed.PitrUser, ""), srv.PitrPassword(), "--storage", "file://"+archive)
		if r.code != 1 || !strings.Contains(r.stderr, "lacks INSERT on `mysql`.`plugin`") || !strings.Contains(r.stderr, "INSTALL PLUGIN clone") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		noWork(t, archive)
	})

	t.Run("installs the plugin when allowed", func(t *testing.T) {
		srv.Exec(t, "GRANT INSERT ON mysql.plugin TO 'pitr'@'%'")
		defer srv.Exec(t, "REVOKE INSERT ON mysql.plugin FROM 'pitr'@'%'")
		archive := t.TempDir()
		r := runPhysical(t, srv, srv.DSNFor(testbed.PitrUser, ""), srv.PitrPassword(), "--storage", "file://"+archive)
		if r.code != 0 || !strings.Contains(r.stderr, "installed the clone plugin") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		var status string
		if err := srv.DB(t).QueryRowContext(t.Context(), "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'").Scan(&status); err != nil || status != "ACTIVE" {
			t.Fatalf("clone plugin %q, %v", status, err)
		}
		if !strings.HasPrefix(r.stdout, "snapshot ") {
			t.Errorf("stdout %q", r.stdout)
		}
	})

	t.Run("no BACKUP_ADMIN", func(t *testing.T) {
		srv.Exec(t, "CREATE USER 'nobackup'@'%' IDENTIFIED BY 'pw-nobackup'")
		srv.Exec(t, "GRANT SELECT, PROCESS ON *.* TO 'nobackup'@'%'")
		archive := t.TempDir()
		r := runPhysical(t, srv, srv.DSNFor("nobackup", ""), "pw-nobackup", "--storage", "file://"+archive)
		if r.code != 1 || !strings.Contains(r.stderr, "lacks BACKUP_ADMIN (needed by a physical snapshot to clone the data (CLONE LOCAL DATA DIRECTORY))") ||
			!strings.Contains(r.stderr, "GRANT BACKUP_ADMIN ON *.* TO 'nobackup'@'%'") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		noWork(t, archive)
	})

	t.Run("--server-bindir without mysqld", func(t *testing.T) {
		// The mysqld that finishes the clone comes from --server-bindir
		// alone, never from PATH.
		empty := t.TempDir()
		archive := t.TempDir()
		r := runPhysical(t, srv, srv.DSNFor(testbed.PitrUser, ""), srv.PitrPassword(), "--storage", "file://"+archive, "--server-bindir", empty)
		if r.code != 1 || !strings.Contains(r.stderr, filepath.Join(empty, "mysqld")) {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		noWork(t, archive)
	})

	t.Run("not enough free space", func(t *testing.T) {
		if os.Geteuid() != 0 {
			if testbed.InCI() {
				t.Fatal("mounting a tmpfs needs root: run the tests as root (as .ci/run does)")
			}
			t.Skip("mounting a tmpfs needs root: run the tests as root")
		}
		var plugins int
		srv.DB(t).QueryRowContext(t.Context(), "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'").Scan(&plugins)
		if plugins == 0 {
			srv.Exec(t, "INSTALL PLUGIN clone SONAME 'mysql_clone.so'")
		}
		small := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", small).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		defer exec.Command("umount", small).Run()
		archive := t.TempDir()
		r := runPhysical(t, srv, srv.DSNFor(testbed.PitrUser, ""), srv.PitrPassword(), "--storage", "file://"+archive, "--clone-dir", small)
		t.Logf("stderr: %s", strings.TrimSpace(r.stderr))
		if r.code != 1 || !strings.Contains(r.stderr, "not enough free space for the clone in "+small) || !strings.Contains(r.stderr, "--clone-dir") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		noWork(t, archive)
		if left := dirEntries(t, small); len(left) > 0 {
			t.Errorf("the clone directory holds %v", left)
		}
	})
}

// physFill gives srv about mb MiB of rows that compress about 2:1, in one
// table: random hex, 1 KiB a row.
func physFill(t *testing.T, srv *testbed.MariaDB, mb int) {
	t.Helper()
	srv.Exec(t, "CREATE DATABASE rss")
	srv.Exec(t, "CREATE TABLE rss.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1100) NOT NULL) ENGINE=InnoDB")
	pad := "CONCAT(" + strings.TrimSuffix(strings.Repeat("SHA2(RAND(), 512), ", 8), ", ") + ")"
	srv.Exec(t, "INSERT INTO rss.t (pad) VALUES ("+pad+")")
	for rows := 1; rows < mb<<10; rows *= 2 {
		srv.Exec(t, "INSERT INTO rss.t (pad) SELECT "+pad+" FROM rss.t")
	}
}

// TestPhysicalSnapshotPeakRSS takes a physical snapshot of a few hundred MB
// on MariaDB 10.11 (mariadb-backup) and MySQL 9.7 (clone) with the binary
// into a file:// archive and holds its peak RSS to 64 MB; into S3, to 64 MB
// plus the S3 store's three part buffers. On MariaDB that is the rusage maxrss,
// which covers mariadb-backup as well; on MySQL the rusage would be the
// mysqld that finishes the clone (a server, some 230 MB for a few seconds),
// so the snapshot process's own VmHWM is sampled instead.
func TestPhysicalSnapshotPeakRSS(t *testing.T) {
	const limit = 64 << 20
	for _, tc := range []struct {
		f  testbed.Flavor
		s3 bool
	}{{testbed.MariaDB1011, false}, {testbed.MySQL97, false}, {testbed.MariaDB1011, true}} {
		f := tc.f
		name := f.String()
		if tc.s3 {
			name += " to S3"
		}
		t.Run(name, func(t *testing.T) {
			if f == testbed.MariaDB1011 {
				testbed.Binary(t, "mariadb-backup", testbed.MariaDBInstall)
			}
			srv := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ExtraArgs: []string{"--innodb-buffer-pool-size=512M"}})
			begin := time.Now()
			physFill(t, srv, 256)
			filled := time.Since(begin)
			archive, url := t.TempDir(), ""
			if tc.s3 {
				// versitygw keeps the objects as files in its data directory.
				gw := testbed.StartS3(t)
				gw.SetEnv(t)
				url, archive = gw.URL("rss"), filepath.Join(gw.DataDir, gw.Bucket)
			} else {
				url = "file://" + archive
			}
			r := runPhysical(t, srv, srv.DSNFor(testbed.PitrUser, ""), srv.PitrPassword(), "--storage", url)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			var stored int64
			for _, p := range dirEntries(t, archive) {
				if fi, err := os.Stat(filepath.Join(archive, p)); err == nil && fi.Mode().IsRegular() {
					stored += fi.Size()
				}
			}
			t.Logf("%s: filled in %s; snapshot in %s, %.1f MB stored; rusage maxrss %.1f MB, own VmHWM %.1f MB",
				name, filled.Round(time.Millisecond), r.took.Round(time.Millisecond), float64(stored)/1e6, float64(r.maxRSS)/1e6, float64(r.hwm)/1e6)
			if stored < 100<<20 {
				t.Errorf("stored %d bytes: the dataset is too small to say anything", stored)
			}
			peak, what := r.maxRSS, "rusage maxrss"
			if f.MySQL() {
				peak, what = r.hwm, "VmHWM"
			}
			want := int64(limit)
			if tc.s3 {
				// The S3 store reads each part of an upload into a buffer
				// of part-size and keeps up to three.
				want += 3 * s3.DefaultPartSize
			}
			if peak == 0 || peak > want {
				t.Errorf("peak RSS (%s) %s, want at most %s", what, fmtMB(peak), fmtMB(want))
			}
		})
	}
}

func fmtMB(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
