package preflight

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/binlog"
)

// Script returns the SQL that creates account with exactly the privileges
// roles need on a flavor's server, each explained in a comment. The
// password is left as <password>, which is a syntax error until replaced.
func Script(f binlog.Flavor, roles []Role, account Account) string {
	var b strings.Builder
	var names []string
	for _, r := range roles {
		names = append(names, r.title())
	}
	fmt.Fprintf(&b, "-- mysql-pitr account for %s on %s.\n", strings.Join(names, ", "), flavorTitle(f))
	b.WriteString("-- Replace <password> (or use another authentication method) before running this.\n")
	fmt.Fprintf(&b, "CREATE USER IF NOT EXISTS %s IDENTIFIED BY <password>;\n", account)

	var always, conditional []Missing
	for _, r := range roles {
		for _, req := range Requirements(f, r) {
			list := &always
			if req.When != "" {
				list = &conditional
			}
			i := slices.IndexFunc(*list, func(m Missing) bool { return m.Privilege == req.Privilege && m.On == req.On })
			if i < 0 {
				*list = append(*list, Missing{Privilege: req.Privilege, On: req.On, Note: conditionNote(req.When)})
				i = len(*list) - 1
			}
			(*list)[i].Needs = append((*list)[i].Needs, Need{Role: r, Why: req.Why})
		}
	}
	// A table grant is redundant next to the same privilege on *.*.
	always = slices.DeleteFunc(always, func(m Missing) bool {
		return m.On.Level != LevelGlobal && slices.ContainsFunc(always, func(o Missing) bool {
			return o.On.Level == LevelGlobal && o.Privilege == m.Privilege
		})
	})
	for _, m := range always {
		writeNeeds(&b, m)
	}
	for _, s := range GrantStatements(account, always) {
		b.WriteString(s + ";\n")
	}
	for _, m := range conditional {
		fmt.Fprintf(&b, "-- Only where %s:\n", m.Note)
		writeNeeds(&b, m)
		for _, s := range GrantStatements(account, []Missing{m}) {
			b.WriteString("-- " + s + ";\n")
		}
	}
	keyring := slices.ContainsFunc(always, func(m Missing) bool { return m.On.Name == "keyring_component_status" })
	for _, n := range scriptNotes(f, roles, keyring) {
		b.WriteString("-- " + n + "\n")
	}
	return b.String()
}

func writeNeeds(b *strings.Builder, m Missing) {
	what := m.Privilege
	if m.On.Level != LevelGlobal {
		what += " on " + m.On.String()
	}
	for _, n := range m.Needs {
		fmt.Fprintf(b, "--   %s: %s, to %s\n", what, n.Role.title(), n.Why)
	}
}

// scriptNotes are per-flavor remarks the grants cannot express.
func scriptNotes(f binlog.Flavor, roles []Role, keyring bool) []string {
	var notes []string
	has := func(r Role) bool { return slices.Contains(roles, r) }
	if f == binlog.MySQL {
		if has(Restore) {
			notes = append(notes, "MySQL 8.0 before 8.2 has SET_USER_ID instead of SET_ANY_DEFINER.",
				"A restore loads rows with LOAD DATA LOCAL INFILE: the server needs local_infile=ON.")
		}
		if keyring {
			notes = append(notes, "performance_schema.keyring_component_status exists from MySQL 8.0.24; leave that grant out before.")
		}
	}
	if has(Restore) {
		notes = append(notes, "A restore re-creates the snapshot's accounts: it must also hold, WITH GRANT OPTION, every privilege they hold.")
	}
	switch {
	case has(Physical) && f == binlog.MySQL:
		notes = append(notes, "A physical snapshot clones the data into a directory on the server's host and reads it back: run it there "+
			"(or with the server's volume mounted at the same path) as the server's OS user, with mysqld of the server's release at hand.")
	case has(Physical), has(Xtrabackup):
		notes = append(notes, "A physical snapshot also reads the datadir's files: run it on the server's host as a user who can.")
	}
	return notes
}
