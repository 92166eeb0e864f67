package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Every difference between MySQL and MariaDB in taking and loading a
// logical snapshot is decided in this file.

// flavorSessionSettings are extra session settings of dumping connections.
func flavorSessionSettings(f binlog.Flavor) []string {
	if f == binlog.MySQL {
		// SHOW CREATE USER prints authentication strings as hex, which
		// survive JSON and the statement's reparsing (MySQL 8.0.17+).
		return []string{"SET SESSION print_identified_with_as_hex = ON"}
	}
	return nil
}

// point is the position a snapshot's transactions are consistent with.
type point struct {
	pos  catalog.Position
	gtid string
	// at is the server's clock while the position held: every transaction
	// in the snapshot committed at or before it.
	at time.Time
	// blocked is from the lock's acquisition to its release; lockWait how
	// long acquiring it took. (MariaDB lets writes commit while FTWRL waits
	// for running statements; MySQL blocks them for lockWait too.)
	blocked  time.Duration
	lockWait time.Duration
	attempts int
}

// MySQL and MariaDB error numbers this package tells apart.
const (
	erAccessDenied       = 1045
	erDBAccessDenied     = 1044
	erSpecificAccess     = 1227
	erTableAccessDenied  = 1142
	erLockWaitTimeout    = 1205
	erNoSuchTable        = 1146
	erColumnAccessDenied = 1143
	erPasswordNoMatch    = 1133
	erCannotUser         = 1396
	erParse              = 1064
)

func mysqlErrno(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

func isAccessDenied(err error) bool {
	switch mysqlErrno(err) {
	case erAccessDenied, erDBAccessDenied, erSpecificAccess, erTableAccessDenied, erColumnAccessDenied:
		return true
	}
	return false
}

// consistentPoint starts a consistent-snapshot transaction on every worker
// such that all of them see the database exactly as of one binlog position,
// reads the state of the sequences there, and returns that position.
func (d *dumper) consistentPoint(ctx context.Context, coord *sql.Conn, workers []*sql.Conn, seqs []sequenceDef) (point, error) {
	// MySQL has no sequences; were there any, only the read lock would
	// hold them still.
	if d.flavor == binlog.MySQL && len(seqs) == 0 {
		p, err := d.mysqlBackupLockPoint(ctx, coord, workers)
		if err == nil || !errors.Is(err, errNoBackupLock) {
			return p, err
		}
		d.log.Info("consistent point without the global read lock is not available; using FLUSH TABLES WITH READ LOCK", "reason", err)
	}
	return d.readLockPoint(ctx, coord, workers, seqs)
}

// readLockPoint blocks commits with FLUSH TABLES WITH READ LOCK while the
// workers start their transactions and the position is read.
//
// FTWRL first blocks writes and then waits for running statements to
// release the tables it flushes; a long query would keep writes blocked for
// as long as it runs. A short lock_wait_timeout makes the attempt give up
// instead, and it is retried with backoff.
func (d *dumper) readLockPoint(ctx context.Context, coord *sql.Conn, workers []*sql.Conn, seqs []sequenceDef) (point, error) {
	var p point
	timeout := max(1, int(d.opts.LockWaitTimeout.Round(time.Second)/time.Second))
	if _, err := coord.ExecContext(ctx, "SET SESSION lock_wait_timeout = "+strconv.Itoa(timeout)); err != nil {
		return p, fmt.Errorf("set lock_wait_timeout: %w", err)
	}
	backoff := time.Second
	var locked time.Time
	for {
		p.attempts++
		asked := time.Now()
		_, err := coord.ExecContext(ctx, "FLUSH TABLES WITH READ LOCK")
		if err == nil {
			locked = time.Now()
			p.lockWait = locked.Sub(asked)
			break
		}
		switch {
		case isAccessDenied(err):
			return p, fmt.Errorf("flush tables with read lock (needs the RELOAD privilege): %w", err)
		case mysqlErrno(err) != erLockWaitTimeout || p.attempts >= d.opts.LockAttempts:
			return p, fmt.Errorf("flush tables with read lock (attempt %d): %w", p.attempts, err)
		}
		d.log.Warn("global read lock waited too long for running statements; retrying",
			"attempt", p.attempts, "lock_wait_timeout", timeout, "backoff", backoff)
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	unlock := func() error {
		// The unlock must happen even when ctx ended: until it does, no
		// write on the server commits.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, err := coord.ExecContext(uctx, "UNLOCK TABLES")
		p.blocked = time.Since(locked)
		return err
	}
	if err := startSnapshots(ctx, workers); err != nil {
		return p, errors.Join(err, unlock())
	}
	pos, gtid, err := d.readPosition(ctx, coord)
	if err != nil {
		return p, errors.Join(err, unlock())
	}
	if p.at, err = serverNow(ctx, coord); err != nil {
		return p, errors.Join(err, unlock())
	}
	if err := readSequenceStates(ctx, coord, seqs); err != nil {
		return p, errors.Join(err, unlock())
	}
	if err := unlock(); err != nil {
		return p, fmt.Errorf("unlock tables: %w", err)
	}
	p.pos, p.gtid = pos, gtid
	return p, nil
}

// startSnapshots starts every worker's transaction at once, to keep the
// time writes are blocked short.
func startSnapshots(ctx context.Context, workers []*sql.Conn) error {
	var g errgroup.Group
	for _, w := range workers {
		g.Go(func() error {
			if _, err := w.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
				return fmt.Errorf("start transaction with consistent snapshot: %w", err)
			}
			return nil
		})
	}
	return g.Wait()
}

// serverNow reads the server's clock in UTC, to the microsecond.
func serverNow(ctx context.Context, conn *sql.Conn) (time.Time, error) {
	var s string
	if err := conn.QueryRowContext(ctx, "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ')").Scan(&s); err != nil {
		return time.Time{}, fmt.Errorf("read the server's clock: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the server's clock: %q: %w", s, err)
	}
	return t, nil
}

// readPosition reads the binlog position and GTID state.
func (d *dumper) readPosition(ctx context.Context, coord *sql.Conn) (catalog.Position, string, error) {
	var pos catalog.Position
	// MySQL 8.2 renamed SHOW MASTER STATUS, and 8.4 dropped the old name.
	rows, err := coord.QueryContext(ctx, "SHOW MASTER STATUS")
	if d.flavor == binlog.MySQL && mysqlErrno(err) == erParse {
		rows, err = coord.QueryContext(ctx, "SHOW BINARY LOG STATUS")
	}
	if err != nil {
		if isAccessDenied(err) {
			return pos, "", fmt.Errorf("show master status (needs BINLOG MONITOR or REPLICATION CLIENT): %w", err)
		}
		return pos, "", fmt.Errorf("show master status: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return pos, "", fmt.Errorf("show master status: %w", err)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return pos, "", fmt.Errorf("show master status: %w", err)
		}
		return pos, "", fmt.Errorf("show master status: no row: %w", binlog.ErrBinlogDisabled)
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return pos, "", fmt.Errorf("show master status: %w", err)
	}
	pos.File = string(vals[0])
	if pos.Pos, err = strconv.ParseUint(string(vals[1]), 10, 64); err != nil {
		return pos, "", fmt.Errorf("show master status: position %q: %w", vals[1], err)
	}
	rows.Close()
	q := "SELECT @@global.gtid_binlog_pos"
	if d.flavor == binlog.MySQL {
		q = "SELECT @@global.gtid_executed"
	}
	var gtid string
	if err := coord.QueryRowContext(ctx, q).Scan(&gtid); err != nil {
		return pos, "", fmt.Errorf("read gtid state: %w", err)
	}
	return pos, gtid, nil
}

// errNoBackupLock means the MySQL path without a global read lock could not
// be used (no BACKUP_ADMIN, no log_status, or writes kept moving).
var errNoBackupLock = errors.New("backup lock point unavailable")

// mysqlBackupLockPoint is MySQL 8's way to a consistent point without
// blocking writes, as MySQL Shell's dump does: LOCK INSTANCE FOR BACKUP
// blocks DDL (not DML); the workers start their transactions between two
// reads of performance_schema.log_status, whose columns are consistent with
// each other. If gtid_executed did not move between the reads, no
// transaction committed while the workers started, so every worker sees
// the state at that position. Otherwise it is retried, and after a few
// tries the caller falls back to FTWRL. WritesBlocked is zero.
//
// Written from MySQL's documentation; not tested against a live MySQL.
func (d *dumper) mysqlBackupLockPoint(ctx context.Context, coord *sql.Conn, workers []*sql.Conn) (point, error) {
	var p point
	if _, err := coord.ExecContext(ctx, "LOCK INSTANCE FOR BACKUP"); err != nil {
		return p, fmt.Errorf("%w: lock instance for backup (needs BACKUP_ADMIN): %v", errNoBackupLock, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := coord.ExecContext(uctx, "UNLOCK INSTANCE"); err != nil {
			d.log.Warn("unlock instance", "err", err)
		}
	}()
	const q = "SELECT LOCAL->>'$.binary_log_file', LOCAL->>'$.binary_log_position', LOCAL->>'$.gtid_executed' " +
		"FROM performance_schema.log_status"
	read := func() (catalog.Position, string, error) {
		var pos catalog.Position
		var gtid string
		err := coord.QueryRowContext(ctx, q).Scan(&pos.File, &pos.Pos, &gtid)
		return pos, gtid, err
	}
	for p.attempts = 1; p.attempts <= 3; p.attempts++ {
		pos1, gtid1, err := read()
		if err != nil {
			return p, fmt.Errorf("%w: read performance_schema.log_status (needs BACKUP_ADMIN): %v", errNoBackupLock, err)
		}
		if err := startSnapshots(ctx, workers); err != nil {
			return p, err
		}
		pos2, gtid2, err := read()
		if err != nil {
			return p, fmt.Errorf("read performance_schema.log_status: %w", err)
		}
		if gtid1 == gtid2 && pos1 == pos2 && gtid1 != "" {
			p.pos, p.gtid = pos2, gtid2
			// Nothing committed between the reads: now is no earlier than
			// any commit the snapshot holds.
			if p.at, err = serverNow(ctx, coord); err != nil {
				return p, err
			}
			return p, nil
		}
		for _, w := range workers {
			if _, err := w.ExecContext(ctx, "ROLLBACK"); err != nil {
				return p, fmt.Errorf("end snapshot transaction: %w", err)
			}
		}
	}
	return p, fmt.Errorf("%w: writes committed while every attempt started its transactions", errNoBackupLock)
}

// usersQuery lists accounts and roles: user, host, is_role.
func usersQuery(f binlog.Flavor) string {
	if f == binlog.MySQL {
		return "SELECT User, Host, 'N' FROM mysql.user ORDER BY User, Host"
	}
	return "SELECT User, Host, is_role FROM mysql.user ORDER BY is_role DESC, User, Host"
}

// accountIgnored reports whether err is SHOW CREATE USER's answer for an
// account the grant tables hold but the server has not loaded: on a
// MariaDB server running --skip-name-resolve, one whose host is a name
// (root@<hostname> as mariadb-install-db creates it,
// 'app'@'web01.example.com'), which the server skips with a warning at
// every start; or, on either flavor, rows written without FLUSH
// PRIVILEGES. (MySQL 8.0's source, as read, only warns about such a host
// and loads the account, so SHOW CREATE USER shows it there.) MariaDB
// answers "Can't find any matching row in the user table", MySQL
// "Operation SHOW CREATE USER failed".
func accountIgnored(f binlog.Flavor, err error) bool {
	if f == binlog.MySQL {
		return mysqlErrno(err) == erCannotUser
	}
	return mysqlErrno(err) == erPasswordNoMatch
}

// grantTable is a table of the mysql schema that holds rows of accounts,
// and the columns that name the account a row belongs to (as grantee).
type grantTable struct{ name, user, host string }

// grantTables are the tables an account's rows are in, its own row first.
// An account the server ignores is snapshotted as its rows in them.
// MySQL's are written from its documentation (8.0 to 9.x) and not tested
// live.
func grantTables(f binlog.Flavor) []grantTable {
	if f == binlog.MySQL {
		return []grantTable{
			{"user", "User", "Host"},
			{"db", "User", "Host"},
			{"tables_priv", "User", "Host"},
			{"columns_priv", "User", "Host"},
			{"procs_priv", "User", "Host"},
			{"proxies_priv", "User", "Host"},
			{"global_grants", "USER", "HOST"},
			{"role_edges", "TO_USER", "TO_HOST"},
			{"default_roles", "USER", "HOST"},
			{"password_history", "User", "Host"},
		}
	}
	return []grantTable{
		{"global_priv", "User", "Host"},
		{"db", "User", "Host"},
		{"tables_priv", "User", "Host"},
		{"columns_priv", "User", "Host"},
		{"procs_priv", "User", "Host"},
		{"proxies_priv", "User", "Host"},
		{"roles_mapping", "User", "Host"},
	}
}

// publicRole reports MariaDB's PUBLIC (10.11+), the role every account
// has: a server cannot create or drop it, but its grants are the
// database's. MySQL has none (an account named PUBLIC is an account).
func publicRole(f binlog.Flavor, user, host string) bool {
	return f != binlog.MySQL && user == "PUBLIC" && host == ""
}

// builtinAccount reports the accounts a server creates for itself, which
// are never dumped: the restored server has its own.
func builtinAccount(user, host string) bool {
	switch user {
	case "mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema", "":
		return true
	case "root":
		return host == "localhost" || host == "127.0.0.1" || host == "::1"
	}
	return false
}

// bulkLoadsTables reports whether a server of this version (SELECT
// VERSION()) loads a table fastest from one LOAD DATA statement of all its
// chunks. MariaDB's InnoDB loads an empty table with unique_checks and
// foreign_key_checks off in bulk: one undo record for the statement and
// secondary indexes built by sorting, about a quarter faster than a
// transaction per chunk, where only the first finds the table empty. Its
// LOAD DATA path is sound from 10.11.11, 11.4.5 and 11.7.2 (MDEV-34703:
// earlier releases could abort when the sort files filled tmpdir). MySQL
// and other releases load a transaction per chunk, which bounds the undo
// log a load writes.
func bulkLoadsTables(version string) bool {
	if !strings.Contains(version, "MariaDB") {
		return false
	}
	v := strings.TrimPrefix(version, "5.5.5-")
	m := bulkVersionRe.FindStringSubmatch(v)
	if m == nil {
		return false
	}
	var n [3]int
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	at := func(major, minor, patch int) bool {
		return n[0] == major && n[1] == minor && n[2] >= patch
	}
	switch {
	case n[0] > 11 || (n[0] == 11 && n[1] > 7):
		return true
	case at(11, 7, 2), at(11, 4, 5), at(10, 11, 11):
		return true
	}
	return false
}

var bulkVersionRe = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`)
