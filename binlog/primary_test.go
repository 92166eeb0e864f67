package binlog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestFindPrimary follows a failover between a source and its GTID
// replica: the primary is the one writable server; while both are
// read-only (mid-failover) or both writable (the old primary not fenced
// off), there is none; a server that is down is not it; a server listed
// under two addresses counts once.
func TestFindPrimary(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) {
			a := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 1})
			b := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 2})
			a.Exec(t, "CREATE DATABASE app")
			testbed.ReplicateFrom(t, b, a)
			// a twice, the second time by a name: one server, however reached.
			byName, err := mysql.ParseDSN(a.PitrDSN())
			if err != nil {
				t.Fatal(err)
			}
			byName.Addr = fmt.Sprintf("localhost:%d", a.Port())
			again, err := NewSource(byName)
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			sources := []*Source{newSource(t, a), newSource(t, b), again}
			steps := []struct {
				name string
				do   func()
				want int // index of the primary, -1 for none
			}{
				{"a source and its replica", func() {}, 0},
				{"the source made read-only", func() { a.Exec(t, "SET GLOBAL read_only = ON") }, -1},
				{"the replica promoted", func() {
					if f.MySQL() {
						b.Exec(t, "STOP REPLICA")
					} else {
						b.Exec(t, "STOP SLAVE")
					}
					b.Exec(t, "SET GLOBAL read_only = OFF")
				}, 1},
				{"the old source writable again", func() { a.Exec(t, "SET GLOBAL read_only = OFF") }, -1},
				{"the old source down", func() {
					if err := a.Kill(); err != nil {
						t.Fatal(err)
					}
				}, 1},
			}
			for _, st := range steps {
				st.do()
				got, err := FindPrimary(t.Context(), sources)
				switch {
				case st.want < 0 && !errors.Is(err, ErrNoPrimary):
					t.Errorf("%s: primary %v, err %v; want ErrNoPrimary", st.name, got.Source, err)
				case st.want >= 0 && (err != nil || got.Source != sources[st.want]):
					t.Errorf("%s: primary %v, err %v; want server %d", st.name, got.Source, err, st.want)
				case st.want >= 0 && got.Info.ServerID != uint32(st.want+1):
					t.Errorf("%s: server_id %d, want %d", st.name, got.Info.ServerID, st.want+1)
				}
				if err != nil {
					t.Logf("%s: %v", st.name, err)
				}
			}
		})
	}
}
