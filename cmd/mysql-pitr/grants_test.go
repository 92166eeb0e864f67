package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/preflight"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// grantsScript runs `mysql-pitr grants` and returns its output.
func grantsScript(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := runCLI(t, t.Context(), append([]string{"grants"}, args...)...)
	if code != 0 {
		t.Fatalf("grants %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

// runScript runs the statements of a grants script as root, with the
// password filled in; comment lines are skipped.
func runScript(t *testing.T, srv *testbed.MariaDB, script, password string) {
	t.Helper()
	if !strings.Contains(script, "IDENTIFIED BY <password>;") {
		t.Fatalf("the script leaves no <password> to fill in:\n%s", script)
	}
	script = strings.ReplaceAll(script, "<password>", "'"+password+"'")
	var stmt strings.Builder
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(line, "--") || strings.TrimSpace(line) == "" {
			continue
		}
		stmt.WriteString(line + "\n")
		if strings.HasSuffix(line, ";") {
			srv.Exec(t, strings.TrimSuffix(strings.TrimSpace(stmt.String()), ";"))
			stmt.Reset()
		}
	}
	if strings.TrimSpace(stmt.String()) != "" {
		t.Fatalf("unterminated statement in the script: %q", stmt.String())
	}
}

// account is a server account the tests connect as, with its password in a file.
type account struct {
	name, passwordFile string
	srv                *testbed.MariaDB
}

func (a account) dsn() string { return fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", a.name, a.srv.Port()) }

// scriptAccount creates an account from the grants command's output for roles.
func scriptAccount(t *testing.T, srv *testbed.MariaDB, name string, roles ...preflight.Role) account {
	t.Helper()
	var rs []string
	for _, r := range roles {
		rs = append(rs, string(r))
	}
	script := grantsScript(t, "--role", strings.Join(rs, ","), "--flavor", srv.Flavor().Family(), "--user", fmt.Sprintf("'%s'@'%%'", name))
	runScript(t, srv, script, "pw-"+name)
	return newAccountFile(t, srv, name)
}

func newAccountFile(t *testing.T, srv *testbed.MariaDB, name string) account {
	t.Helper()
	pf := filepath.Join(t.TempDir(), name+".password")
	if err := os.WriteFile(pf, []byte("pw-"+name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return account{name: name, passwordFile: pf, srv: srv}
}

// lackingAccount has every privilege a role's documented list holds but one.
func lackingAccount(t *testing.T, srv *testbed.MariaDB, name string, without string, roles ...preflight.Role) account {
	t.Helper()
	var privs []string
	for _, r := range roles {
		for _, req := range preflight.Requirements(family(srv), r) {
			if req.When == "" && req.Privilege != without && !slices.Contains(privs, req.Privilege) {
				privs = append(privs, req.Privilege)
			}
		}
	}
	option := ""
	if i := slices.Index(privs, "GRANT OPTION"); i >= 0 {
		privs = slices.Delete(privs, i, i+1)
		option = " WITH GRANT OPTION"
	}
	srv.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw-%s'", name, name))
	srv.Exec(t, fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'%s", strings.Join(privs, ", "), name, option))
	return newAccountFile(t, srv, name)
}

// family is the server's family as the preflight names it.
func family(srv *testbed.MariaDB) binlog.Flavor { return binlog.Flavor(srv.Flavor().Family()) }

// lacksRE finds the privileges a preflight error names.
var lacksRE = regexp.MustCompile(`(?:lacks |, | and )([A-Z][A-Z_ ]*[A-Z]) \(needed by `)

// assertLacks checks that a command failed with exit 1 and a one-line
// preflight error naming exactly priv and the GRANT for it.
func assertLacks(t *testing.T, code int, stderr, priv, user string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	var named []string
	for _, m := range lacksRE.FindAllStringSubmatch(last, -1) {
		named = append(named, m[1])
	}
	fix := fmt.Sprintf("run: GRANT %s ON *.* TO '%s'@'%%'", priv, user)
	if code != 1 || !slices.Equal(named, []string{priv}) || !strings.Contains(last, fix) {
		t.Fatalf("exit %d, names %q in %q; want exit 1, exactly %s and %q", code, named, last, priv, fix)
	}
}

func TestGrantsCommand(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) {
			// Stored functions would need SUPER for a restore on a server
			// that does not trust their creators; the script says so in a
			// comment.
			srv := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ExtraArgs: []string{"--log-bin-trust-function-creators=ON"}})
			for _, r := range preflight.Roles {
				t.Run(string(r), func(t *testing.T) {
					a := scriptAccount(t, srv, "g_"+string(r), r)
					db, err := sql.Open("mysql", srv.DSNFor(a.name, "pw-"+a.name))
					if err != nil {
						t.Fatal(err)
					}
					defer db.Close()
					if err := preflight.Check(t.Context(), db, family(srv), r); err != nil {
						t.Fatalf("the account the script creates fails the preflight: %v", err)
					}
				})
			}
			t.Run("all roles in one account", func(t *testing.T) {
				a := scriptAccount(t, srv, "g_all", preflight.Roles...)
				db, err := sql.Open("mysql", srv.DSNFor(a.name, "pw-"+a.name))
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if err := preflight.Check(t.Context(), db, family(srv), preflight.Roles...); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
	t.Run("mysql clone", func(t *testing.T) {
		out := grantsScript(t, "--role", "physical", "--flavor", "mysql", "--user", "bkp@localhost")
		for _, want := range []string{
			"CREATE USER IF NOT EXISTS 'bkp'@'localhost' IDENTIFIED BY <password>;",
			"GRANT BACKUP_ADMIN, PROCESS, SELECT ON *.* TO 'bkp'@'localhost';",
			"-- GRANT INSERT ON `mysql`.`plugin` TO 'bkp'@'localhost';",
		} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
	})
	t.Run("mysql xtrabackup", func(t *testing.T) {
		out := grantsScript(t, "--role", "xtrabackup", "--flavor", "mysql", "--user", "bkp@localhost")
		for _, want := range []string{
			"CREATE USER IF NOT EXISTS 'bkp'@'localhost' IDENTIFIED BY <password>;",
			"GRANT BACKUP_ADMIN, RELOAD, LOCK TABLES, PROCESS, REPLICATION CLIENT ON *.* TO 'bkp'@'localhost';",
			"GRANT SELECT ON `performance_schema`.`log_status` TO 'bkp'@'localhost';",
			"GRANT SELECT ON `performance_schema`.`keyring_component_status` TO 'bkp'@'localhost';",
		} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
	})
	t.Run("bad input", func(t *testing.T) {
		for _, args := range [][]string{
			{"--role", "backup"},
			{"--flavor", "postgres"},
			{"--user", "@'%'"},
			{"--role", "streamer", "extra"},
		} {
			if _, stderr, code := runCLI(t, t.Context(), append([]string{"grants"}, args...)...); code != 2 {
				t.Errorf("grants %q: exit %d, want 2: %s", args, code, stderr)
			}
		}
	})
}

// leastPrivilegeSchema creates what a snapshot must carry: tables with a
// foreign key, a view, routines, a trigger and an event with another
// definer, and accounts with a role.
func leastPrivilegeSchema(t *testing.T, db *testbed.MariaDB) {
	t.Helper()
	defaultRole := "SET DEFAULT ROLE approle FOR appuser@'%'"
	if db.Flavor().MySQL() {
		defaultRole = "SET DEFAULT ROLE approle TO appuser@'%'"
	}
	for _, q := range []string{
		"CREATE DATABASE app",
		"CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))",
		"INSERT INTO app.t VALUES (1,'a'),(2,'b'),(3,'c')",
		"CREATE TABLE app.parent (id INT PRIMARY KEY)",
		"CREATE TABLE app.child (id INT PRIMARY KEY, p INT, FOREIGN KEY (p) REFERENCES app.parent(id))",
		"INSERT INTO app.parent VALUES (1)", "INSERT INTO app.child VALUES (1,1)",
		"CREATE USER appuser@'%' IDENTIFIED BY 'app-pw'",
		"GRANT SELECT, INSERT, UPDATE, TRIGGER ON app.* TO appuser@'%'",
		"CREATE ROLE approle", "GRANT SELECT ON app.* TO approle", "GRANT approle TO appuser@'%'", defaultRole,
		"CREATE DEFINER=`appuser`@`%` VIEW app.v AS SELECT id FROM app.t",
		"CREATE DEFINER=`appuser`@`%` PROCEDURE app.p() SELECT 1",
		"CREATE FUNCTION app.f() RETURNS INT DETERMINISTIC RETURN 1",
		"CREATE DEFINER=`appuser`@`%` TRIGGER app.tr BEFORE INSERT ON app.t FOR EACH ROW SET NEW.v = COALESCE(NEW.v, 'x')",
		"CREATE EVENT app.e ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1",
	} {
		db.Exec(t, q)
	}
}

// serverContents describes what a user cares about after a restore: every
// table's checksum, the objects, the accounts.
func serverContents(t *testing.T, db *sql.DB) string {
	t.Helper()
	var parts []string
	query := func(q string) {
		rows, err := db.QueryContext(t.Context(), q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			parts = append(parts, s)
		}
	}
	query("SELECT CONCAT('view ', table_name) FROM information_schema.views WHERE table_schema = 'app' ORDER BY 1")
	query("SELECT CONCAT(routine_type, ' ', routine_name, ' ', definer) FROM information_schema.routines WHERE routine_schema = 'app' ORDER BY 1")
	query("SELECT CONCAT('trigger ', trigger_name, ' ', definer) FROM information_schema.triggers WHERE trigger_schema = 'app' ORDER BY 1")
	query("SELECT CONCAT('event ', event_name) FROM information_schema.events WHERE event_schema = 'app' ORDER BY 1")
	query("SELECT CONCAT('account ', user, '@', host) FROM mysql.user WHERE user IN ('appuser', 'approle', 'later') ORDER BY 1")
	var tables []string
	rows, err := db.QueryContext(t.Context(), "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app' AND table_type = 'BASE TABLE' ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	for _, n := range tables {
		var name string
		var sum sql.NullInt64
		if err := db.QueryRowContext(t.Context(), "CHECKSUM TABLE app.`"+n+"` EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, fmt.Sprintf("table %s %d", n, sum.Int64))
	}
	return strings.Join(parts, "\n")
}

// waitArchived waits until the archive in dir holds the server's binlog up
// to its current end.
func waitArchived(t *testing.T, dir string, src *testbed.MariaDB) {
	t.Helper()
	binlogFile, pos := masterStatus(t, src)
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 60*time.Second, func() error {
		a, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
		if err != nil {
			return fmt.Errorf("the archive does not reach %s:%d: %w", binlogFile, pos, err)
		}
		if a.Last() == nil {
			return fmt.Errorf("the archive does not reach %s:%d: no timeline yet", binlogFile, pos)
		}
		if end, _ := a.Last().End(); end.File < binlogFile || end.File == binlogFile && end.Pos < pos {
			return fmt.Errorf("the archive reaches %s:%d, want %s:%d", end.File, end.Pos, binlogFile, pos)
		}
		return nil
	})
}

// TestLeastPrivilegeAccountsDoTheWork runs every part of mysql-pitr as an
// account holding exactly the documented privileges (the streamer's
// through a default role), then takes one privilege away from a few of
// them and checks that the operation stops at once, naming it.
//
// On MySQL the physical snapshot is a clone, finished with the programs of
// MYSQL_PITR_SERVER_BINDIR, and the accounts lacking a privilege lack
// MySQL's own (BACKUP_ADMIN for BINLOG MONITOR, SET_ANY_DEFINER for SET USER).
func TestLeastPrivilegeAccountsDoTheWork(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) { leastPrivilegeDoesTheWork(t, f) })
	}
}

// restoreTarget starts an empty server of release f to restore into, as
// the restore's documentation asks: trusting function creators, and on
// MySQL with local_infile on.
func restoreTarget(t *testing.T, f testbed.Flavor, serverID uint32) *testbed.MariaDB {
	t.Helper()
	target := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: serverID, ExtraArgs: []string{"--log-bin-trust-function-creators=ON"}})
	if f.MySQL() {
		target.Exec(t, "SET GLOBAL local_infile = ON")
	}
	return target
}

func leastPrivilegeDoesTheWork(t *testing.T, f testbed.Flavor) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	if dir := f.BinDir(); dir != "" {
		t.Setenv("MYSQL_PITR_SERVER_BINDIR", dir)
	}
	if f.MySQL() {
		// MySQL's image makes root@'%' too (MYSQL_ROOT_HOST's default),
		// with every privilege: a restore that re-creates it must hold
		// them all. The source runs as the image makes it with
		// MYSQL_ROOT_HOST=localhost, so that the restorer holds the
		// documented privileges and those of the accounts the snapshot
		// holds, not ALL.
		conn, err := src.DB(t).Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"SET SESSION sql_log_bin = 0", "DROP USER 'root'@'%'", "SET SESSION sql_log_bin = 1"} {
			if _, err := conn.ExecContext(t.Context(), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		conn.Close()
	}
	fam := family(src)
	leastPrivilegeSchema(t, src)
	dir := t.TempDir()
	storageURL := "file://" + dir

	// The streamer's privileges come from a default role.
	var streamPrivs []string
	for _, req := range preflight.Requirements(fam, preflight.Streamer) {
		streamPrivs = append(streamPrivs, req.Privilege)
	}
	setDefault := "SET DEFAULT ROLE pitr_stream FOR stream@'%'"
	if f.MySQL() {
		setDefault = "SET DEFAULT ROLE pitr_stream TO stream@'%'"
	}
	src.Exec(t, "CREATE ROLE pitr_stream")
	src.Exec(t, "GRANT "+strings.Join(streamPrivs, ", ")+" ON *.* TO pitr_stream")
	src.Exec(t, "CREATE USER stream@'%' IDENTIFIED BY 'pw-stream'")
	src.Exec(t, "GRANT pitr_stream TO stream@'%'")
	src.Exec(t, setDefault)
	streamer := newAccountFile(t, src, "stream")
	logical := scriptAccount(t, src, "logical", preflight.Logical)
	physical := scriptAccount(t, src, "physical", preflight.Physical)

	ctx, stopAgent := context.WithCancel(t.Context())
	agentDone := make(chan string, 1)
	go func() {
		_, stderr, code := runCLI(t, ctx, "agent", "--dsn", streamer.dsn(), "--password-file", streamer.passwordFile, "--storage", storageURL,
			"--listen", "", "--spool-dir", t.TempDir(), "--flush-interval", "100ms", "--log-level", "warn")
		agentDone <- fmt.Sprintf("exit %d: %s", code, stderr)
	}()
	defer func() {
		stopAgent()
		<-agentDone
	}()
	src.Exec(t, "INSERT INTO app.t VALUES (10, 'before snapshots')")
	waitArchived(t, dir, src)

	// Physical first: a restore into a running server takes the newest
	// snapshot, which must be the logical one.
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--method", "physical", "--dsn", physical.dsn(), "--password-file", physical.passwordFile,
		"--storage", storageURL, "--log-level", "warn"); code != 0 {
		t.Fatalf("physical snapshot as %s: exit %d: %s", physical.name, code, stderr)
	}
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--method", "logical", "--dsn", logical.dsn(), "--password-file", logical.passwordFile,
		"--storage", storageURL, "--threads", "2", "--log-level", "warn"); code != 0 {
		t.Fatalf("logical snapshot as %s: exit %d: %s", logical.name, code, stderr)
	}
	for _, q := range []string{
		"INSERT INTO app.t VALUES (4, 'd')", "UPDATE app.t SET v = 'B' WHERE id = 2", "DELETE FROM app.t WHERE id = 1",
		"ALTER TABLE app.t ADD COLUMN w INT", "CREATE INDEX iv ON app.t (v)",
		"CREATE TABLE app.gone (id INT PRIMARY KEY)", "INSERT INTO app.gone VALUES (1)", "DROP TABLE app.gone",
		"CREATE TABLE app.n (id INT PRIMARY KEY)", "INSERT INTO app.n VALUES (7)", "RENAME TABLE app.n TO app.renamed",
		"TRUNCATE TABLE app.child", "CREATE OR REPLACE VIEW app.v2 AS SELECT 1 AS one",
		"CREATE USER later@'%' IDENTIFIED BY 'later-pw'", "GRANT SELECT ON app.* TO later@'%'",
	} {
		src.Exec(t, q)
	}
	waitArchived(t, dir, src)
	want := serverContents(t, src.DB(t))
	t.Logf("source:\n%s", want)
	snaps := snapshotMethods(t, dir)
	if !slices.Equal(snaps, []string{catalog.MethodPhysical, catalog.MethodLogical}) {
		t.Fatalf("snapshots %q, want a physical and a logical one", snaps)
	}

	for _, replay := range []string{"server", "mysqlbinlog"} {
		t.Run("restore, replay "+replay, func(t *testing.T) {
			// Stored functions need SUPER unless the server trusts their
			// creators; the documented account relies on the setting.
			target := restoreTarget(t, f, 2)
			restorer := scriptAccount(t, target, "restorer", preflight.Restore)
			// The snapshot holds the accounts of the streamer and the
			// snapshots (all but its own): granting them back takes what
			// they hold.
			var held []string
			for _, r := range []preflight.Role{preflight.Streamer, preflight.Logical, preflight.Physical} {
				for _, req := range preflight.Requirements(fam, r) {
					if req.On == preflight.Global && req.When == "" && !slices.Contains(held, req.Privilege) {
						held = append(held, req.Privilege)
					}
				}
			}
			target.Exec(t, "GRANT "+strings.Join(held, ", ")+" ON *.* TO restorer@'%' WITH GRANT OPTION")
			// And the application's account's (leastPrivilegeSchema).
			target.Exec(t, "GRANT SELECT, INSERT, UPDATE, TRIGGER ON app.* TO restorer@'%' WITH GRANT OPTION")
			_, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", "latest", "--replay", replay, "--threads", "2",
				"--target-dsn", restorer.dsn(), "--target-password-file", restorer.passwordFile, "--log-level", "warn")
			if code != 0 {
				t.Fatalf("restore as %s: exit %d: %s", restorer.name, code, stderr)
			}
			if got := serverContents(t, target.DB(t)); got != want {
				t.Fatalf("restored server differs from the source:\n got %s\nwant %s", got, want)
			}
		})
	}

	// One privilege short: each operation stops before it starts, naming it.
	t.Run("agent without REPLICATION SLAVE", func(t *testing.T) {
		a := lackingAccount(t, src, "no_repl", "REPLICATION SLAVE", preflight.Streamer)
		// Without the preflight the agent retried the refused stream forever.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, stderr, code := runCLI(t, ctx, "agent", "--dsn", a.dsn(), "--password-file", a.passwordFile, "--storage", "file://"+t.TempDir(),
			"--listen", "", "--spool-dir", t.TempDir())
		assertLacks(t, code, stderr, "REPLICATION SLAVE", a.name)
	})
	t.Run("agent with a physical schedule without PROCESS", func(t *testing.T) {
		a := lackingAccount(t, src, "no_process", "PROCESS", preflight.Streamer, preflight.Physical)
		_, stderr, code := runCLI(t, t.Context(), "agent", "--dsn", a.dsn(), "--password-file", a.passwordFile, "--storage", "file://"+t.TempDir(),
			"--listen", "", "--spool-dir", t.TempDir(), "--schedule", "@daily", "--snapshot-method", "physical")
		assertLacks(t, code, stderr, "PROCESS", a.name)
	})
	t.Run("logical snapshot without TRIGGER", func(t *testing.T) {
		// Without the preflight the snapshot succeeded without the trigger.
		a := lackingAccount(t, src, "no_trigger", "TRIGGER", preflight.Logical)
		out := t.TempDir()
		_, stderr, code := runCLI(t, t.Context(), "snapshot", "--method", "logical", "--dsn", a.dsn(), "--password-file", a.passwordFile,
			"--storage", "file://"+out)
		assertLacks(t, code, stderr, "TRIGGER", a.name)
		if got := snapshotMethods(t, out); len(got) != 0 {
			t.Fatalf("a snapshot was stored: %q", got)
		}
	})
	physicalLack, restoreLack := "BINLOG MONITOR", "SET USER"
	if f.MySQL() {
		physicalLack, restoreLack = "BACKUP_ADMIN", "SET_ANY_DEFINER"
	}
	t.Run("physical snapshot without "+physicalLack, func(t *testing.T) {
		a := lackingAccount(t, src, "no_physical", physicalLack, preflight.Physical)
		_, stderr, code := runCLI(t, t.Context(), "snapshot", "--method", "physical", "--dsn", a.dsn(), "--password-file", a.passwordFile,
			"--storage", "file://"+t.TempDir())
		assertLacks(t, code, stderr, physicalLack, a.name)
	})
	t.Run("restore without "+restoreLack, func(t *testing.T) {
		target := restoreTarget(t, f, 3)
		a := lackingAccount(t, target, "no_set_user", restoreLack, preflight.Restore)
		_, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", "latest",
			"--target-dsn", a.dsn(), "--target-password-file", a.passwordFile)
		assertLacks(t, code, stderr, restoreLack, a.name)
		var n int
		if err := target.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'app'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("the refused restore loaded something: app databases %d, %v", n, err)
		}
	})

	stopAgent()
	if got := <-agentDone; !strings.HasPrefix(got, "exit 0") {
		t.Fatalf("the least-privilege agent: %s", got)
	}
	agentDone <- "exit 0" // for the deferred wait
}

// snapshotMethods returns the methods of the complete snapshots in dir, oldest first.
func snapshotMethods(t *testing.T, dir string) []string {
	t.Helper()
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := catalog.LoadSnapshots(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range snaps.Complete {
		out = append(out, m.Method)
	}
	return out
}

// TestScheduledSnapshotChecksPrivileges revokes a privilege from a running
// agent's account: the next scheduled snapshot fails at once and says which.
func TestScheduledSnapshotChecksPrivileges(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	a := scriptAccount(t, src, "sched", preflight.Streamer, preflight.Logical)
	p := startAgent(t, nil, "--dsn", a.dsn(), "--password-file", a.passwordFile, "--storage", "file://"+t.TempDir(),
		"--spool-dir", t.TempDir(), "--schedule", "@every 2s")
	p.waitReady(30 * time.Second)
	src.Exec(t, "REVOKE EVENT ON *.* FROM sched@'%'")
	testbed.Eventually(t, 60*time.Second, func() error {
		if last := snapshotError(t, p); !strings.Contains(last, "lacks EVENT (needed by a logical snapshot") {
			return fmt.Errorf("no scheduled snapshot failed naming EVENT; last error %q", last)
		}
		return nil
	})
}

// snapshotError is the agent's last snapshot error from /status.
func snapshotError(t *testing.T, p *agentProc) string {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.listen + "/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Snapshots struct {
			LastError string `json:"last_error"`
		} `json:"snapshots"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.Snapshots.LastError
}
