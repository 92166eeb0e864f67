// Package preflight checks, before an operation starts, that the account
// it connects as holds every privilege the operation needs, and says what
// to grant when it does not.
//
// The account's privileges are read the way the server applies them to a
// new connection: its own grants, those of the roles active at login
// (MariaDB's default role and the roles granted to it, MySQL's default or
// all granted roles per activate_all_roles_on_login) and MariaDB's PUBLIC.
package preflight

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
)

// ErrMissingPrivileges is matched (errors.Is) by a *MissingError.
var ErrMissingPrivileges = errors.New("missing privileges")

// Missing is a privilege the account lacks, with every role that needs it.
type Missing struct {
	Privilege string
	On        Object
	// Needs are the roles and what each needs it for.
	Needs []Need
	// Revoked is set when the privilege is granted on *.* but partially
	// revoked (MySQL partial_revokes) on these databases.
	Revoked []string
	// Note explains a conditional requirement.
	Note string
}

// Need is why a role needs a privilege.
type Need struct {
	Role Role
	Why  string
}

// MissingError names every privilege an account lacks for some roles and
// the statements that grant them.
type MissingError struct {
	Flavor  binlog.Flavor
	Account Account
	Missing []Missing
	// Inactive are roles granted to the account that are not active at
	// login, so that their privileges do not count.
	Inactive []Account
}

func (e *MissingError) Is(target error) bool { return target == ErrMissingPrivileges }

// Error is one line: what is missing, who needs it for what, and the fix.
func (e *MissingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "account %s lacks ", e.Account)
	for i, m := range e.Missing {
		switch {
		case i > 0 && i == len(e.Missing)-1:
			b.WriteString(" and ")
		case i > 0:
			b.WriteString(", ")
		}
		b.WriteString(m.Privilege)
		if m.On.Level != LevelGlobal {
			b.WriteString(" on " + m.On.String())
		}
		b.WriteString(" (needed by ")
		for j, n := range m.Needs {
			if j > 0 {
				b.WriteString("; by ")
			}
			b.WriteString(n.Role.title() + " to " + n.Why)
		}
		if len(m.Revoked) > 0 {
			var dbs []string
			for _, db := range m.Revoked {
				dbs = append(dbs, QuoteIdent(db)+".*")
			}
			b.WriteString("; partially revoked on " + strings.Join(dbs, ", "))
		}
		if m.Note != "" {
			b.WriteString("; only because " + m.Note)
		}
		b.WriteString(")")
	}
	b.WriteString("; run: " + strings.Join(GrantStatements(e.Account, e.Missing), "; "))
	for _, r := range e.Inactive {
		fmt.Fprintf(&b, "; role %s is granted but not active at login (%s)", r, defaultRoleStatement(e.Flavor, r, e.Account))
	}
	return b.String()
}

// GrantStatements returns the GRANT statements that give account the
// missing privileges: one per object, WITH GRANT OPTION where GRANT OPTION
// is among them.
func GrantStatements(account Account, missing []Missing) []string {
	type group struct {
		on     Object
		privs  []string
		option bool
	}
	var groups []*group
	find := func(on Object) *group {
		for _, g := range groups {
			if g.on == on {
				return g
			}
		}
		g := &group{on: on}
		groups = append(groups, g)
		return g
	}
	for _, m := range missing {
		g := find(m.On)
		if len(m.Revoked) > 0 {
			// A partial revoke is lifted by granting on the database.
			for _, db := range m.Revoked {
				d := find(Object{Level: LevelDatabase, DB: db})
				d.privs = append(d.privs, m.Privilege)
			}
			continue
		}
		if m.Privilege == "GRANT OPTION" {
			g.option = true
			continue
		}
		if !slices.Contains(g.privs, m.Privilege) {
			g.privs = append(g.privs, m.Privilege)
		}
	}
	var out []string
	for _, g := range groups {
		if len(g.privs) == 0 && !g.option {
			continue
		}
		privs := strings.Join(g.privs, ", ")
		if privs == "" {
			privs = "USAGE"
		}
		s := "GRANT " + privs + " ON " + g.on.String() + " TO " + account.String()
		if g.option {
			s += " WITH GRANT OPTION"
		}
		out = append(out, s)
	}
	return out
}

// DetectFlavor tells MySQL from MariaDB by the server's version.
func DetectFlavor(ctx context.Context, db *sql.DB) (binlog.Flavor, error) {
	var v string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return "", fmt.Errorf("read the server version: %w", err)
	}
	return binlog.FlavorOf(v), nil
}

// Check reads the privileges in effect for db's account and returns a
// *MissingError naming every one that roles need and the account lacks,
// or nil. An empty flavor is detected from the server.
func Check(ctx context.Context, db *sql.DB, f binlog.Flavor, roles ...Role) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if f == "" {
		var err error
		if f, err = DetectFlavor(ctx, db); err != nil {
			return err
		}
	}
	p, err := Read(ctx, db, f)
	if err != nil {
		return err
	}
	conds := map[Condition]bool{}
	for _, r := range roles {
		for _, req := range Requirements(f, r) {
			if req.When == "" {
				continue
			}
			if _, ok := conds[req.When]; ok {
				continue
			}
			var holds sql.NullBool
			if err := db.QueryRowContext(ctx, conditionQuery(req.When)).Scan(&holds); err != nil {
				return fmt.Errorf("read server settings: %w", err)
			}
			conds[req.When] = holds.Bool
		}
	}
	if m := p.missing(roles, conds); m != nil {
		return m
	}
	return nil
}

// Privileges are the privileges in effect for an account's new connections.
type Privileges struct {
	Flavor  binlog.Flavor
	Account Account
	// Active are the roles whose privileges count (MySQL: CURRENT_ROLE();
	// MariaDB: the enabled role and those granted to it).
	Active []Account
	// Granted are the roles granted to the account itself.
	Granted []Account
	// Grants are the privilege grants and partial revokes that apply.
	Grants []Grant
}

// Read reads the privileges in effect for the account db connects as.
func Read(ctx context.Context, db *sql.DB, f binlog.Flavor) (*Privileges, error) {
	// One connection: the current role is a session's.
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the account's privileges: %w", err)
	}
	defer conn.Close()
	var user string
	var role sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT CURRENT_USER(), CURRENT_ROLE()").Scan(&user, &role); err != nil {
		return nil, fmt.Errorf("read the account's privileges: %w", err)
	}
	p := &Privileges{Flavor: f, Account: ParseAccount(user)}
	var lines []string
	for _, q := range grantsQueries(f, role.String) {
		rows, err := conn.QueryContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("read the account's privileges (SHOW GRANTS): %w", err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read the account's privileges (SHOW GRANTS): %w", err)
			}
			lines = append(lines, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read the account's privileges (SHOW GRANTS): %w", err)
		}
	}
	if err := p.add(lines, role.String); err != nil {
		return nil, err
	}
	return p, nil
}

// add digests SHOW GRANTS lines; currentRole is CURRENT_ROLE().
func (p *Privileges) add(lines []string, currentRole string) error {
	// Role membership: who holds which role.
	members := map[Account][]Account{}
	var grants []Grant
	for i, line := range lines {
		g, err := ParseGrant(line)
		if err != nil {
			return fmt.Errorf("SHOW GRANTS line %d of %d: %w", i+1, len(lines), err)
		}
		switch g.Kind {
		case KindRole:
			members[g.Grantee] = append(members[g.Grantee], g.Roles...)
		case KindPrivileges, KindRevoke:
			grants = append(grants, g)
		}
	}
	p.Granted = members[p.Account]
	p.Active = activeRoles(p.Flavor, currentRole, members)
	// Every privilege line applies: SHOW GRANTS listed only the account's,
	// its active roles' and PUBLIC's.
	p.Grants = grants
	return nil
}

// activeRoles expands CURRENT_ROLE() to every role whose privileges count.
func activeRoles(f binlog.Flavor, current string, members map[Account][]Account) []Account {
	var start []Account
	switch {
	case current == "" || strings.EqualFold(current, "NONE"):
	case f == binlog.MySQL:
		// `r1`@`%`,`r2`@`%`
		if g, err := ParseGrant("GRANT " + current + " TO x"); err == nil {
			start = g.Roles
		}
	default:
		start = []Account{{User: current}}
	}
	var out []Account
	var walk func(a Account)
	walk = func(a Account) {
		if slices.Contains(out, a) {
			return
		}
		out = append(out, a)
		for _, r := range members[a] {
			walk(r)
		}
	}
	for _, a := range start {
		walk(a)
	}
	return out
}

// has reports whether a privilege (or one that serves instead) is granted
// on the object, and the databases where a global grant of it is
// partially revoked.
func (p *Privileges) has(req Requirement) (bool, []string) {
	names := append([]string{req.Privilege}, req.Also...)
	al := aliases(p.Flavor)
	norm := func(s string) string {
		s = canonical(s)
		if a, ok := al[s]; ok {
			return a
		}
		return s
	}
	want := map[string]bool{}
	for _, n := range names {
		want[norm(n)] = true
	}
	matches := func(pr Privilege) bool {
		if len(pr.Columns) > 0 {
			return false
		}
		n := norm(pr.Name)
		return want[n] || (n == "ALL PRIVILEGES" && !want["GRANT OPTION"])
	}
	found := false
	var revoked []string
	for _, g := range p.Grants {
		granted := g.GrantOption && want["GRANT OPTION"]
		for _, pr := range g.Privileges {
			if matches(pr) {
				granted = true
			}
		}
		switch {
		case !granted:
		case g.Kind == KindRevoke:
			// A partial revoke (MySQL) is on a database: it takes that
			// database out of a global grant.
			if req.On.Level == LevelGlobal || covers(g.Object, req.On) {
				revoked = append(revoked, g.Object.DB)
			}
		case covers(g.Object, req.On):
			found = true
		}
	}
	if found && len(revoked) > 0 {
		return false, revoked
	}
	return found, nil
}

// covers reports whether a grant on g applies to the object o needs: a
// global grant covers everything, a database grant (whose name may hold
// LIKE wildcards) its tables, a table grant that table.
func covers(g, o Object) bool {
	switch g.Level {
	case LevelGlobal:
		return true
	case LevelDatabase:
		return o.Level == LevelTable && likeMatch(g.DB, o.DB) || o.Level == LevelDatabase && likeMatch(g.DB, o.DB)
	case LevelTable:
		return o.Level == LevelTable && strings.EqualFold(g.DB, o.DB) && strings.EqualFold(g.Name, o.Name)
	}
	return false
}

// likeMatch matches name against a database grant's pattern: _ is any one
// character, % any run, \ escapes; case-insensitively.
func likeMatch(pattern, name string) bool {
	p, n := []rune(strings.ToLower(pattern)), []rune(strings.ToLower(name))
	var match func(i, j int) bool
	match = func(i, j int) bool {
		for i < len(p) {
			switch c := p[i]; {
			case c == '%':
				for k := j; k <= len(n); k++ {
					if match(i+1, k) {
						return true
					}
				}
				return false
			case c == '\\' && i+1 < len(p):
				if j >= len(n) || n[j] != p[i+1] {
					return false
				}
				i, j = i+2, j+1
			case c == '_':
				if j >= len(n) {
					return false
				}
				i, j = i+1, j+1
			default:
				if j >= len(n) || n[j] != c {
					return false
				}
				i, j = i+1, j+1
			}
		}
		return j == len(n)
	}
	return match(0, 0)
}

// missing returns the roles' requirements the account lacks, or nil.
// conds tells which conditional requirements apply.
func (p *Privileges) missing(roles []Role, conds map[Condition]bool) *MissingError {
	e := &MissingError{Flavor: p.Flavor, Account: p.Account}
	for _, r := range roles {
		for _, req := range Requirements(p.Flavor, r) {
			if req.When != "" && !conds[req.When] {
				continue
			}
			ok, revoked := p.has(req)
			if ok {
				continue
			}
			i := slices.IndexFunc(e.Missing, func(m Missing) bool { return m.Privilege == req.Privilege && m.On == req.On })
			if i < 0 {
				e.Missing = append(e.Missing, Missing{Privilege: req.Privilege, On: req.On, Revoked: revoked, Note: conditionNote(req.When)})
				i = len(e.Missing) - 1
			}
			if !slices.ContainsFunc(e.Missing[i].Needs, func(n Need) bool { return n.Role == r }) {
				e.Missing[i].Needs = append(e.Missing[i].Needs, Need{Role: r, Why: req.Why})
			}
		}
	}
	if len(e.Missing) == 0 {
		return nil
	}
	for _, g := range p.Granted {
		if !slices.Contains(p.Active, g) {
			e.Inactive = append(e.Inactive, g)
		}
	}
	return e
}
