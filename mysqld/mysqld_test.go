package mysqld

import (
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
