package snapshot

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// mariadbGrantTables are the tables that hold an account on MariaDB, with
// the columns naming the account.
var mariadbGrantTables = []string{"global_priv", "db", "tables_priv", "columns_priv", "procs_priv", "proxies_priv", "roles_mapping"}

// grantTableRows returns every row of mysql.table that belongs to
// user@host, each as its columns' text, sorted.
func grantTableRows(t *testing.T, db *sql.DB, table, user, host string) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT * FROM mysql."+table+" WHERE User = ? AND Host = ?", user, host)
	if err != nil {
		t.Fatalf("read mysql.%s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			b.WriteString(cols[i] + "=")
			if v.Valid {
				b.WriteString("'" + v.String + "'")
			} else {
				b.WriteString("NULL")
			}
			b.WriteString(" ")
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// installHost is the host of the root account mariadb-install-db creates
// for the machine's name, which a --skip-name-resolve server ignores.
func installHost(t *testing.T, db *sql.DB) string {
	t.Helper()
	var host string
	err := db.QueryRowContext(t.Context(), "SELECT Host FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1')").Scan(&host)
	if err != nil {
		t.Fatalf("the test server has no root@<hostname> as mariadb-install-db creates it: %v", err)
	}
	return host
}

// TestLogicalIgnoredAccounts snapshots a --skip-name-resolve server that
// holds accounts whose host is a name, which the server ignores but keeps
// in its grant tables (root@<hostname> as mariadb-install-db creates it,
// and an application account with grants of every level), loads it into
// another such server, and wants every row of those accounts back.
func TestLogicalIgnoredAccounts(t *testing.T) {
	t.Parallel()
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, src,
		"CREATE DATABASE shop",
		"CREATE TABLE shop.orders (id INT PRIMARY KEY, total DECIMAL(10,2), note VARCHAR(20))",
		"INSERT INTO shop.orders VALUES (1, 9.99, 'first')",
		"CREATE PROCEDURE shop.refresh() SELECT 1",
		"CREATE ROLE clerk",
		"GRANT SELECT ON shop.* TO clerk",
		// The server takes these with a warning that they work only
		// without --skip-name-resolve.
		"CREATE USER 'app'@'web01.example.com' IDENTIFIED BY 'app-secret-2' WITH MAX_USER_CONNECTIONS 7",
		"GRANT PROCESS ON *.* TO 'app'@'web01.example.com'",
		"GRANT SELECT, INSERT ON shop.* TO 'app'@'web01.example.com'",
		"GRANT DELETE ON shop.orders TO 'app'@'web01.example.com'",
		"GRANT UPDATE (total, note) ON shop.orders TO 'app'@'web01.example.com'",
		"GRANT EXECUTE ON PROCEDURE shop.refresh TO 'app'@'web01.example.com'",
		"GRANT clerk TO 'app'@'web01.example.com'",
		"SET DEFAULT ROLE clerk FOR 'app'@'web01.example.com'",
		// As after a restart: the server reloads the grant tables and
		// ignores the accounts whose host is a name.
		"FLUSH PRIVILEGES",
	)
	host := installHost(t, src.DB(t))
	accounts := []struct {
		name, user, host string
		// tables hold at least one row of the account on the source.
		tables []string
	}{
		{"root@<hostname>", "root", host, []string{"global_priv", "proxies_priv"}},
		{"app@web01.example.com", "app", "web01.example.com", []string{"global_priv", "db", "tables_priv", "columns_priv", "procs_priv", "roles_mapping"}},
	}
	for _, a := range accounts {
		if _, err := src.DB(t).ExecContext(t.Context(), "SHOW CREATE USER "+quoteIdent(a.user)+"@"+quoteIdent(a.host)); err == nil {
			t.Fatalf("the source server shows %s: the test needs it ignored", a.name)
		}
	}

	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := TakeLogical(t.Context(), LogicalOptions{Source: logicalConfig(t, src.PitrDSN()), Storage: st, Logger: logicalLogger(t), Threads: 2})
	if err != nil {
		t.Fatalf("TakeLogical: %v", err)
	}
	if err := LoadLogical(t.Context(), st, m, logicalConfig(t, dst.DSN()), LoadOptions{Threads: 2, Logger: logicalLogger(t)}); err != nil {
		t.Fatalf("LoadLogical: %v", err)
	}
	logicalCompareChecksums(t, src.DB(t), dst.DB(t))
	for _, a := range accounts {
		t.Run(a.name, func(t *testing.T) {
			for _, table := range mariadbGrantTables {
				want := grantTableRows(t, src.DB(t), table, a.user, a.host)
				got := grantTableRows(t, dst.DB(t), table, a.user, a.host)
				if len(want) == 0 && strings.Contains(" "+strings.Join(a.tables, " ")+" ", " "+table+" ") {
					t.Fatalf("the source holds no row of %s in mysql.%s: the test does not cover it", a.name, table)
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("mysql.%s rows of %s:\n got %q\nwant %q", table, a.name, got, want)
				}
			}
		})
	}
	// Accounts the server does see are restored from their statements as
	// before.
	if got, want := logicalGrants(t, dst.DB(t), "clerk"), logicalGrants(t, src.DB(t), "clerk"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("SHOW GRANTS FOR clerk:\n got %q\nwant %q", got, want)
	}
}

// TestGrantRowJSON: a grant table row keeps NULL apart from the empty
// string, and bytes that are not UTF-8, through the layout's JSON.
func TestGrantRowJSON(t *testing.T) {
	tests := []struct {
		name string
		row  grantRow
	}{
		{"null and empty", grantRow{Table: "db", Columns: []string{"a", "b"}, Values: [][]byte{nil, {}}}},
		{"not utf-8", grantRow{Table: "user", Columns: []string{"authentication_string"}, Values: [][]byte{{'$', 'A', 0xff, 0x00, 0x80, '\'', '\\'}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.row)
			if err != nil {
				t.Fatal(err)
			}
			var got grantRow
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if len(got.Values) != len(tt.row.Values) {
				t.Fatalf("%d values, want %d", len(got.Values), len(tt.row.Values))
			}
			for i, want := range tt.row.Values {
				if (got.Values[i] == nil) != (want == nil) || !bytes.Equal(got.Values[i], want) {
					t.Errorf("value %d = %#v, want %#v", i, got.Values[i], want)
				}
			}
		})
	}
}
