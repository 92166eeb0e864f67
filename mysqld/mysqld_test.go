package mysqld

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestInitStartStop initialises a datadir and starts a server on it on each
// test server release, with the release's own programs: a datadir that
// lies inside a hidden directory, as a restore's staging directory does
// (.data.restore-NNN/datadir), and the same InnoDB settings at both steps.
func TestInitStartStop(t *testing.T) {
	for _, f := range testbed.Servers(t) {
		t.Run(f.String(), func(t *testing.T) {
			f.Binary(t, f.ServerProgram())
			flavor := f.Family()
			dir, err := os.MkdirTemp("", "mysqld-") // short: the socket path is limited
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			data := dir + "/.data.restore-1/datadir"
			if err := os.Mkdir(filepath.Dir(data), 0o700); err != nil {
				t.Fatal(err)
			}
			finder := f.Programs()
			opts := Options{Flavor: flavor, Datadir: data, RunDir: dir + "/run", BufferPool: 64 << 20, Programs: finder}
			if err := Init(t.Context(), opts); err != nil {
				t.Fatal(err)
			}
			for _, skip := range []bool{false, true} {
				opts.SkipGrants = skip
				s, err := Start(t.Context(), opts)
				if err != nil {
					t.Fatal(err)
				}
				var net string
				if err := s.DB().QueryRow("SELECT @@skip_networking").Scan(&net); err != nil {
					t.Fatal(err)
				}
				if net != "1" {
					t.Errorf("skip_networking = %s: a temporary server must not accept outside connections", net)
				}
				var priv string
				if err := s.DB().QueryRow("SELECT @@secure_file_priv").Scan(&priv); err != nil {
					t.Fatal(err)
				}
				if want := filepath.Join(dir, "run", "files"); filepath.Clean(priv) != want {
					t.Errorf("secure_file_priv = %q, want its own %s", priv, want)
				}
				if !skip {
					if _, err := s.DB().Exec("CREATE DATABASE kept"); err != nil {
						t.Error(err)
					}
				}
				if err := s.Stop(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := os.Stat(data + "/kept"); err != nil {
				t.Errorf("data written before a clean stop is gone: %v", err)
			}
		})
	}
}

// TestRefusals checks what is refused before any program runs: a MySQL
// datadir named with a leading dot, and a server program of another
// release than the datadir's.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		opts    Options
		want    error
		wantMsg string
	}{
		{"mysql datadir named with a dot", Options{Flavor: MySQL, Datadir: dir + "/.data.restore-1"}, ErrDotDatadir, ".data.restore-1"},
		{"mariadb takes one", Options{Flavor: MariaDB, Datadir: dir + "/.data", Programs: programs.Finder{Dir: dir}}, ErrNotInstalled, "in " + dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Init(t.Context(), tc.opts)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Init: %v, want %v naming %q", err, tc.want, tc.wantMsg)
			}
			_, err = Start(t.Context(), tc.opts)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Start: %v, want %v naming %q", err, tc.want, tc.wantMsg)
			}
		})
	}
}

func TestCheckRelease(t *testing.T) {
	tests := []struct {
		name, program, release string
		ok                     bool
	}{
		{"same release", "9.7.4-2", "9.7.2", true},
		{"mariadb patch releases", "10.11.19", "10.11.6-MariaDB-log", true},
		{"newer server", "9.7.4-2", "8.4.3", false},
		{"older server", "10.11.19", "11.8.9-MariaDB", false},
		{"release unknown", "9.7.4", "", true},
		{"program version unknown", "", "8.4.3", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkRelease(programs.Program{Path: "/x/mysqld", Version: tt.program}, tt.release)
			if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrRelease) {
				t.Errorf("checkRelease(%s, %s) = %v, want ok %v", tt.program, tt.release, err, tt.ok)
			}
		})
	}
}

func TestSkipReplicaStart(t *testing.T) {
	tests := []struct{ flavor, version, want string }{
		{MySQL, "9.7.4-2", "--skip-replica-start"},
		{MySQL, "8.0.26", "--skip-replica-start"},
		{MySQL, "8.0.25", "--skip-slave-start"},
		{MySQL, "", "--skip-replica-start"},
		{MariaDB, "11.8.9", "--skip-slave-start"},
	}
	for _, tt := range tests {
		if got := skipReplicaStart(tt.flavor, tt.version); got != tt.want {
			t.Errorf("skipReplicaStart(%s, %s) = %s, want %s", tt.flavor, tt.version, got, tt.want)
		}
	}
}

func TestErrorLines(t *testing.T) {
	tests := []struct {
		name, out, want string
	}{
		{"install script failure keeps the error, not the advice",
			"Installing MariaDB/MySQL system tables in '/d' ...\n2026-11-27 [ERROR] InnoDB: Cannot allocate memory for the buffer pool\n\nInstallation of system tables failed!  Examine the logs in\n/d for more information.\n\nThe problem could be conflicting information in an external\nmy.cnf files. You can ignore these by doing:\n",
			"2026-11-27 [ERROR] InnoDB: Cannot allocate memory for the buffer pool | Installation of system tables failed!  Examine the logs in"},
		{"no error line: the last lines", "a\nb\nc\n", "a | b | c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorLines([]byte(tt.out), 10); got != tt.want {
				t.Errorf("errorLines = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMemoryArgs(t *testing.T) {
	tests := []struct {
		name   string
		flavor string
		pool   int64
		want   string
	}{
		{"default", MariaDB, 0, "[]"},
		{"mariadb small pool: redo at least 256 MiB", MariaDB, 128 << 20, "[--innodb-buffer-pool-size=134217728 --innodb-log-file-size=268435456]"},
		{"mariadb large pool: redo half of it", MariaDB, 2 << 30, "[--innodb-buffer-pool-size=2147483648 --innodb-log-file-size=1073741824]"},
		{"mysql: pool only", MySQL, 1 << 30, "[--innodb-buffer-pool-size=1073741824]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(memoryArgs(tt.flavor, tt.pool)); got != tt.want {
				t.Errorf("memoryArgs = %s, want %s", got, tt.want)
			}
		})
	}
}
