// Package childenv builds the environment of the programs mysql-pitr runs
// (mariadb-backup, mbstream, mariadb-install-db, mariadbd, mariadb-binlog,
// mariadb): its own environment without the variables that may carry
// secrets. A user may hand mysql-pitr its MySQL password, a DSN holding
// one, or S3 keys through the environment; a child never needs them (the
// password reaches a child through a 0600 option file), and a child's
// environment can be read by anyone who can read /proc/PID/environ or a
// core dump, and is inherited by whatever it runs in turn.
package childenv

import (
	"os"
	"strings"
)

// Environ returns this process's environment without the variables that
// Secret reports.
func Environ() []string { return Filter(os.Environ()) }

// Filter returns env (KEY=value entries) without the variables that Secret
// reports, in their order.
func Filter(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !Secret(k) {
			out = append(out, kv)
		}
	}
	return out
}

// Secret reports whether a variable is kept from children: MYSQL_PWD (the
// client tools would use it as their password), every MYSQL_PITR_* variable
// (each flag can be set through one, --dsn and --target-dsn may hold a
// password, and MYSQL_PITR_PASSWORD and MYSQL_PITR_TARGET_PASSWORD are one)
// and every AWS_* variable (the S3 credential chain: keys, session token,
// web identity).
func Secret(key string) bool {
	return key == "MYSQL_PWD" || strings.HasPrefix(key, "MYSQL_PITR_") || strings.HasPrefix(key, "AWS_")
}
