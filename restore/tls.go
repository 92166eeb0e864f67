package restore

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// clientTLS is how the command-line client of the mysqlbinlog replay
// connects: the target's TLS settings, with Preferred already settled by
// the restore's own connection (mysqltls.Settings.Effective), and the
// target's flavor.
type clientTLS struct {
	settings mysqltls.Settings
	flavor   string // mysqld.MariaDB or mysqld.MySQL
}

// clientOptions returns the client's TLS option lines, and the statement
// it must run first when those options cannot make it refuse a server
// without TLS ("" when they can).
func (c clientTLS) clientOptions(ctx context.Context, client string, target *mysql.Config) (lines []string, guard string, err error) {
	family, err := clientFamily(ctx, client)
	if err != nil {
		return nil, "", err
	}
	lines = c.settings.OptionLines(family, target)
	if c.settings.ToolMayFallBack(family, target) {
		guard = plaintextGuard(c.flavor)
	}
	return lines, guard, nil
}

// clientFamily runs the client's --version: MariaDB's and MySQL's clients
// spell their TLS options differently, and either may be called mysql.
func clientFamily(ctx context.Context, client string) (mysqltls.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, client, "--version")
	cmd.Env = childenv.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w: %s", client, err, strings.TrimSpace(string(out)))
	}
	return mysqltls.ClientOf(string(out)), nil
}

// guardMarker is the value the plaintext guard fails with; the client's
// error quotes it.
const guardMarker = "MYSQL_PITR_TLS_REQUIRED_BUT_CONNECTION_NOT_ENCRYPTED"

// plaintextGuard is a statement that fails unless the session it runs in is
// encrypted. MariaDB's client, told to use TLS without checking the host
// name, connects in plaintext to a server that offers no TLS; run first, the
// guard stops it before any of the binlog is sent. Setting sql_mode to a
// value that is not a mode is an error on both flavors.
func plaintextGuard(flavor string) string {
	table := "information_schema.SESSION_STATUS"
	if flavor == mysqld.MySQL {
		table = "performance_schema.session_status"
	}
	return "SET SESSION sql_mode = IF((SELECT VARIABLE_VALUE FROM " + table + " WHERE VARIABLE_NAME = 'Ssl_cipher') = '', '" +
		guardMarker + "', @@SESSION.sql_mode);\n"
}
