package preflight

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunWithMariaDB(m, testbed.MariaDBOptions{})) }

var accountSeq atomic.Int64

// newAccount creates an account holding privs on *.* (GRANT OPTION as WITH
// GRANT OPTION) and returns its name and a pool connected as it.
func newAccount(t *testing.T, srv *testbed.MariaDB, privs []string) (string, *sql.DB) {
	t.Helper()
	name := fmt.Sprintf("pf%d", accountSeq.Add(1))
	srv.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw-%s'", name, name))
	var list []string
	option := ""
	for _, p := range privs {
		if p == "GRANT OPTION" {
			option = " WITH GRANT OPTION"
			continue
		}
		list = append(list, p)
	}
	if len(list) == 0 {
		list = []string{"USAGE"}
	}
	srv.Exec(t, fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'%s", strings.Join(list, ", "), name, option))
	db, err := sql.Open("mysql", srv.DSNFor(name, "pw-"+name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return name, db
}

// documented returns the privileges Requirements lists for a role on
// MariaDB, without the conditional ones.
func documented(r Role) []string { return documentedFor(binlog.MariaDB, r) }

// documentedFor is documented for a server family.
func documentedFor(f binlog.Flavor, r Role) []string {
	var out []string
	for _, req := range Requirements(f, r) {
		if req.When == "" && !slices.Contains(out, req.Privilege) {
			out = append(out, req.Privilege)
		}
	}
	return out
}

// heldInstead returns a privilege of held that serves for priv in role r
// (Requirement.Also), or "".
func heldInstead(f binlog.Flavor, r Role, priv string, held []string) string {
	for _, req := range Requirements(f, r) {
		if req.Privilege != priv {
			continue
		}
		for _, a := range req.Also {
			if slices.Contains(held, a) {
				return a
			}
		}
	}
	return ""
}

// missingNames returns the privileges a *MissingError names, or fails.
func missingNames(t *testing.T, err error) []string {
	t.Helper()
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("Check = %v, want a *MissingError", err)
	}
	var out []string
	for _, m := range me.Missing {
		out = append(out, m.Privilege)
	}
	return out
}

// TestCheckNamesEachMissingPrivilege gives, on MariaDB and on MySQL, for
// each role, an account every documented privilege but one and expects the
// preflight to name exactly that one and the GRANT that adds it; with all
// of them it passes.
func TestCheckNamesEachMissingPrivilege(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) { checkNamesEachMissingPrivilege(t, f) })
	}
}

func checkNamesEachMissingPrivilege(t *testing.T, f testbed.Flavor) {
	family := binlog.Flavor(f.Family())
	shared := testbed.PackageServer(t, f)
	// Stored functions need SUPER unless the server trusts function
	// creators; with that setting the restore's list has no condition.
	trusting := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ExtraArgs: []string{"--log-bin-trust-function-creators=ON"}})
	for _, r := range Roles {
		srv := shared
		if r == Restore {
			srv = trusting
		}
		privs := documentedFor(family, r)
		t.Run(string(r)+"/all", func(t *testing.T) {
			_, db := newAccount(t, srv, privs)
			if err := Check(t.Context(), db, family, r); err != nil {
				t.Fatalf("an account with the documented privileges fails the preflight: %v", err)
			}
		})
		for _, without := range privs {
			t.Run(string(r)+"/without "+without, func(t *testing.T) {
				rest := slices.DeleteFunc(slices.Clone(privs), func(p string) bool { return p == without })
				name, db := newAccount(t, srv, rest)
				err := Check(t.Context(), db, "", r)
				if by := heldInstead(family, r, without, rest); by != "" {
					// MySQL's SYSTEM_VARIABLES_ADMIN covers
					// SESSION_VARIABLES_ADMIN.
					if err != nil {
						t.Fatalf("%s serves for %s, but the preflight says: %v", by, without, err)
					}
					return
				}
				if got := missingNames(t, err); !slices.Equal(got, []string{without}) {
					t.Fatalf("missing %q, want exactly %q: %v", got, without, err)
				}
				fix := fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'", without, name)
				if without == "GRANT OPTION" {
					fix = fmt.Sprintf("GRANT USAGE ON *.* TO '%s'@'%%' WITH GRANT OPTION", name)
				}
				if msg := err.Error(); !strings.Contains(msg, "lacks "+without+" (needed by "+r.title()+" to ") || !strings.Contains(msg, "run: "+fix) {
					t.Fatalf("message %q does not name %s, %s and %q", msg, without, r.title(), fix)
				}
			})
		}
	}
	t.Run("restore/stored functions need SUPER on a server that does not trust their creators", func(t *testing.T) {
		_, db := newAccount(t, shared, documentedFor(family, Restore))
		err := Check(t.Context(), db, family, Restore)
		if got := missingNames(t, err); !slices.Equal(got, []string{"SUPER"}) {
			t.Fatalf("missing %q, want SUPER: %v", got, err)
		}
		if !strings.Contains(err.Error(), "log_bin_trust_function_creators=ON instead") {
			t.Fatalf("the message does not offer the server setting: %v", err)
		}
	})
}

// TestCheckReadsRolesAndScopes checks the privileges the server really
// applies: a default role and the roles granted to it count, a role that
// is granted but not the default does not, PUBLIC counts, and a database
// grant does not serve where *.* is needed.
func TestCheckReadsRolesAndScopes(t *testing.T) {
	srv := testbed.PackageMariaDB(t)
	t.Run("default role", func(t *testing.T) {
		name, db := newAccount(t, srv, nil)
		srv.Exec(t, "CREATE OR REPLACE ROLE pf_stream")
		srv.Exec(t, "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO pf_stream")
		srv.Exec(t, fmt.Sprintf("GRANT pf_stream TO '%s'@'%%'", name))
		srv.Exec(t, fmt.Sprintf("SET DEFAULT ROLE pf_stream FOR '%s'@'%%'", name))
		if err := Check(t.Context(), db, binlog.MariaDB, Streamer); err != nil {
			t.Fatalf("privileges of the default role do not count: %v", err)
		}
	})
	t.Run("roles granted to the default role", func(t *testing.T) {
		name, db := newAccount(t, srv, nil)
		srv.Exec(t, "CREATE OR REPLACE ROLE pf_outer")
		srv.Exec(t, "CREATE OR REPLACE ROLE pf_inner")
		srv.Exec(t, "GRANT REPLICATION SLAVE ON *.* TO pf_outer")
		srv.Exec(t, "GRANT BINLOG MONITOR ON *.* TO pf_inner")
		srv.Exec(t, "GRANT pf_inner TO pf_outer")
		srv.Exec(t, fmt.Sprintf("GRANT pf_outer TO '%s'@'%%'", name))
		srv.Exec(t, fmt.Sprintf("SET DEFAULT ROLE pf_outer FOR '%s'@'%%'", name))
		if err := Check(t.Context(), db, binlog.MariaDB, Streamer); err != nil {
			t.Fatalf("privileges of a role granted to the default role do not count: %v", err)
		}
	})
	t.Run("granted but not the default", func(t *testing.T) {
		name, db := newAccount(t, srv, nil)
		srv.Exec(t, "CREATE OR REPLACE ROLE pf_idle")
		srv.Exec(t, "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO pf_idle")
		srv.Exec(t, fmt.Sprintf("GRANT pf_idle TO '%s'@'%%'", name))
		err := Check(t.Context(), db, binlog.MariaDB, Streamer)
		if got := missingNames(t, err); !slices.Equal(got, []string{"REPLICATION SLAVE", "BINLOG MONITOR"}) {
			t.Fatalf("missing %q: %v", got, err)
		}
		want := fmt.Sprintf("role 'pf_idle' is granted but not active at login (SET DEFAULT ROLE `pf_idle` FOR '%s'@'%%')", name)
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("message %q does not say %q", err, want)
		}
		// The advice works.
		srv.Exec(t, fmt.Sprintf("SET DEFAULT ROLE `pf_idle` FOR '%s'@'%%'", name))
		db.SetMaxIdleConns(0) // a new connection enables the default role
		if err := Check(t.Context(), db, binlog.MariaDB, Streamer); err != nil {
			t.Fatalf("after SET DEFAULT ROLE: %v", err)
		}
	})
	t.Run("database grants do not serve for *.*", func(t *testing.T) {
		name, db := newAccount(t, srv, []string{"RELOAD", "BINLOG MONITOR", "SHOW VIEW", "TRIGGER", "EVENT"})
		srv.Exec(t, fmt.Sprintf("GRANT SELECT ON mysql.* TO '%s'@'%%'", name))
		srv.Exec(t, fmt.Sprintf("GRANT SELECT (User) ON mysql.global_priv TO '%s'@'%%'", name))
		err := Check(t.Context(), db, binlog.MariaDB, Logical)
		if got := missingNames(t, err); !slices.Equal(got, []string{"SELECT"}) {
			t.Fatalf("missing %q, want SELECT: %v", got, err)
		}
	})
	t.Run("the password hash stays out of the message", func(t *testing.T) {
		name, db := newAccount(t, srv, nil)
		var hash string
		if err := srv.DB(t).QueryRow("SELECT authentication_string FROM mysql.user WHERE user = ?", name).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		err := Check(t.Context(), db, binlog.MariaDB, Roles...)
		if hash == "" || strings.Contains(err.Error(), strings.TrimPrefix(hash, "*")) {
			t.Fatalf("the message holds the account's password hash (or there is none): %v", err)
		}
	})
}

func TestCheckPublic(t *testing.T) {
	// PUBLIC applies to every account, so it gets a server of its own.
	srv := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	srv.Exec(t, "GRANT BINLOG MONITOR ON *.* TO PUBLIC")
	_, db := newAccount(t, srv, []string{"REPLICATION SLAVE"})
	if err := Check(t.Context(), db, binlog.MariaDB, Streamer); err != nil {
		t.Fatalf("privileges granted to PUBLIC do not count: %v", err)
	}
}

// TestTestbedAccountIsTheDocumentedOne keeps the account every other
// package's tests run as equal to what the grants command prints for the
// streamer and both snapshots: it passes the preflight, and holds nothing
// more.
func TestTestbedAccountIsTheDocumentedOne(t *testing.T) {
	srv := testbed.PackageMariaDB(t)
	db, err := sql.Open("mysql", srv.PitrDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Check(t.Context(), db, binlog.MariaDB, Streamer, Logical, Physical); err != nil {
		t.Fatalf("the test account fails the preflight: %v", err)
	}
	p, err := Read(t.Context(), db, binlog.MariaDB)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(documented(Streamer), documented(Logical)...), documented(Physical)...)
	for _, g := range p.Grants {
		for _, pr := range g.Privileges {
			if pr.Name != "USAGE" && !slices.Contains(want, pr.Name) {
				t.Errorf("the test account holds %s on %s, which no documented role needs", pr.Name, g.Object)
			}
		}
	}
}
