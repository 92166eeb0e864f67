package mysqltls

import (
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Client is a family of command-line clients and backup tools: the two
// spell their TLS options differently.
type Client int

// Client families.
const (
	// MariaDBClient: mariadb, mariadb-backup (ssl, ssl-ca,
	// ssl-verify-server-cert, skip-ssl).
	MariaDBClient Client = iota
	// MySQLClient: mysql 5.7.11 and later, xtrabackup 8 (ssl-mode).
	MySQLClient
)

// ClientOf tells a tool's family from its --version output.
func ClientOf(version string) Client {
	if strings.Contains(strings.ToLower(version), "mariadb") {
		return MariaDBClient
	}
	return MySQLClient
}

// OptionLines returns the lines of an option file's [client] group that
// give a tool of family c, connecting to the server at cfg, these settings.
// Resolve Preferred with Effective first: a tool's own "preferred" would
// fall back to plaintext after a failed verification, or (MariaDB 11.4 and
// later) verify where mysql-pitr did not; OptionLines treats Preferred as
// Effective(true) does. A unix socket gets no TLS, as in Apply.
//
// MariaDB's tools refuse a server without TLS only when they verify the
// host name: with VerifyCA and SkipVerify they fall back to plaintext
// silently (ToolMayFallBack), so the caller must check the session.
func (s Settings) OptionLines(c Client, cfg *mysql.Config) []string {
	if s.mode() == Preferred {
		s = s.Effective(true)
	}
	m := s.mode()
	if cfg.Net == "unix" {
		m = Off
	}
	var lines []string
	add := func(name, value string) {
		if value == "" {
			lines = append(lines, name)
			return
		}
		lines = append(lines, name+"="+optionValue(value))
	}
	switch c {
	case MySQLClient:
		switch m {
		case Off:
			add("ssl-mode", "DISABLED")
			return lines
		case SkipVerify:
			// REQUIRED with a CA would verify it: none is given.
			add("ssl-mode", "REQUIRED")
		case VerifyCA:
			add("ssl-mode", "VERIFY_CA")
		case VerifyFull:
			add("ssl-mode", "VERIFY_IDENTITY")
		}
	default:
		if m == Off {
			add("skip-ssl", "")
			return lines
		}
		add("ssl", "")
		if m == VerifyFull {
			add("ssl-verify-server-cert", "")
		} else {
			// Newer MariaDB clients verify by default.
			add("skip-ssl-verify-server-cert", "")
		}
	}
	if s.CAFile != "" && m != SkipVerify {
		add("ssl-ca", s.CAFile)
	}
	if s.CertFile != "" {
		add("ssl-cert", s.CertFile)
		add("ssl-key", s.KeyFile)
	}
	return lines
}

// ToolMayFallBack reports whether a tool of family c given OptionLines
// would still connect in plaintext to a server that offers no TLS although
// the settings require TLS.
func (s Settings) ToolMayFallBack(c Client, cfg *mysql.Config) bool {
	if cfg.Net == "unix" || !s.Required() {
		return false
	}
	return c == MariaDBClient && s.mode() != VerifyFull
}

// optionValue quotes a value for an option file: the client library
// unquotes it and undoes backslash escapes.
func optionValue(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}
