package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// showRow runs a SHOW statement that returns one row and returns its
// columns by lower-case name; NULL is "".
func showRow(ctx context.Context, c *sql.Conn, q string) (map[string]string, error) {
	rows, err := c.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("no row")
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(cols))
	for i, c := range cols {
		m[strings.ToLower(c)] = vals[i].String
	}
	return m, rows.Err()
}

// listNames runs a query returning (schema, name, kind) rows.
func listNames(ctx context.Context, c *sql.Conn, q string, args ...any) ([][3]string, error) {
	rows, err := c.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][3]string
	for rows.Next() {
		var r [3]string
		if err := rows.Scan(&r[0], &r[1], &r[2]); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// readObjects reads the views, routines, triggers and events of schemas.
func (d *dumper) readObjects(ctx context.Context, c *sql.Conn, p *plan, schemas []string) error {
	where, args := schemaFilter("TABLE_SCHEMA", schemas)
	views, err := listNames(ctx, c, "SELECT TABLE_SCHEMA, TABLE_NAME, 'VIEW' FROM information_schema.VIEWS WHERE "+
		where+" ORDER BY TABLE_SCHEMA, TABLE_NAME", args...)
	if err != nil {
		return fmt.Errorf("list views: %w", err)
	}
	where, args = schemaFilter("ROUTINE_SCHEMA", schemas)
	// By type, a package before its body.
	routines, err := listNames(ctx, c, "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE "+
		where+" ORDER BY ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME", args...)
	if err != nil {
		return fmt.Errorf("list routines: %w", err)
	}
	for _, r := range routines {
		switch r[2] {
		case kindProcedure, kindFunction, kindPackage, kindPackageBody:
		default:
			// A snapshot holds everything a restore needs, or fails.
			return fmt.Errorf("routine %s.%s: type %q is not supported by logical snapshots", r[0], r[1], r[2])
		}
	}
	// ACTION_ORDER: triggers created in this order keep their order.
	where, args = schemaFilter("TRIGGER_SCHEMA", schemas)
	triggers, err := listNames(ctx, c, "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, 'TRIGGER' FROM information_schema.TRIGGERS WHERE "+
		where+" ORDER BY EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER", args...)
	if err != nil {
		return fmt.Errorf("list triggers (needs the TRIGGER privilege): %w", err)
	}
	where, args = schemaFilter("EVENT_SCHEMA", schemas)
	events, err := listNames(ctx, c, "SELECT EVENT_SCHEMA, EVENT_NAME, 'EVENT' FROM information_schema.EVENTS WHERE "+
		where+" ORDER BY EVENT_SCHEMA, EVENT_NAME", args...)
	if err != nil {
		return fmt.Errorf("list events (needs the EVENT privilege): %w", err)
	}
	for _, group := range []struct {
		names [][3]string
		dst   *[]objectDef
	}{{views, &p.views}, {routines, &p.routines}, {triggers, &p.triggers}, {events, &p.events}} {
		for _, n := range group.names {
			o, err := showCreate(ctx, c, n[2], n[0], n[1])
			if err != nil {
				return err
			}
			*group.dst = append(*group.dst, o)
		}
	}
	return nil
}

// showCreate reads one object's CREATE statement and session settings.
func showCreate(ctx context.Context, c *sql.Conn, kind, schema, name string) (objectDef, error) {
	o := objectDef{Kind: kind, Schema: schema, Name: name}
	m, err := showRow(ctx, c, "SHOW CREATE "+kind+" "+quoteTable(schema, name))
	if err != nil {
		hint := ""
		switch {
		case kind == kindView:
			hint = " (needs SHOW VIEW and SELECT)"
		case kind == kindTrigger:
			hint = " (needs TRIGGER)"
		case kind == kindEvent:
			hint = " (needs EVENT)"
		default:
			hint = " (needs SELECT on mysql.proc, or to be the definer)"
		}
		return o, fmt.Errorf("show create %s %s.%s%s: %w", strings.ToLower(kind), schema, name, hint, err)
	}
	col := map[string]string{
		kindView:        "create view",
		kindProcedure:   "create procedure",
		kindFunction:    "create function",
		kindTrigger:     "sql original statement",
		kindEvent:       "create event",
		kindPackage:     "create package",
		kindPackageBody: "create package body",
	}[kind]
	o.Create = m[col]
	if o.Create == "" {
		return o, fmt.Errorf("show create %s %s.%s: statement is empty: the account lacks the privilege to see it "+
			"(SELECT on mysql.proc, or to be the definer)", strings.ToLower(kind), schema, name)
	}
	o.SQLMode = m["sql_mode"]
	o.CharacterSetClient = m["character_set_client"]
	o.CollationConnection = m["collation_connection"]
	o.TimeZone = m["time_zone"]
	return o, nil
}

// readUsers reads accounts and roles with their grants, leaving out the
// server's built-in accounts and, unless IncludeOwnUser, the snapshot's own.
func (d *dumper) readUsers(ctx context.Context, c *sql.Conn) ([]userDef, error) {
	var self string
	if err := c.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&self); err != nil {
		return nil, fmt.Errorf("read current user: %w", err)
	}
	list, err := listNames(ctx, c, usersQuery(d.flavor))
	if err != nil {
		if isAccessDenied(err) {
			return nil, fmt.Errorf("list users (needs SELECT on mysql.user; or set SkipUsers): %w", err)
		}
		return nil, fmt.Errorf("list users: %w", err)
	}
	var users, ignored []userDef
	for _, r := range list {
		u := userDef{User: r[0], Host: r[1], Role: r[2] == "Y"}
		if builtinAccount(u.User, u.Host) || (!d.opts.IncludeOwnUser && u.User+"@"+u.Host == self) {
			continue
		}
		shown, err := d.readAccount(ctx, c, &u)
		if err != nil {
			return nil, err
		}
		if !shown {
			ignored = append(ignored, u)
			continue
		}
		users = append(users, u)
	}
	if len(ignored) == 0 {
		return users, nil
	}
	unloaded, err := d.readUnloadedAccounts(ctx, ignored)
	if err != nil {
		return nil, err
	}
	return append(users, unloaded...), nil
}

// readAccount reads the statement that creates u and its grants. It
// reports false, having read nothing, for an account the server lists
// but ignores, which it cannot show.
func (d *dumper) readAccount(ctx context.Context, c *sql.Conn, u *userDef) (bool, error) {
	account := quoteIdent(u.User) + "@" + quoteIdent(u.Host)
	switch {
	case publicRole(d.flavor, u.User, u.Host):
		// Every server has it: only its grants are dumped, and none
		// when it holds none.
		account = "PUBLIC"
	case u.Role:
		account = quoteIdent(u.User)
		u.Create = "CREATE ROLE " + quoteIdent(u.User)
	default:
		err := c.QueryRowContext(ctx, "SHOW CREATE USER "+account).Scan(&u.Create)
		if err != nil && accountIgnored(d.flavor, err) {
			// The server cannot show it, but its rows are in the grant
			// tables: see readUnloadedAccounts.
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("show create user %s@%s: %w", u.User, u.Host, err)
		}
	}
	grants, err := showGrants(ctx, c, account)
	if err != nil {
		return false, fmt.Errorf("show grants for %s@%s: %w", u.User, u.Host, err)
	}
	u.Grants = grants
	return true, nil
}

// showGrants returns the GRANT statements of an account or role.
func showGrants(ctx context.Context, c *sql.Conn, account string) ([]string, error) {
	rows, err := c.QueryContext(ctx, "SHOW GRANTS FOR "+account)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var grants []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return nil, err
		}
		grants = append(grants, g)
	}
	return grants, rows.Err()
}

// readUnloadedAccounts reads the grant table rows of accounts the server
// ignores. Their rows come back to life when it runs without
// --skip-name-resolve, so they are snapshotted as they are; an account
// dropped since it was listed is left out.
func (d *dumper) readUnloadedAccounts(ctx context.Context, ignored []userDef) ([]userDef, error) {
	// On a connection of its own that receives values unconverted, as
	// the bytes they are.
	raw, err := d.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", d.opts.Source.Addr, err)
	}
	defer raw.Close()
	for _, s := range dataSessionSettings {
		if _, err := raw.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("set up session (%s): %w", s, err)
		}
	}
	var users []userDef
	for _, u := range ignored {
		if u.Rows, err = d.readGrantRows(ctx, raw, u.User, u.Host); err != nil {
			return nil, err
		}
		if len(u.Rows) == 0 || u.Rows[0].Table != grantTables(d.flavor)[0].name {
			continue // dropped since it was listed
		}
		d.log.Info("account is in the grant tables but not loaded by the server (a host name under --skip-name-resolve?): "+
			"snapshotting its grant table rows as they are", "user", u.User, "host", u.Host, "rows", len(u.Rows))
		users = append(users, u)
	}
	return users, nil
}

// readGrantRows reads every row of the grant tables that belongs to
// user@host, byte for byte.
func (d *dumper) readGrantRows(ctx context.Context, c *sql.Conn, user, host string) ([]grantRow, error) {
	var out []grantRow
	for _, t := range grantTables(d.flavor) {
		q := fmt.Sprintf("SELECT * FROM mysql.%s WHERE %s = ? AND %s = ?", quoteIdent(t.name), quoteIdent(t.user), quoteIdent(t.host))
		rows, err := c.QueryContext(ctx, q, user, host)
		if err != nil {
			return nil, fmt.Errorf("read mysql.%s rows of %s@%s (needs SELECT on the mysql schema; or set SkipUsers): %w", t.name, user, host, err)
		}
		cols, err := rows.Columns()
		for err == nil && rows.Next() {
			r := grantRow{Table: t.name, Columns: cols, Values: make([][]byte, len(cols))}
			ptrs := make([]any, len(cols))
			for i := range r.Values {
				ptrs[i] = &r.Values[i]
			}
			if err = rows.Scan(ptrs...); err == nil {
				out = append(out, r)
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("read mysql.%s rows of %s@%s: %w", t.name, user, host, err)
		}
	}
	return out, nil
}
