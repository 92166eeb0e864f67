package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Error numbers that mean a view refers to something not created yet.
const (
	erBadFieldError = 1054
	erViewInvalid   = 1356
)

// createObjects creates views (retrying those that refer to views not yet
// created), then routines, triggers and events, each under the sql_mode and
// collation it was created with.
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
// granting a role finds its privileges in place).
func (l *loader) createUsers(ctx context.Context, c *sql.Conn, users []userDef) error {
	for _, role := range []bool{true, false} {
		for _, u := range users {
			if u.Role != role {
				continue
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
