package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/binlog"
)

// Error numbers that mean a view refers to something not created yet.
const (
	erBadFieldError = 1054
	erViewInvalid   = 1356
)

// createObjects creates views (retrying those that refer to views not yet
// created), then routines and packages, triggers and events, each under the
// sql_mode and collation it was created with.
func (l *loader) createObjects(ctx context.Context, c *sql.Conn, lay *layout) error {
	pending := lay.Views
	for len(pending) > 0 {
		var failed []objectDef
		var firstErr error
		for _, o := range pending {
			err := createObject(ctx, c, o)
			if err == nil {
				continue
			}
			switch mysqlErrno(err) {
			case erNoSuchTable, erBadFieldError, erViewInvalid:
				failed = append(failed, o)
				if firstErr == nil {
					firstErr = err
				}
			default:
				return err
			}
		}
		if len(failed) == len(pending) {
			return firstErr
		}
		pending = failed
	}
	for _, group := range [][]objectDef{lay.Routines, lay.Triggers, lay.Events} {
		for _, o := range group {
			if err := createObject(ctx, c, o); err != nil {
				return err
			}
		}
	}
	return restoreSession(ctx, c)
}

// createObject runs an object's CREATE statement in its schema, with its
// recorded session settings.
func createObject(ctx context.Context, c *sql.Conn, o objectDef) error {
	what := fmt.Sprintf("create %s %s.%s", strings.ToLower(o.Kind), o.Schema, o.Name)
	if _, err := c.ExecContext(ctx, "USE "+quoteIdent(o.Schema)); err != nil {
		return fmt.Errorf("%s: use: %w", what, err)
	}
	// The statement is sent in utf8mb4, whatever its original client
	// character set; collation_connection decides its literals.
	set := []string{"character_set_client = utf8mb4"}
	args := []any{}
	if o.SQLMode != "" || o.Kind != kindView {
		set = append(set, "sql_mode = ?")
		args = append(args, o.SQLMode)
	}
	if o.CollationConnection != "" {
		set = append(set, "collation_connection = ?")
		args = append(args, o.CollationConnection)
	}
	if o.TimeZone != "" {
		set = append(set, "time_zone = ?")
		args = append(args, o.TimeZone)
	}
	if _, err := c.ExecContext(ctx, "SET SESSION "+strings.Join(set, ", "), args...); err != nil {
		return fmt.Errorf("%s: set session: %w", what, err)
	}
	if _, err := c.ExecContext(ctx, o.Create); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// restoreSession puts the loading session's settings back after objects
// changed them.
func restoreSession(ctx context.Context, c *sql.Conn) error {
	_, err := c.ExecContext(ctx, "SET SESSION time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', "+
		"character_set_client = utf8mb4, collation_connection = utf8mb4_general_ci")
	if err != nil {
		return fmt.Errorf("reset load session: %w", err)
	}
	return nil
}

// createUsers replaces the target's accounts of the same names with the
// snapshot's, roles first, then applies the grants (roles' first, so that
// granting a role finds its privileges in place). Accounts the source
// ignored come last, written back into the grant tables as they were.
func (l *loader) createUsers(ctx context.Context, c *sql.Conn, users []userDef) error {
	for _, role := range []bool{true, false} {
		for _, u := range users {
			if u.Role != role || len(u.Rows) > 0 || u.Create == "" {
				continue // written back later, or PUBLIC, which the target has
			}
			drop := "DROP USER IF EXISTS " + quoteIdent(u.User) + "@" + quoteIdent(u.Host)
			if u.Role {
				drop = "DROP ROLE IF EXISTS " + quoteIdent(u.User)
			}
			if _, err := c.ExecContext(ctx, drop); err != nil {
				return fmt.Errorf("drop existing %s@%s: %w", u.User, u.Host, err)
			}
			if _, err := c.ExecContext(ctx, u.Create); err != nil {
				return fmt.Errorf("create user %s@%s: %w", u.User, u.Host, err)
			}
		}
	}
	for _, role := range []bool{true, false} {
		for _, u := range users {
			if u.Role != role {
				continue
			}
			for _, g := range u.Grants {
				if _, err := c.ExecContext(ctx, g); err != nil {
					return fmt.Errorf("grant to %s@%s (%s): %w", u.User, u.Host, firstWordsOf(g, 6), err)
				}
			}
		}
	}
	return l.writeGrantRows(ctx, c, users)
}

// writeGrantRows restores the accounts the source ignored (see
// accountIgnored) as rows of the grant tables, byte for byte, and has the
// server reload its grant tables. A target that runs --skip-name-resolve
// ignores them as the source did; one that does not, or the source once it
// is restarted without it, finds them with their privileges. The rows are
// written rather than rebuilt as CREATE USER and GRANT statements because
// the server cannot show them as statements (SHOW CREATE USER and SHOW
// GRANTS refuse an account it has not loaded), and a copy of the rows is
// what the account is.
func (l *loader) writeGrantRows(ctx context.Context, c *sql.Conn, users []userDef) error {
	tables := map[string]bool{}
	for _, t := range grantTables(binlog.Flavor(l.m.Flavor)) {
		tables[t.name] = true
	}
	wrote := false
	for _, u := range users {
		if len(u.Rows) == 0 {
			continue
		}
		// DROP USER removes the account's rows from every grant table,
		// whether or not the target has loaded it.
		if _, err := c.ExecContext(ctx, "DROP USER IF EXISTS "+quoteIdent(u.User)+"@"+quoteIdent(u.Host)); err != nil {
			return fmt.Errorf("drop existing %s@%s: %w", u.User, u.Host, err)
		}
		for _, r := range u.Rows {
			if !tables[r.Table] || len(r.Columns) != len(r.Values) || len(r.Columns) == 0 {
				return fmt.Errorf("account %s@%s: a row of mysql.%s with %d columns and %d values is not a grant table row of a %s server",
					u.User, u.Host, r.Table, len(r.Columns), len(r.Values), l.m.Flavor)
			}
			cols := make([]string, len(r.Columns))
			args := make([]any, len(r.Values))
			for i, col := range r.Columns {
				cols[i] = quoteIdent(col)
				// nil is NULL; the driver sends other bytes as a binary
				// string, which the column converts to its character set.
				args[i] = r.Values[i]
			}
			q := "INSERT INTO mysql." + quoteIdent(r.Table) + " (" + strings.Join(cols, ", ") + ") VALUES (" +
				strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
			if _, err := c.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("restore %s@%s: insert into mysql.%s: %w", u.User, u.Host, r.Table, err)
			}
			var warnings int
			if err := c.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&warnings); err != nil {
				return fmt.Errorf("read warning count: %w", err)
			}
			if warnings > 0 {
				return fmt.Errorf("restore %s@%s: insert into mysql.%s: server reported %d warnings: %s", u.User, u.Host, r.Table,
					warnings, firstWarnings(ctx, c))
			}
		}
		wrote = true
	}
	if !wrote {
		return nil
	}
	// The server loads rows written to its grant tables only when it reads
	// them again. (Recent MySQL releases deprecate FLUSH PRIVILEGES but
	// still run it.)
	if _, err := c.ExecContext(ctx, "FLUSH PRIVILEGES"); err != nil {
		return fmt.Errorf("reload grant tables after restoring accounts the source ignored (needs RELOAD): %w", err)
	}
	return nil
}

// firstWordsOf keeps password hashes out of error messages.
func firstWordsOf(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = append(f[:n], "...")
	}
	return strings.Join(f, " ")
}
