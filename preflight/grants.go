package preflight

import (
	"fmt"
	"strings"
)

// Grant is one line of SHOW GRANTS output: privileges on an object, roles
// granted to an account or role, a partial revoke (MySQL), or a default
// role (MariaDB).
//
// Nothing after the grantee is kept: MariaDB prints the account's password
// hash there (IDENTIFIED BY PASSWORD '…'), which must never reach a message.
type Grant struct {
	Kind GrantKind
	// Privileges of a privilege grant or revoke, canonical (upper case, one
	// space between words); ALL PRIVILEGES for ALL.
	Privileges []Privilege
	// Object the privileges apply to.
	Object Object
	// Roles granted (KindRole) or made the default (KindDefaultRole).
	Roles []Account
	// Grantee receives the privileges or roles.
	Grantee Account
	// GrantOption is WITH GRANT OPTION (privileges) or WITH ADMIN OPTION (roles).
	GrantOption bool
}

// GrantKind tells the forms of a SHOW GRANTS line apart.
type GrantKind int

// Kinds of SHOW GRANTS lines.
const (
	KindPrivileges  GrantKind = iota + 1 // GRANT privileges ON object TO grantee
	KindRevoke                           // REVOKE privileges ON object FROM grantee (MySQL partial revokes)
	KindRole                             // GRANT role[, role] TO grantee
	KindDefaultRole                      // SET DEFAULT ROLE role FOR grantee (MariaDB)
	KindProxy                            // GRANT PROXY ON account TO grantee
)

// Privilege is a privilege name with the columns it is limited to, if any.
type Privilege struct {
	Name    string
	Columns []string
}

// ObjectLevel is what a grant's ON clause names.
type ObjectLevel int

// Object levels.
const (
	LevelGlobal   ObjectLevel = iota + 1 // *.*
	LevelDatabase                        // db.*
	LevelTable                           // db.tbl
	LevelRoutine                         // PROCEDURE, FUNCTION or PACKAGE db.name
)

// Object is the target of a privilege grant.
type Object struct {
	Level ObjectLevel
	// DB and Name are unquoted; Name is empty for LevelGlobal and LevelDatabase.
	DB, Name string
	// Routine is PROCEDURE, FUNCTION, PACKAGE or PACKAGE BODY for LevelRoutine.
	Routine string
}

// String is the object as GRANT spells it.
func (o Object) String() string {
	switch o.Level {
	case LevelGlobal:
		return "*.*"
	case LevelDatabase:
		return QuoteIdent(o.DB) + ".*"
	case LevelRoutine:
		return o.Routine + " " + QuoteIdent(o.DB) + "." + QuoteIdent(o.Name)
	}
	return QuoteIdent(o.DB) + "." + QuoteIdent(o.Name)
}

// Account is a user or role: MariaDB roles have no host; MySQL roles and
// all users have one. PUBLIC (MariaDB 10.11+) is User "PUBLIC" with
// Public set.
type Account struct {
	User, Host string
	// HasHost distinguishes 'r' (a MariaDB role) from 'r'@''.
	HasHost bool
	Public  bool
}

// ParseAccount reads user@host as CURRENT_USER() returns it (unquoted; the
// host is after the last @).
func ParseAccount(s string) Account {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return Account{User: s}
	}
	return Account{User: s[:i], Host: s[i+1:], HasHost: true}
}

// String is the account as a statement names it: 'user'@'host', 'role',
// or PUBLIC.
func (a Account) String() string {
	if a.Public {
		return "PUBLIC"
	}
	if !a.HasHost {
		return QuoteString(a.User)
	}
	return QuoteString(a.User) + "@" + QuoteString(a.Host)
}

// QuoteString quotes s as an SQL string literal.
func QuoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// QuoteIdent quotes s as an identifier.
func QuoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// ParseError is a SHOW GRANTS line that could not be read. It names the
// byte offset and what was expected, never the line's text, which may hold
// a password hash.
type ParseError struct {
	Offset int
	Want   string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("unreadable SHOW GRANTS line: expected %s at byte %d", e.Want, e.Offset)
}

// ParseGrant reads one line of SHOW GRANTS output, from MariaDB 10.x/11.x
// or MySQL 8.x.
func ParseGrant(line string) (Grant, error) {
	toks, err := tokenize(line)
	if err != nil {
		return Grant{}, err
	}
	p := &parser{toks: toks, end: len(line)}
	return p.line()
}

type tokKind int

const (
	tokWord   tokKind = iota + 1 // unquoted word: keywords, privilege names
	tokIdent                     // `quoted`
	tokString                    // 'quoted' or "quoted"
	tokPunct                     // , . ( ) @ * ; =
)

type token struct {
	kind tokKind
	text string // unquoted value; words as written
	off  int
}

func tokenize(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '`' || c == '\'' || c == '"':
			v, n, ok := unquote(s[i:], c)
			if !ok {
				return nil, &ParseError{Offset: i, Want: "a closing quote"}
			}
			kind := tokString
			if c == '`' {
				kind = tokIdent
			}
			toks = append(toks, token{kind, v, i})
			i += n
		case strings.IndexByte(",.()@*;=", c) >= 0:
			toks = append(toks, token{tokPunct, string(c), i})
			i++
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			toks = append(toks, token{tokWord, s[i:j], i})
			i = j
		default:
			// Anything else (operators in a REQUIRE clause, say) is kept
			// as punctuation; only the grantee's tail may hold it.
			toks = append(toks, token{tokPunct, string(c), i})
			i++
		}
	}
	return toks, nil
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// unquote reads a quoted value at the start of s: a doubled quote stands
// for one, and in strings a backslash escapes the next byte.
func unquote(s string, q byte) (string, int, bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q && i+1 < len(s) && s[i+1] == q:
			b.WriteByte(q)
			i++
		case c == q:
			return b.String(), i + 1, true
		case c == '\\' && q != '`' && i+1 < len(s):
			i++
			b.WriteByte(unescape(s[i]))
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case '0':
		return 0
	}
	return c
}

type parser struct {
	toks []token
	i    int
	end  int
}

func (p *parser) peek() (token, bool) {
	if p.i >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.i], true
}

func (p *parser) offset() int {
	if t, ok := p.peek(); ok {
		return t.off
	}
	return p.end
}

func (p *parser) fail(want string) error { return &ParseError{Offset: p.offset(), Want: want} }

// keyword consumes the word w (any case) if it comes next.
func (p *parser) keyword(w string) bool {
	t, ok := p.peek()
	if ok && t.kind == tokWord && strings.EqualFold(t.text, w) {
		p.i++
		return true
	}
	return false
}

func (p *parser) punct(c string) bool {
	t, ok := p.peek()
	if ok && t.kind == tokPunct && t.text == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) line() (Grant, error) {
	switch {
	case p.keyword("GRANT"):
		if t, ok := p.peek(); ok && (t.kind == tokIdent || t.kind == tokString) {
			return p.roleGrant()
		}
		return p.privilegeGrant(KindPrivileges, "TO")
	case p.keyword("REVOKE"):
		return p.privilegeGrant(KindRevoke, "FROM")
	case p.keyword("SET"):
		if !p.keyword("DEFAULT") || !p.keyword("ROLE") {
			return Grant{}, p.fail("SET DEFAULT ROLE")
		}
		g := Grant{Kind: KindDefaultRole}
		if !p.keyword("NONE") {
			r, err := p.account()
			if err != nil {
				return Grant{}, err
			}
			g.Roles = []Account{r}
		}
		if !p.keyword("FOR") {
			return Grant{}, p.fail("FOR")
		}
		var err error
		g.Grantee, err = p.account()
		return g, err
	}
	return Grant{}, p.fail("GRANT, REVOKE or SET DEFAULT ROLE")
}

func (p *parser) roleGrant() (Grant, error) {
	g := Grant{Kind: KindRole}
	for {
		r, err := p.account()
		if err != nil {
			return Grant{}, err
		}
		g.Roles = append(g.Roles, r)
		if !p.punct(",") {
			break
		}
	}
	if !p.keyword("TO") {
		return Grant{}, p.fail("TO")
	}
	var err error
	if g.Grantee, err = p.account(); err != nil {
		return Grant{}, err
	}
	g.GrantOption = p.tailHas("ADMIN")
	return g, nil
}

func (p *parser) privilegeGrant(kind GrantKind, to string) (Grant, error) {
	g := Grant{Kind: kind}
	for {
		pr, err := p.privilege()
		if err != nil {
			return Grant{}, err
		}
		g.Privileges = append(g.Privileges, pr)
		if !p.punct(",") {
			break
		}
	}
	if !p.keyword("ON") {
		return Grant{}, p.fail("ON")
	}
	if kind == KindPrivileges && len(g.Privileges) == 1 && g.Privileges[0].Name == "PROXY" {
		// GRANT PROXY ON ''@'%' TO …: the object is an account.
		if _, err := p.account(); err != nil {
			return Grant{}, err
		}
		g.Kind = KindProxy
	} else {
		obj, err := p.object()
		if err != nil {
			return Grant{}, err
		}
		g.Object = obj
	}
	if !p.keyword(to) {
		return Grant{}, p.fail(to)
	}
	var err error
	if g.Grantee, err = p.account(); err != nil {
		return Grant{}, err
	}
	g.GrantOption = kind != KindRevoke && p.tailHas("GRANT")
	return g, nil
}

// privilege reads one privilege: words, then an optional column list.
func (p *parser) privilege() (Privilege, error) {
	var words []string
	for {
		t, ok := p.peek()
		if !ok || t.kind != tokWord || (len(words) > 0 && strings.EqualFold(t.text, "ON")) {
			break
		}
		words = append(words, strings.ToUpper(t.text))
		p.i++
	}
	if len(words) == 0 {
		return Privilege{}, p.fail("a privilege")
	}
	pr := Privilege{Name: canonical(strings.Join(words, " "))}
	if p.punct("(") {
		for {
			t, ok := p.peek()
			if !ok || t.kind == tokPunct {
				return Privilege{}, p.fail("a column name")
			}
			pr.Columns = append(pr.Columns, t.text)
			p.i++
			if p.punct(")") {
				break
			}
			if !p.punct(",") {
				return Privilege{}, p.fail(", or )")
			}
		}
	}
	return pr, nil
}

// canonical spells a privilege as this package compares it.
func canonical(name string) string {
	name = strings.Join(strings.Fields(strings.ToUpper(name)), " ")
	if name == "ALL" {
		return "ALL PRIVILEGES"
	}
	return name
}

func (p *parser) object() (Object, error) {
	var o Object
	for _, r := range []string{"PROCEDURE", "FUNCTION", "PACKAGE"} {
		if p.keyword(r) {
			o.Level, o.Routine = LevelRoutine, r
			if r == "PACKAGE" && p.keyword("BODY") {
				o.Routine = "PACKAGE BODY"
			}
			break
		}
	}
	if o.Level == 0 {
		p.keyword("TABLE")
	}
	first, star, err := p.name()
	if err != nil {
		return o, err
	}
	if !p.punct(".") {
		// A bare name is a table in the default database; SHOW GRANTS
		// never prints one, and without a database it cannot be compared.
		return o, p.fail(".")
	}
	second, star2, err := p.name()
	if err != nil {
		return o, err
	}
	switch {
	case o.Level == LevelRoutine:
		if star || star2 {
			return o, p.fail("a routine name")
		}
		o.DB, o.Name = first, second
	case star && star2:
		o.Level = LevelGlobal
	case star:
		return o, p.fail("*.* or a database")
	case star2:
		o.Level, o.DB = LevelDatabase, first
	default:
		o.Level, o.DB, o.Name = LevelTable, first, second
	}
	return o, nil
}

// name reads an identifier or *.
func (p *parser) name() (string, bool, error) {
	if p.punct("*") {
		return "", true, nil
	}
	t, ok := p.peek()
	if !ok || t.kind == tokPunct {
		return "", false, p.fail("a name")
	}
	p.i++
	return t.text, false, nil
}

// account reads user[@host], a role, or PUBLIC.
func (p *parser) account() (Account, error) {
	t, ok := p.peek()
	if !ok || t.kind == tokPunct {
		return Account{}, p.fail("an account")
	}
	p.i++
	if t.kind == tokWord && strings.EqualFold(t.text, "PUBLIC") {
		return Account{User: "PUBLIC", Public: true}, nil
	}
	a := Account{User: t.text}
	if p.punct("@") {
		h, ok := p.peek()
		if !ok || h.kind == tokPunct {
			return Account{}, p.fail("a host")
		}
		p.i++
		a.Host, a.HasHost = h.text, true
	}
	return a, nil
}

// tailHas reports whether the rest of the line holds WITH … word OPTION,
// skipping whatever else it holds (IDENTIFIED BY, REQUIRE, resource
// limits), none of which is kept.
func (p *parser) tailHas(word string) bool {
	with := false
	for ; p.i < len(p.toks); p.i++ {
		t := p.toks[p.i]
		if t.kind != tokWord {
			continue
		}
		switch {
		case strings.EqualFold(t.text, "WITH"):
			with = true
		case with && strings.EqualFold(t.text, word) && p.i+1 < len(p.toks) &&
			p.toks[p.i+1].kind == tokWord && strings.EqualFold(p.toks[p.i+1].text, "OPTION"):
			p.i = len(p.toks)
			return true
		}
	}
	return false
}

// String formats the grant as a statement: the canonical form of the line,
// without anything after the grantee but the grant or admin option.
func (g Grant) String() string {
	var b strings.Builder
	switch g.Kind {
	case KindDefaultRole:
		b.WriteString("SET DEFAULT ROLE ")
		if len(g.Roles) == 0 {
			b.WriteString("NONE")
		} else {
			b.WriteString(g.Roles[0].String())
		}
		b.WriteString(" FOR " + g.Grantee.String())
		return b.String()
	case KindRole:
		b.WriteString("GRANT ")
		for i, r := range g.Roles {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(r.String())
		}
		b.WriteString(" TO " + g.Grantee.String())
		if g.GrantOption {
			b.WriteString(" WITH ADMIN OPTION")
		}
		return b.String()
	case KindRevoke:
		b.WriteString("REVOKE ")
	default:
		b.WriteString("GRANT ")
	}
	for i, pr := range g.Privileges {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pr.Name)
		if len(pr.Columns) > 0 {
			b.WriteString(" (")
			for j, c := range pr.Columns {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(QuoteIdent(c))
			}
			b.WriteString(")")
		}
	}
	if g.Kind == KindProxy {
		// The proxied account is not kept; it does not matter here.
		b.WriteString(" ON ''@'' TO " + g.Grantee.String())
	} else {
		b.WriteString(" ON " + g.Object.String())
		if g.Kind == KindRevoke {
			b.WriteString(" FROM ")
		} else {
			b.WriteString(" TO ")
		}
		b.WriteString(g.Grantee.String())
	}
	if g.GrantOption {
		b.WriteString(" WITH GRANT OPTION")
	}
	return b.String()
}

// ParseAccountName reads an account as a user writes it on a command line:
// 'pitr'@'%', `pitr`@`%`, pitr@% or pitr (host %).
func ParseAccountName(s string) (Account, error) {
	toks, err := tokenize(strings.TrimSpace(s))
	if err != nil {
		return Account{}, fmt.Errorf("account %q: unbalanced quotes", s)
	}
	var user, host []string
	cur := &user
	for _, t := range toks {
		switch {
		case t.kind == tokPunct && t.text == "@" && cur == &user:
			cur = &host
		case t.kind == tokIdent || t.kind == tokString:
			*cur = append(*cur, t.text)
		default:
			// Unquoted parts: host names and addresses (10.0.0.%).
			*cur = append(*cur, t.text)
		}
	}
	a := Account{User: strings.Join(user, ""), Host: strings.Join(host, ""), HasHost: true}
	if cur != &host {
		a.Host = "%"
	}
	if a.User == "" {
		return Account{}, fmt.Errorf("account %q: no user name (write it as 'user'@'host')", s)
	}
	return a, nil
}
