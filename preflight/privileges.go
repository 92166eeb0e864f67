package preflight

import (
	"fmt"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Every difference between MySQL and MariaDB in what each role needs, how
// the account's privileges are read and how privileges are named is
// decided in this file.
//
// The MariaDB lists are confirmed on MariaDB 10.11: without each privilege
// the operation fails or, where noted, silently leaves something out. The
// MySQL lists are written from MySQL's and Percona XtraBackup's
// documentation; the clone plugin's (Physical on MySQL) is tested against
// MySQL 9.7.

// Role is a part of mysql-pitr that connects to the server.
type Role string

// Roles.
const (
	Streamer Role = "streamer" // the agent's binlog stream
	Logical  Role = "logical"  // a logical snapshot
	Physical Role = "physical" // a physical snapshot: mariadb-backup on MariaDB, the clone plugin on MySQL
	Restore  Role = "restore"  // restore --target-dsn into a running server
	// Xtrabackup is a physical snapshot of MySQL with xtrabackup, taken
	// instead of a clone where the agent's image has it. It is not among
	// Roles (and "all"): few need it.
	Xtrabackup Role = "xtrabackup"
)

// Roles lists every role in the order they are documented.
var Roles = []Role{Streamer, Logical, Physical, Restore}

// ParseRole reads a role name, or "all" for every role in Roles.
func ParseRole(s string) ([]Role, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "all" {
		return append([]Role(nil), Roles...), nil
	}
	for _, r := range append(Roles, Xtrabackup) {
		if string(r) == s {
			return []Role{r}, nil
		}
	}
	return nil, fmt.Errorf("unknown role %q: want streamer, logical, physical, restore, xtrabackup or all", s)
}

// SnapshotRole is the role of a snapshot method (catalog.MethodLogical or
// catalog.MethodPhysical) taken with tool, as physical.Tool names
// it: Xtrabackup for "xtrabackup", Physical for the other physical tools.
func SnapshotRole(method, tool string) Role {
	switch {
	case method != catalog.MethodPhysical:
		return Logical
	case tool == "xtrabackup":
		return Xtrabackup
	}
	return Physical
}

// title names the role in messages.
func (r Role) title() string {
	switch r {
	case Streamer:
		return "the streamer"
	case Logical:
		return "a logical snapshot"
	case Physical:
		return "a physical snapshot"
	case Xtrabackup:
		return "a physical snapshot with xtrabackup"
	case Restore:
		return "a restore into a running server"
	}
	return string(r)
}

// Requirement is one privilege a role needs.
type Requirement struct {
	// Privilege is the name GRANT takes.
	Privilege string
	// Also lists privileges that serve instead (MySQL's deprecated SUPER,
	// mostly); the preflight accepts them, the grants command never
	// suggests them. On MariaDB SUPER is not accepted in their place: 10.11
	// still lets it serve for some, but releases since split it further.
	Also []string
	// On is where it is needed: Global (*.*) or one table.
	On Object
	// Why completes "needed by <role> to …".
	Why string
	// When, if set, limits the requirement to servers where it holds.
	When Condition
}

// Condition is a server setting under which a requirement applies.
type Condition string

// Conditions.
const (
	// UntrustedFunctionCreators: binary logging is on and
	// log_bin_trust_function_creators is off, so creating a stored
	// function needs SUPER.
	UntrustedFunctionCreators Condition = "untrusted-function-creators"
	// ClonePluginMissing: MySQL's clone plugin is not active, so a
	// physical snapshot installs it.
	ClonePluginMissing Condition = "clone-plugin-missing"
)

// conditionQuery returns 1 when the condition holds on the server.
func conditionQuery(c Condition) string {
	switch c {
	case UntrustedFunctionCreators:
		return "SELECT @@global.log_bin = 1 AND @@global.log_bin_trust_function_creators = 0"
	case ClonePluginMissing:
		return "SELECT COUNT(*) = 0 FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone' AND PLUGIN_STATUS = 'ACTIVE'"
	}
	return "SELECT 1"
}

// conditionNote explains a conditional requirement and how else to meet it.
func conditionNote(c Condition) string {
	switch c {
	case UntrustedFunctionCreators:
		return "the server writes a binlog with log_bin_trust_function_creators=OFF; SET GLOBAL log_bin_trust_function_creators=ON instead avoids it"
	case ClonePluginMissing:
		return "the clone plugin is not loaded; loading it at server start (plugin-load-add=mysql_clone.so) or installing it once as an administrator (INSTALL PLUGIN clone SONAME 'mysql_clone.so') instead avoids it"
	}
	return ""
}

// Global is *.*.
var Global = Object{Level: LevelGlobal}

func table(db, name string) Object { return Object{Level: LevelTable, DB: db, Name: name} }

// Requirements returns what a role needs on a flavor's server, in the order
// the grants command prints them.
func Requirements(f binlog.Flavor, r Role) []Requirement {
	if f == binlog.MySQL {
		return mysqlRequirements[r]
	}
	return mariadbRequirements[r]
}

// grantWhy names, for the restore role, what it grants back.
const grantWhy = "grant the snapshot's accounts their privileges (it must also hold each privilege it grants)"

var mariadbRequirements = map[Role][]Requirement{
	Streamer: {
		{Privilege: "REPLICATION SLAVE", On: Global, Why: "stream the binlog as a replica"},
		{Privilege: "BINLOG MONITOR", On: Global, Why: "list the server's binlog files (SHOW BINARY LOGS)"},
	},
	Logical: {
		{Privilege: "SELECT", On: Global, Why: "see every database and read its tables, and the accounts and routines in the mysql schema"},
		{Privilege: "SHOW VIEW", On: Global, Why: "read view definitions (SHOW CREATE VIEW)"},
		{Privilege: "TRIGGER", On: Global, Why: "see and read triggers (without it they are silently left out)"},
		{Privilege: "EVENT", On: Global, Why: "see and read events (without it they are silently left out)"},
		{Privilege: "RELOAD", On: Global, Why: "block commits for an instant while the snapshot's position is taken (FLUSH TABLES WITH READ LOCK)"},
		{Privilege: "BINLOG MONITOR", On: Global, Why: "read the snapshot's binlog position (SHOW MASTER STATUS)"},
	},
	Physical: {
		{Privilege: "RELOAD", On: Global, Why: "take mariadb-backup's backup locks (BACKUP STAGE)"},
		{Privilege: "PROCESS", On: Global, Why: "let mariadb-backup read InnoDB's state (it refuses to start without it)"},
		{Privilege: "BINLOG MONITOR", On: Global, Why: "let mariadb-backup read the snapshot's binlog position (SHOW MASTER STATUS)"},
	},
	Restore: {
		{Privilege: "CREATE", On: Global, Why: "create the databases and tables"},
		{Privilege: "INSERT", On: Global, Why: "load the rows (LOAD DATA LOCAL INFILE), and write back the grant table rows of accounts the source ignored"},
		{Privilege: "CREATE VIEW", On: Global, Why: "create views"},
		{Privilege: "CREATE ROUTINE", On: Global, Why: "create procedures and functions"},
		{Privilege: "SUPER", On: Global, When: UntrustedFunctionCreators, Why: "create stored functions"},
		{Privilege: "TRIGGER", On: Global, Why: "create triggers"},
		{Privilege: "EVENT", On: Global, Why: "create events"},
		{Privilege: "SET USER", On: Global, Why: "create views, routines, triggers and events with their original DEFINER"},
		{Privilege: "CREATE USER", On: Global, Why: "create the snapshot's accounts and roles"},
		{Privilege: "UPDATE", On: Global, Why: "replay the snapshot's GRANT … IDENTIFIED BY PASSWORD lines (they update the mysql schema)"},
		{Privilege: "SELECT", On: Global, Why: grantWhy},
		{Privilege: "GRANT OPTION", On: Global, Why: grantWhy},
		{Privilege: "BINLOG ADMIN", On: Global, Why: "keep the load out of the server's binlog (SET sql_log_bin=0), whose own GTIDs would otherwise clash with the replayed ones"},
		{Privilege: "DROP", On: Global, Why: "replay the binlog's DROP and TRUNCATE statements with --replay mysqlbinlog"},
		{Privilege: "ALTER", On: Global, Why: "pause statistics recalculation while a table loads (ALTER TABLE … STATS_AUTO_RECALC), and replay the binlog's ALTER and RENAME statements with --replay mysqlbinlog"},
		{Privilege: "INDEX", On: Global, Why: "replay the binlog's CREATE INDEX statements with --replay mysqlbinlog"},
		{Privilege: "BINLOG REPLAY", On: Global, Why: "apply the binlog's row events with --replay mysqlbinlog (BINLOG statements)"},
		{Privilege: "REPLICATION SLAVE ADMIN", On: Global, Why: "replay the binlog by replication (CHANGE MASTER, START SLAVE) and set gtid_slave_pos"},
		{Privilege: "SLAVE MONITOR", On: Global, Why: "follow the replay (SHOW SLAVE STATUS)"},
		{Privilege: "RELOAD", On: Global, Why: "remove the replay's replication settings afterwards (RESET SLAVE ALL), and reload the grant tables after writing back the rows of accounts the source ignored (FLUSH PRIVILEGES)"},
	},
}

var mysqlRequirements = map[Role][]Requirement{
	Streamer: {
		{Privilege: "REPLICATION SLAVE", On: Global, Why: "stream the binlog as a replica"},
		{Privilege: "REPLICATION CLIENT", Also: []string{"SUPER"}, On: Global, Why: "list the server's binlog files (SHOW BINARY LOGS)"},
	},
	Logical: {
		{Privilege: "SELECT", On: Global, Why: "see every database and read its tables, and the accounts and routines in the mysql schema"},
		{Privilege: "SHOW VIEW", On: Global, Why: "read view definitions (SHOW CREATE VIEW)"},
		{Privilege: "TRIGGER", On: Global, Why: "see and read triggers (without it they are silently left out)"},
		{Privilege: "EVENT", On: Global, Why: "see and read events (without it they are silently left out)"},
		{Privilege: "BACKUP_ADMIN", On: Global, Why: "take the snapshot's position without blocking writes (LOCK INSTANCE FOR BACKUP, performance_schema.log_status)"},
		{Privilege: "RELOAD", On: Global, Why: "block commits for an instant when the position cannot be taken otherwise (FLUSH TABLES WITH READ LOCK)"},
		{Privilege: "REPLICATION CLIENT", Also: []string{"SUPER"}, On: Global, Why: "read the binlog position after FLUSH TABLES WITH READ LOCK (SHOW MASTER STATUS)"},
	},
	Physical: {
		{Privilege: "BACKUP_ADMIN", On: Global, Why: "clone the data (CLONE LOCAL DATA DIRECTORY)"},
		{Privilege: "PROCESS", On: Global, Why: "read the size of the data (information_schema.INNODB_TABLESPACES), to check that the clone directory has room for a copy"},
		{Privilege: "SELECT", On: Global, Why: "see every table, to refuse a clone that would restore tables of other engines than InnoDB empty; " +
			"and see whether a clone an interrupted snapshot started still runs (performance_schema.clone_status) before its directory is removed"},
		{Privilege: "INSERT", On: table("mysql", "plugin"), When: ClonePluginMissing, Why: "install the clone plugin (INSTALL PLUGIN clone SONAME 'mysql_clone.so')"},
	},
	Xtrabackup: {
		{Privilege: "BACKUP_ADMIN", On: Global, Why: "let xtrabackup take backup locks and read performance_schema.log_status"},
		{Privilege: "RELOAD", On: Global, Why: "let xtrabackup flush tables and engine logs"},
		{Privilege: "LOCK TABLES", On: Global, Why: "let xtrabackup lock tables while it copies non-InnoDB files"},
		{Privilege: "PROCESS", On: Global, Why: "let xtrabackup read InnoDB's state (SHOW ENGINE INNODB STATUS)"},
		{Privilege: "REPLICATION CLIENT", Also: []string{"SUPER"}, On: Global, Why: "let xtrabackup read the binlog position"},
		{Privilege: "SELECT", On: table("performance_schema", "log_status"), Why: "let xtrabackup read the consistent binlog and redo position"},
		{Privilege: "SELECT", On: table("performance_schema", "keyring_component_status"), Why: "let xtrabackup see whether a keyring component is in use"},
	},
	Restore: {
		{Privilege: "CREATE", On: Global, Why: "create the databases and tables"},
		{Privilege: "REFERENCES", On: Global, Why: "create tables with foreign keys"},
		{Privilege: "INSERT", On: Global, Why: "load the rows (LOAD DATA LOCAL INFILE; the server also needs local_infile=ON), and write back the grant table rows of accounts the source ignored"},
		{Privilege: "CREATE VIEW", On: Global, Why: "create views"},
		{Privilege: "CREATE ROUTINE", On: Global, Why: "create procedures and functions"},
		{Privilege: "SUPER", On: Global, When: UntrustedFunctionCreators, Why: "create stored functions"},
		{Privilege: "TRIGGER", On: Global, Why: "create triggers"},
		{Privilege: "EVENT", On: Global, Why: "create events"},
		{Privilege: "SET_ANY_DEFINER", Also: []string{"SET_USER_ID", "SUPER"}, On: Global, Why: "create views, routines, triggers and events with their original DEFINER (SET_USER_ID before MySQL 8.2)"},
		{Privilege: "SYSTEM_USER", On: Global, Why: "create views, routines, triggers and events whose DEFINER holds SYSTEM_USER (as root does), and re-create the snapshot's accounts that hold it"},
		{Privilege: "ALLOW_NONEXISTENT_DEFINER", Also: []string{"SET_USER_ID", "SUPER"}, On: Global, Why: "create views, routines, triggers and events whose DEFINER does not exist yet (the snapshot's accounts are created after its objects) or at all (SET_USER_ID before MySQL 8.2)"},
		{Privilege: "CREATE USER", On: Global, Why: "create the snapshot's accounts"},
		{Privilege: "ROLE_ADMIN", On: Global, Why: "grant the snapshot's roles to its accounts"},
		{Privilege: "SELECT", On: Global, Why: grantWhy},
		{Privilege: "GRANT OPTION", On: Global, Why: grantWhy},
		{Privilege: "DROP", On: Global, Why: "replay the binlog's DROP and TRUNCATE statements with --replay mysqlbinlog"},
		{Privilege: "ALTER", On: Global, Why: "pause statistics recalculation while a table loads (ALTER TABLE … STATS_AUTO_RECALC), and replay the binlog's ALTER and RENAME statements with --replay mysqlbinlog"},
		{Privilege: "INDEX", On: Global, Why: "replay the binlog's CREATE INDEX statements with --replay mysqlbinlog"},
		{Privilege: "BINLOG_ADMIN", Also: []string{"SUPER"}, On: Global, Why: "apply the binlog's row events with --replay mysqlbinlog (BINLOG statements)"},
		{Privilege: "SESSION_VARIABLES_ADMIN", Also: []string{"SYSTEM_VARIABLES_ADMIN", "SUPER"}, On: Global, Why: "keep the load out of the server's binlog (SET sql_log_bin=0) and set the session variables mysqlbinlog output sets (pseudo_thread_id, gtid_next)"},
		{Privilege: "REPLICATION_SLAVE_ADMIN", Also: []string{"SUPER"}, On: Global, Why: "replay the binlog by replication (CHANGE REPLICATION SOURCE, START REPLICA, RESET REPLICA ALL)"},
		{Privilege: "REPLICATION CLIENT", Also: []string{"SUPER"}, On: Global, Why: "follow the replay (SHOW REPLICA STATUS)"},
		{Privilege: "SYSTEM_VARIABLES_ADMIN", Also: []string{"SUPER"}, On: Global, Why: "set replica_parallel_workers for a parallel replay"},
		{Privilege: "RELOAD", Also: []string{"FLUSH_PRIVILEGES"}, On: Global, Why: "reload the grant tables after writing back the rows of accounts the source ignored (FLUSH PRIVILEGES)"},
	},
}

// aliases maps other spellings of a privilege to the one SHOW GRANTS
// prints, per flavor.
func aliases(f binlog.Flavor) map[string]string {
	if f == binlog.MySQL {
		return nil
	}
	// MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR and added
	// REPLICA spellings.
	return map[string]string{
		"REPLICATION CLIENT":        "BINLOG MONITOR",
		"REPLICA MONITOR":           "SLAVE MONITOR",
		"REPLICATION REPLICA":       "REPLICATION SLAVE",
		"REPLICATION REPLICA ADMIN": "REPLICATION SLAVE ADMIN",
	}
}

// grantsQueries returns the statements whose output are the grants in
// effect for the current session. activeRoles is CURRENT_ROLE()'s value.
//
// MariaDB's SHOW GRANTS without FOR lists the account's grants, those of
// the role enabled for the session (a default role is enabled at login)
// and of the roles granted to it, and PUBLIC's. MySQL's lists only the
// account's own unless the active roles are named with USING.
func grantsQueries(f binlog.Flavor, activeRoles string) []string {
	if f == binlog.MySQL && activeRoles != "" && !strings.EqualFold(activeRoles, "NONE") {
		return []string{"SHOW GRANTS FOR CURRENT_USER() USING " + activeRoles}
	}
	return []string{"SHOW GRANTS"}
}

// defaultRoleStatement makes role the account's default, which is what
// makes a role's privileges count for a new connection.
func defaultRoleStatement(f binlog.Flavor, role, account Account) string {
	if f == binlog.MySQL {
		return "SET DEFAULT ROLE " + role.String() + " TO " + account.String()
	}
	return "SET DEFAULT ROLE " + QuoteIdent(role.User) + " FOR " + account.String()
}

// flavorTitle names the versions the lists are for.
func flavorTitle(f binlog.Flavor) string {
	if f == binlog.MySQL {
		return "MySQL 8.0/8.4/9.x"
	}
	return "MariaDB 10.6+/11"
}
