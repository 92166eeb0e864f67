package testbed

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"github.com/mysql-pitr/mysql-pitr/preflight"
)

func TestParseServers(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Flavor
		wantErr  bool
	}{
		{"unset", "", []Flavor{MariaDB1011}, false},
		{"all", "all", []Flavor{MariaDB1011, MariaDB118, MySQL97}, false},
		{"one", "mysql-9.7", []Flavor{MySQL97}, false},
		{"several in their order, once each", " mysql-9.7, mariadb-11.8,mysql-9.7", []Flavor{MySQL97, MariaDB118}, false},
		{"unknown", "mysql-8.0", nil, true},
		{"empty item", "mysql-9.7,", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseServers(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseServers(%q) err = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseServers(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSelectAmong(t *testing.T) {
	for _, tt := range []struct {
		name            string
		selected, among []Flavor
		want            []Flavor
	}{
		{"all, two of them", Flavors, []Flavor{MySQL97, MariaDB1011}, []Flavor{MariaDB1011, MySQL97}},
		{"the default", []Flavor{MariaDB1011}, []Flavor{MariaDB1011, MySQL97}, []Flavor{MariaDB1011}},
		{"none of them", []Flavor{MariaDB118}, []Flavor{MariaDB1011, MySQL97}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := selectAmong(tt.selected, tt.among); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("selectAmong(%v, %v) = %v, want %v", tt.selected, tt.among, got, tt.want)
			}
		})
	}
}

func TestFlavorNames(t *testing.T) {
	for _, f := range Flavors {
		got, err := ParseFlavor(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFlavor(%q) = %v, %v; want %v", f, got, err, f)
		}
	}
	if got, want := Flavor(0), MariaDB1011; got != want {
		t.Errorf("zero Flavor = %v, want %v", got, want)
	}
	if _, err := StartMariaDB(MariaDBOptions{Flavor: Flavor(42)}); err == nil {
		t.Error("StartMariaDB with an unknown flavor succeeded")
	}
}

// TestPitrGrantsAreTheDocumentedOnes keeps PitrUser's privileges equal to
// what `mysql-pitr grants` prints for the streamer and both snapshots, on
// each family.
func TestPitrGrantsAreTheDocumentedOnes(t *testing.T) {
	roles := []preflight.Role{preflight.Streamer, preflight.Logical, preflight.Physical}
	account := preflight.ParseAccount(PitrUser + "@%")
	for _, tt := range []struct {
		flavor binlog.Flavor
		grants string
	}{
		{binlog.MariaDB, pitrGrants},
		{binlog.MySQL, mysqlPitrGrants},
	} {
		script := preflight.Script(tt.flavor, roles, account)
		want := fmt.Sprintf("GRANT %s ON *.* TO 'pitr'@'%%';", tt.grants)
		if !strings.Contains(script, want) {
			t.Errorf("%s: grants prints\n%s\nwithout %q", tt.flavor, script, want)
		}
	}
}

// TestEachServer starts each flavor as its official image would and checks
// what tests rely on: the version, GTIDs, name resolution off, the binlog
// on and readable with the flavor's own tool, root and PitrUser over TCP
// (with and without the server's own TLS certificate) and the socket,
// PitrUser passing the preflight, the install's accounts, and restarts.
func TestEachServer(t *testing.T) {
	t.Parallel()
	for _, f := range Flavors {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			m := NewMariaDB(t, MariaDBOptions{Flavor: f, ServerID: 7})
			t.Logf("%s %s started in %s", f, m.Version(), m.StartupTime())
			wantVersion := map[Flavor]string{MariaDB1011: "10.11.", MariaDB118: "11.8.", MySQL97: "9.7."}[f]
			if !strings.HasPrefix(m.Version(), wantVersion) {
				t.Errorf("version %q, want %s*", m.Version(), wantVersion)
			}
			if got := m.Flavor(); got != f {
				t.Errorf("Flavor() = %v, want %v", got, f)
			}

			t.Run("connections", func(t *testing.T) { testConnections(t, m) })
			t.Run("settings", func(t *testing.T) { testSettings(t, m) })
			t.Run("accounts", func(t *testing.T) { testAccounts(t, m) })
			t.Run("preflight", func(t *testing.T) {
				db := open(t, m.PitrDSN())
				got, err := preflight.DetectFlavor(t.Context(), db)
				if err != nil || string(got) != f.Family() {
					t.Errorf("preflight.DetectFlavor = %q, %v; want %q", got, err, f.Family())
				}
				if err := preflight.Check(t.Context(), db, binlog.Flavor(f.Family()), preflight.Streamer, preflight.Logical, preflight.Physical); err != nil {
					t.Errorf("the pitr user fails the preflight: %v", err)
				}
			})
			t.Run("binlog", func(t *testing.T) { testBinlog(t, m) })
			t.Run("restarts", func(t *testing.T) { testRestarts(t, m) })
		})
	}
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// sslCipher is the session's TLS cipher, "" for a plaintext connection.
func sslCipher(t *testing.T, db *sql.DB) string {
	t.Helper()
	var name, cipher string
	if err := db.QueryRowContext(t.Context(), "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
		t.Fatalf("Ssl_cipher: %v", err)
	}
	return cipher
}

func testConnections(t *testing.T, m *MariaDB) {
	// MariaDB 10.11 has no certificate unless a test gives it one; the
	// others make their own (MySQL at --initialize, MariaDB 11.4+ at
	// start), which no client can verify.
	ownCert := m.Flavor() != MariaDB1011
	type connection struct {
		name string
		cfg  *mysql.Config
		tls  string
	}
	cases := []connection{
		{"root tcp", m.config("root", ""), ""},
		{"root tcp tls preferred", m.config("root", ""), "preferred"},
		{"root socket", m.socketConfig("root", ""), ""},
		{"pitr tcp", m.config(PitrUser, m.PitrPassword()), ""},
		{"pitr tcp tls preferred", m.config(PitrUser, m.PitrPassword()), "preferred"},
		{"pitr socket", m.socketConfig(PitrUser, m.PitrPassword()), ""},
	}
	if ownCert {
		// Only a server that offers TLS can be reached with skip-verify.
		cases = append(cases, connection{"pitr tcp tls skip-verify", m.config(PitrUser, m.PitrPassword()), "skip-verify"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.TLSConfig = c.tls
			db := open(t, c.cfg.FormatDSN())
			var version string
			if err := db.QueryRowContext(t.Context(), "SELECT VERSION()").Scan(&version); err != nil {
				t.Fatalf("SELECT VERSION(): %v", err)
			}
			if version != m.Version() {
				t.Errorf("VERSION() = %q, want %q", version, m.Version())
			}
			cipher := sslCipher(t, db)
			if wantTLS := c.tls != "" && ownCert; (cipher != "") != wantTLS {
				t.Errorf("Ssl_cipher = %q, want TLS %v", cipher, wantTLS)
			}
		})
	}
	t.Run("pitr wrong password", func(t *testing.T) {
		db := open(t, m.DSNFor(PitrUser, "wrong"))
		if err := db.PingContext(t.Context()); err == nil {
			t.Error("the pitr user got in with a wrong password")
		}
	})
}

func (m *MariaDB) socketConfig(user, pass string) *mysql.Config {
	c := m.config(user, pass)
	c.Net, c.Addr = "unix", m.Socket()
	return c
}

func testSettings(t *testing.T, m *MariaDB) {
	db := m.DB(t)
	var skipNameResolve, logBin int
	var serverID uint32
	if err := db.QueryRowContext(t.Context(), "SELECT @@skip_name_resolve, @@log_bin, @@server_id").Scan(&skipNameResolve, &logBin, &serverID); err != nil {
		t.Fatal(err)
	}
	if skipNameResolve != 1 || logBin != 1 || serverID != 7 {
		t.Errorf("skip_name_resolve, log_bin, server_id = %d, %d, %d; want 1, 1, 7", skipNameResolve, logBin, serverID)
	}
	if m.Flavor().MySQL() {
		var mode, consistency string
		if err := db.QueryRowContext(t.Context(), "SELECT @@gtid_mode, @@enforce_gtid_consistency").Scan(&mode, &consistency); err != nil {
			t.Fatal(err)
		}
		if mode != "ON" || consistency != "ON" {
			t.Errorf("gtid_mode, enforce_gtid_consistency = %s, %s; want ON, ON", mode, consistency)
		}
	} else {
		var strict int
		if err := db.QueryRowContext(t.Context(), "SELECT @@gtid_strict_mode").Scan(&strict); err != nil {
			t.Fatal(err)
		}
		if strict != 1 {
			t.Errorf("gtid_strict_mode = %d, want 1", strict)
		}
	}
	var charset string
	if err := db.QueryRowContext(t.Context(), "SELECT @@character_set_server").Scan(&charset); err != nil {
		t.Fatal(err)
	}
	if charset != "utf8mb4" {
		t.Errorf("character_set_server = %s, want utf8mb4", charset)
	}
}

// testAccounts checks the accounts the install (and on MySQL the image's
// entrypoint) makes are there, untouched.
func testAccounts(t *testing.T, m *MariaDB) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	want := map[Flavor][]string{
		// mariadb-install-db, as Debian's package runs it, also makes
		// root@<this host's name>.
		MariaDB1011: {"mariadb.sys@localhost", "pitr@%", "root@127.0.0.1", "root@::1", "root@localhost", "root@" + host},
		// --cross-bootstrap, as the image runs it, makes no root@<hostname>.
		MariaDB118: {"mariadb.sys@localhost", "pitr@%", "root@127.0.0.1", "root@::1", "root@localhost"},
		MySQL97:    {"mysql.infoschema@localhost", "mysql.session@localhost", "mysql.sys@localhost", "pitr@%", "root@%", "root@localhost"},
	}[m.Flavor()]
	slices.Sort(want)
	rows, err := m.DB(t).QueryContext(t.Context(), "SELECT CONCAT(user, '@', host) FROM mysql.user ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("accounts = %q, want %q", got, want)
	}
	if m.Flavor().MySQL() {
		var plugin string
		if err := m.DB(t).QueryRowContext(t.Context(), "SELECT plugin FROM mysql.user WHERE user = ? AND host = '%'", PitrUser).Scan(&plugin); err != nil {
			t.Fatal(err)
		}
		if plugin != "caching_sha2_password" {
			t.Errorf("pitr's auth plugin = %s, want caching_sha2_password (MySQL's default)", plugin)
		}
	}
}

// testBinlog writes, checks the GTID state counts only what was written
// (the setup stays out of the binlog) and reads the binlog with the
// flavor's own binlog tool.
func testBinlog(t *testing.T, m *MariaDB) {
	m.Exec(t, "CREATE DATABASE binlog_check")
	m.Exec(t, "CREATE TABLE binlog_check.t (id INT PRIMARY KEY)")
	m.Exec(t, "INSERT INTO binlog_check.t VALUES (1)")
	db := m.DB(t)
	if m.Flavor().MySQL() {
		var uuid, executed string
		if err := db.QueryRowContext(t.Context(), "SELECT @@server_uuid, @@gtid_executed").Scan(&uuid, &executed); err != nil {
			t.Fatal(err)
		}
		if want := uuid + ":1-3"; executed != want {
			t.Errorf("gtid_executed = %q, want %q (2 DDL + 1 insert)", executed, want)
		}
	} else {
		var pos string
		if err := db.QueryRowContext(t.Context(), "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
			t.Fatal(err)
		}
		if want := "0-7-3"; pos != want {
			t.Errorf("gtid_binlog_pos = %q, want %q (2 DDL + 1 insert)", pos, want)
		}
	}

	files := m.BinlogFiles(t)
	if len(files) == 0 {
		t.Fatal("no binlog files")
	}
	tool := m.Flavor().Binary(t, m.Flavor().BinlogTool())
	out, err := exec.CommandContext(t.Context(), tool, append([]string{"--no-defaults"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, childout.Last(string(out), 20, "\n"))
	}
	if !strings.Contains(string(out), "CREATE DATABASE binlog_check") {
		t.Errorf("%s's output lacks CREATE DATABASE binlog_check:\n%s", tool, childout.Last(string(out), 30, "\n"))
	}
	if strings.Contains(string(out), m.PitrPassword()) {
		t.Errorf("the binlog holds the pitr password")
	}
	// A root's tool is the server's release, not the host's (whose
	// mariadb-binlog names only its own version).
	if m.Flavor().BinDir() == "" {
		return
	}
	out, err = exec.CommandContext(t.Context(), tool, "--no-defaults", "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", tool, err, out)
	}
	if v := strings.SplitN(m.Version(), "-", 2)[0]; !strings.Contains(string(out), v) {
		t.Errorf("%s --version = %q, want release %s", tool, strings.TrimSpace(string(out)), v)
	}
}

func testRestarts(t *testing.T, m *MariaDB) {
	m.Exec(t, "CREATE DATABASE restarts")
	m.Exec(t, "CREATE TABLE restarts.t (id INT PRIMARY KEY)")
	m.Exec(t, "INSERT INTO restarts.t VALUES (1)")
	for i, halt := range []struct {
		name string
		do   func() error
	}{{"stop", m.Stop}, {"kill", m.Kill}} {
		before := m.BinlogFiles(t)
		if err := halt.do(); err != nil {
			t.Fatalf("%s: %v", halt.name, err)
		}
		if err := m.DB(t).PingContext(t.Context()); err == nil {
			t.Fatalf("server still answers after %s", halt.name)
		}
		if err := m.Start(); err != nil {
			t.Fatalf("start after %s: %v", halt.name, err)
		}
		if got, want := countRows(t, m.DB(t), "restarts.t"), i+1; got != want {
			t.Errorf("rows after %s = %d, want %d", halt.name, got, want)
		}
		if after := m.BinlogFiles(t); len(after) <= len(before) {
			t.Errorf("binlog files after %s and start = %v, want more than %v", halt.name, after, before)
		}
		m.Exec(t, "INSERT INTO restarts.t VALUES (?)", i+2)
	}
	// PitrUser still gets in after the restarts.
	if err := open(t, m.PitrDSN()).PingContext(t.Context()); err != nil {
		t.Errorf("pitr after restarts: %v", err)
	}
}

// TestServerTLS: a test's TLS option replaces the server's own certificate
// with one from the test's CA and can refuse plaintext TCP, on the flavors
// whose servers otherwise make their own (MariaDB 10.11's is covered by the
// TLS tests of the packages that use it).
func TestServerTLS(t *testing.T) {
	t.Parallel()
	for _, f := range []Flavor{MariaDB118, MySQL97} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			ca := NewCA(t, "testbed "+f.String())
			cert, key := ca.ServerCert(t, "127.0.0.1")
			m := NewMariaDB(t, MariaDBOptions{Flavor: f,
				TLS: &ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, RequireSecureTransport: true}})
			pem, err := os.ReadFile(ca.CertFile)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(pem)
			cfg := m.config(PitrUser, m.PitrPassword())
			cfg.TLS = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
			c, err := mysql.NewConnector(cfg)
			if err != nil {
				t.Fatal(err)
			}
			db := sql.OpenDB(c)
			defer db.Close()
			if cipher := sslCipher(t, db); cipher == "" {
				t.Error("no TLS on a connection verified against the test's CA")
			}
			if err := open(t, m.PitrDSN()).PingContext(t.Context()); err == nil {
				t.Error("plaintext TCP accepted with require_secure_transport")
			}
		})
	}
}

// TestPackageServer: one shared server per flavor, with TestMain's options.
func TestPackageServer(t *testing.T) {
	t.Parallel()
	m := PackageServer(t, MariaDB118)
	if again := PackageServer(t, MariaDB118); again != m {
		t.Fatal("PackageServer returned two servers for one flavor")
	}
	if m == PackageMariaDB(t) {
		t.Fatal("PackageServer(MariaDB118) is the MariaDB 10.11 package server")
	}
	if got, want := m.Flavor(), MariaDB118; got != want {
		t.Errorf("flavor = %v, want %v", got, want)
	}
	if got, want := m.Options().ServerID, uint32(100); got != want {
		t.Errorf("server_id = %d, want %d from TestMain's options", got, want)
	}
}
