package mysqld_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
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
			opts := mysqld.Options{Flavor: flavor, Datadir: data, RunDir: dir + "/run", BufferPool: 64 << 20, Programs: finder}
			if err := mysqld.Init(t.Context(), opts); err != nil {
				t.Fatal(err)
			}
			for _, skip := range []bool{false, true} {
				opts.SkipGrants = skip
				s, err := mysqld.Start(t.Context(), opts)
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

			// A datadir with the settings it keeps for life other than
			// the defaults, as a snapshot of such a server records them.
			opts.Datadir, opts.RunDir, opts.SkipGrants = dir+"/data8k", dir+"/run8k", false
			opts.LowerCaseTableNames, opts.PageSize = 1, 8192
			if err := mysqld.Init(t.Context(), opts); err != nil {
				t.Fatal(err)
			}
			s, err := mysqld.Start(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			var lowerCase, pageSize int
			if err := s.DB().QueryRow("SELECT @@lower_case_table_names, @@innodb_page_size").Scan(&lowerCase, &pageSize); err != nil {
				t.Fatal(err)
			}
			if lowerCase != 1 || pageSize != 8192 {
				t.Errorf("lower_case_table_names %d, innodb_page_size %d; want 1 and 8192", lowerCase, pageSize)
			}
			if err := s.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
