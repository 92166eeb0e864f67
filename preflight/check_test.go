package preflight

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/binlog"
)

// missingOf digests SHOW GRANTS lines as the server printed them for
// account and returns what roles lack.
func missingOf(t *testing.T, f binlog.Flavor, account, currentRole string, lines []string, conds map[Condition]bool, roles ...Role) []string {
	t.Helper()
	p := &Privileges{Flavor: f, Account: ParseAccount(account)}
	if err := p.add(lines, currentRole); err != nil {
		t.Fatal(err)
	}
	e := p.missing(roles, conds)
	if e == nil {
		return nil
	}
	var out []string
	for _, m := range e.Missing {
		s := m.Privilege
		if m.On.Level != LevelGlobal {
			s += " ON " + m.On.String()
		}
		out = append(out, s)
	}
	return out
}

func TestMissingPrivileges(t *testing.T) {
	cases := []struct {
		name    string
		flavor  binlog.Flavor
		account string
		role    string // CURRENT_ROLE()
		lines   []string
		conds   map[Condition]bool
		roles   []Role
		want    []string
	}{
		{name: "mariadb streamer, exact", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `pitr`@`%` IDENTIFIED BY PASSWORD '*AB'"},
			roles: []Role{Streamer}},
		{name: "mariadb streamer, nothing", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT USAGE ON *.* TO `pitr`@`%`"},
			roles: []Role{Streamer}, want: []string{"REPLICATION SLAVE", "BINLOG MONITOR"}},
		{name: "SUPER is not taken for BINLOG MONITOR on MariaDB", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE, SUPER ON *.* TO `pitr`@`%`"}, roles: []Role{Streamer}, want: []string{"BINLOG MONITOR"}},
		{name: "SUPER serves for REPLICATION CLIENT on MySQL", flavor: binlog.MySQL, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE, SUPER ON *.* TO `pitr`@`%`"}, roles: []Role{Streamer}},
		{name: "MariaDB's old name REPLICATION CLIENT", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `pitr`@`%`"}, roles: []Role{Streamer}},
		{name: "ALL PRIVILEGES serves for everything but GRANT OPTION", flavor: binlog.MariaDB, account: "root@localhost",
			lines: []string{"GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"}, conds: map[Condition]bool{UntrustedFunctionCreators: true},
			roles: Roles, want: []string{"GRANT OPTION"}},
		{name: "ALL PRIVILEGES WITH GRANT OPTION serves for all roles", flavor: binlog.MariaDB, account: "root@localhost",
			lines: []string{"GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"}, conds: map[Condition]bool{UntrustedFunctionCreators: true},
			roles: Roles},
		{name: "database grants do not serve for *.*", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT RELOAD, BINLOG MONITOR ON *.* TO `pitr`@`%`", "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `app`.* TO `pitr`@`%`"},
			roles: []Role{Logical}, want: []string{"SELECT", "SHOW VIEW", "TRIGGER", "EVENT"}},
		{name: "column grants do not serve", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE ON *.* TO `pitr`@`%`", "GRANT SELECT (`User`) ON `mysql`.`user` TO `pitr`@`%`"},
			roles: []Role{Streamer}, want: []string{"BINLOG MONITOR"}},
		{name: "the active role and the roles granted to it count", flavor: binlog.MariaDB, account: "pitr@%", role: "r1",
			lines: []string{"GRANT `r1` TO `pitr`@`%`", "GRANT USAGE ON *.* TO `pitr`@`%`", "GRANT `r2` TO `r1`",
				"GRANT REPLICATION SLAVE ON *.* TO `r1`", "GRANT BINLOG MONITOR ON *.* TO `r2`", "SET DEFAULT ROLE `r1` FOR `pitr`@`%`"},
			roles: []Role{Streamer}},
		{name: "PUBLIC counts", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE ON *.* TO `pitr`@`%`", "GRANT BINLOG MONITOR ON *.* TO PUBLIC"}, roles: []Role{Streamer}},
		{name: "GRANT OPTION on *.* only", flavor: binlog.MariaDB, account: "r@%",
			lines: []string{"GRANT USAGE ON *.* TO `r`@`%`", "GRANT ALL PRIVILEGES ON `app`.* TO `r`@`%` WITH GRANT OPTION"},
			roles: []Role{Restore}, want: []string{"CREATE", "INSERT", "CREATE VIEW", "CREATE ROUTINE", "TRIGGER", "EVENT", "SET USER", "CREATE USER",
				"UPDATE", "SELECT", "GRANT OPTION", "BINLOG ADMIN", "DROP", "ALTER", "INDEX", "BINLOG REPLAY", "REPLICATION SLAVE ADMIN", "SLAVE MONITOR", "RELOAD"}},
		{name: "SUPER for stored functions only where the server needs it", flavor: binlog.MariaDB, account: "r@%",
			lines: []string{"GRANT SELECT, INSERT, UPDATE, CREATE, DROP, RELOAD, INDEX, ALTER, CREATE VIEW, CREATE ROUTINE, EVENT, TRIGGER, CREATE USER, " +
				"SET USER, BINLOG ADMIN, BINLOG REPLAY, REPLICATION SLAVE ADMIN, SLAVE MONITOR ON *.* TO `r`@`%` WITH GRANT OPTION"},
			conds: map[Condition]bool{UntrustedFunctionCreators: true}, roles: []Role{Restore}, want: []string{"SUPER"}},
		{name: "SUPER not needed when functions are trusted", flavor: binlog.MariaDB, account: "r@%",
			lines: []string{"GRANT SELECT, INSERT, UPDATE, CREATE, DROP, RELOAD, INDEX, ALTER, CREATE VIEW, CREATE ROUTINE, EVENT, TRIGGER, CREATE USER, " +
				"SET USER, BINLOG ADMIN, BINLOG REPLAY, REPLICATION SLAVE ADMIN, SLAVE MONITOR ON *.* TO `r`@`%` WITH GRANT OPTION"},
			conds: map[Condition]bool{UntrustedFunctionCreators: false}, roles: []Role{Restore}},
		{name: "two roles, one list", flavor: binlog.MariaDB, account: "pitr@%",
			lines: []string{"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO `pitr`@`%`"},
			roles: []Role{Streamer, Logical}, want: []string{"REPLICATION SLAVE", "BINLOG MONITOR", "RELOAD"}},
		{name: "mysql streamer", flavor: binlog.MySQL, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `pitr`@`%`"}, roles: []Role{Streamer}},
		{name: "REPLICATION CLIENT is not BINLOG MONITOR on MySQL", flavor: binlog.MySQL, account: "pitr@%",
			lines: []string{"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `pitr`@`%`"}, roles: []Role{Streamer}, want: []string{"REPLICATION CLIENT"}},
		{name: "mysql xtrabackup with table grants", flavor: binlog.MySQL, account: "bkp@localhost",
			lines: []string{"GRANT RELOAD, PROCESS, LOCK TABLES, REPLICATION CLIENT ON *.* TO `bkp`@`localhost`",
				"GRANT BACKUP_ADMIN ON *.* TO `bkp`@`localhost`",
				"GRANT SELECT ON `performance_schema`.`log_status` TO `bkp`@`localhost`",
				"GRANT SELECT ON `performance_schema`.`keyring_component_status` TO `bkp`@`localhost`"},
			roles: []Role{Xtrabackup}},
		{name: "mysql xtrabackup: a database grant covers its tables", flavor: binlog.MySQL, account: "bkp@localhost",
			lines: []string{"GRANT RELOAD, PROCESS, LOCK TABLES, REPLICATION CLIENT ON *.* TO `bkp`@`localhost`",
				"GRANT BACKUP_ADMIN ON *.* TO `bkp`@`localhost`", "GRANT SELECT ON `performance\\_schema`.* TO `bkp`@`localhost`"},
			roles: []Role{Xtrabackup}},
		{name: "mysql xtrabackup: the table grants are missing", flavor: binlog.MySQL, account: "bkp@localhost",
			lines: []string{"GRANT RELOAD, PROCESS, LOCK TABLES, REPLICATION CLIENT ON *.* TO `bkp`@`localhost`", "GRANT BACKUP_ADMIN ON *.* TO `bkp`@`localhost`"},
			roles: []Role{Xtrabackup}, want: []string{"SELECT ON `performance_schema`.`log_status`", "SELECT ON `performance_schema`.`keyring_component_status`"}},
		{name: "mysql clone", flavor: binlog.MySQL, account: "bkp@localhost",
			lines: []string{"GRANT SELECT, PROCESS ON *.* TO `bkp`@`localhost`", "GRANT BACKUP_ADMIN ON *.* TO `bkp`@`localhost`"},
			roles: []Role{Physical}},
		{name: "mysql clone without BACKUP_ADMIN", flavor: binlog.MySQL, account: "bkp@localhost",
			lines: []string{"GRANT SELECT, PROCESS ON *.* TO `bkp`@`localhost`"},
			roles: []Role{Physical}, want: []string{"BACKUP_ADMIN"}},
		{name: "mysql partial revoke takes a database out", flavor: binlog.MySQL, account: "pitr@%",
			lines: []string{"GRANT SELECT, RELOAD, SHOW VIEW, TRIGGER, EVENT, REPLICATION CLIENT ON *.* TO `pitr`@`%`",
				"GRANT BACKUP_ADMIN ON *.* TO `pitr`@`%`", "REVOKE SELECT ON `payroll`.* FROM `pitr`@`%`"},
			roles: []Role{Logical}, want: []string{"SELECT"}},
		{name: "mysql active roles (USING)", flavor: binlog.MySQL, account: "pitr@%", role: "`r1`@`%`,`r2`@`%`",
			lines: []string{"GRANT REPLICATION SLAVE ON *.* TO `pitr`@`%`", "GRANT REPLICATION CLIENT ON *.* TO `pitr`@`%`", "GRANT `r1`@`%`,`r2`@`%` TO `pitr`@`%`"},
			roles: []Role{Streamer}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := missingOf(t, c.flavor, c.account, c.role, c.lines, c.conds, c.roles...)
			if !slices.Equal(got, c.want) {
				t.Fatalf("missing %q, want %q", got, c.want)
			}
		})
	}
}

func TestMissingErrorMessage(t *testing.T) {
	pitr := acct("pitr", "%")
	cases := []struct {
		name string
		err  *MissingError
		want string
	}{
		{"one privilege", &MissingError{Flavor: binlog.MariaDB, Account: pitr, Missing: []Missing{
			{Privilege: "REPLICATION SLAVE", On: Global, Needs: []Need{{Streamer, "stream the binlog as a replica"}}}}},
			"account 'pitr'@'%' lacks REPLICATION SLAVE (needed by the streamer to stream the binlog as a replica); " +
				"run: GRANT REPLICATION SLAVE ON *.* TO 'pitr'@'%'"},
		{"two roles, a table and an inactive role", &MissingError{Flavor: binlog.MySQL, Account: pitr, Missing: []Missing{
			{Privilege: "RELOAD", On: Global, Needs: []Need{{Logical, "lock"}, {Physical, "flush"}}},
			{Privilege: "PROCESS", On: Global, Needs: []Need{{Physical, "read InnoDB's state"}}},
			{Privilege: "SELECT", On: table("performance_schema", "log_status"), Needs: []Need{{Physical, "read the position"}}}},
			Inactive: []Account{acct("backup", "%")}},
			"account 'pitr'@'%' lacks RELOAD (needed by a logical snapshot to lock; by a physical snapshot to flush), " +
				"PROCESS (needed by a physical snapshot to read InnoDB's state) and " +
				"SELECT on `performance_schema`.`log_status` (needed by a physical snapshot to read the position); " +
				"run: GRANT RELOAD, PROCESS ON *.* TO 'pitr'@'%'; GRANT SELECT ON `performance_schema`.`log_status` TO 'pitr'@'%'; " +
				"role 'backup'@'%' is granted but not active at login (SET DEFAULT ROLE 'backup'@'%' TO 'pitr'@'%')"},
		{"grant option alone, and a partial revoke", &MissingError{Flavor: binlog.MySQL, Account: pitr, Missing: []Missing{
			{Privilege: "GRANT OPTION", On: Global, Needs: []Need{{Restore, "grant"}}},
			{Privilege: "SELECT", On: Global, Revoked: []string{"payroll"}, Needs: []Need{{Logical, "read"}}}}},
			"account 'pitr'@'%' lacks GRANT OPTION (needed by a restore into a running server to grant) and " +
				"SELECT (needed by a logical snapshot to read; partially revoked on `payroll`.*); " +
				"run: GRANT USAGE ON *.* TO 'pitr'@'%' WITH GRANT OPTION; GRANT SELECT ON `payroll`.* TO 'pitr'@'%'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.err.Error(); got != c.want {
				t.Fatalf("message\n got %s\nwant %s", got, c.want)
			}
			if !errors.Is(c.err, ErrMissingPrivileges) {
				t.Fatal("errors.Is(ErrMissingPrivileges) is false")
			}
			if strings.Contains(c.err.Error(), "\n") {
				t.Fatal("the message is not one line")
			}
		})
	}
}

func TestRequirementsHaveReasons(t *testing.T) {
	for _, f := range []binlog.Flavor{binlog.MariaDB, binlog.MySQL} {
		for _, r := range Roles {
			reqs := Requirements(f, r)
			if len(reqs) == 0 {
				t.Errorf("%s %s: no requirements", f, r)
			}
			for _, req := range reqs {
				if req.Why == "" || req.Privilege == "" || req.On.Level == 0 {
					t.Errorf("%s %s: incomplete requirement %+v", f, r, req)
				}
			}
		}
	}
}

func TestLikeMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"app", "app", true}, {"app", "App", true}, {"app", "app2", false},
		{"app%", "app2", true}, {"app_", "app2", true}, {"app_", "app", false},
		{`app\_x`, "app_x", true}, {`app\_x`, "appzx", false}, {"%", "", true}, {"a%b%c", "aXbYc", true},
	} {
		if got := likeMatch(c.pattern, c.name); got != c.want {
			t.Errorf("likeMatch(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}
