package mysqld

import (
	"fmt"
	"os"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestInitStartStop(t *testing.T) {
	testbed.Binary(t, "mariadbd", testbed.MariaDBInstall)
	dir, err := os.MkdirTemp("", "mysqld-") // short: the socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := dir + "/data"
	if err := Init(t.Context(), MariaDB, data); err != nil {
		t.Fatal(err)
	}
	for _, skip := range []bool{false, true} {
		s, err := Start(t.Context(), Options{Flavor: MariaDB, Datadir: data, RunDir: dir + "/run", SkipGrants: skip})
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
		if !skip {
			s.DB().Exec("CREATE DATABASE kept")
		}
		if err := s.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(data + "/kept"); err != nil {
		t.Errorf("data written before a clean stop is gone: %v", err)
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
