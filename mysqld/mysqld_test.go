package mysqld

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

func TestDatadirArgs(t *testing.T) {
	for _, tt := range []struct {
		name                string
		lowerCase, pageSize int
		want                string
	}{
		{"not recorded", 0, 0, "[]"},
		{"the defaults", 0, 16384, "[]"},
		{"others", 1, 8192, "[--lower-case-table-names=1 --innodb-page-size=8192]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(datadirArgs(Options{LowerCaseTableNames: tt.lowerCase, PageSize: tt.pageSize})); got != tt.want {
				t.Errorf("datadirArgs = %s, want %s", got, tt.want)
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

// TestStartArgs pins both command lines Start builds: a restore's
// temporary server, alone on its socket with the settings a restore
// relies on, and a Bare server that has only the launcher's options and
// the caller's.
func TestStartArgs(t *testing.T) {
	user := ""
	if os.Geteuid() == 0 {
		user = " --user=root"
	}
	base := "--no-defaults --datadir=/d --socket=/r/mysqld.sock --pid-file=/r/mysqld.pid --log-error=/r/error.log --tmpdir=/r/tmp"
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"temporary mariadb", Options{Flavor: MariaDB, Datadir: "/d", RunDir: "/r", ServerID: 7, Args: []string{"--x"}},
			base + " --relay-log=/r/relay-bin --skip-networking --secure-file-priv=/r/files --local-infile=ON --server-id=7 --skip-slave-start" +
				" --max-allowed-packet=1G --innodb-flush-log-at-trx-commit=2 --sync-binlog=0" + user + " --x"},
		{"temporary mysql without grants", Options{Flavor: MySQL, Datadir: "/d", RunDir: "/r", ServerID: 7, SkipGrants: true},
			base + " --relay-log=/r/relay-bin --skip-networking --secure-file-priv=/r/files --local-infile=ON --server-id=7 --skip-replica-start" +
				" --max-allowed-packet=1G --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --skip-log-bin --mysqlx=OFF --gtid-mode=ON_PERMISSIVE" +
				" --skip-grant-tables" + user},
		{"bare on a port", Options{Flavor: MySQL, Datadir: "/d", RunDir: "/r", Port: 3307, ServerID: 1, Bare: true, Args: []string{"--gtid-mode=ON"}},
			base + " --port=3307 --bind-address=127.0.0.1 --server-id=1" + user + " --gtid-mode=ON"},
		{"bare", Options{Flavor: MariaDB, Datadir: "/d", RunDir: "/r", Bare: true}, base + " --skip-networking" + user},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(startArgs(tt.opts, "9.7.4"), " "); got != tt.want {
				t.Errorf("startArgs =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
