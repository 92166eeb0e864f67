package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/childout"
)

// TestUnknownFlag gives every command a flag it does not have: one line
// names the flag and where the usage is, and -h still prints the usage.
func TestUnknownFlag(t *testing.T) {
	for _, command := range [][]string{{"agent"}, {"snapshot"}, {"list"}, {"prune"}, {"restore"}, {"verify"}, {"drill"},
		{"binlog", "fetch"}, {"grants"}} {
		name := strings.Join(command, " ")
		t.Run(name, func(t *testing.T) {
			_, stderr, code := runCLI(t, t.Context(), append(command, "--no-such-flag")...)
			want := "mysql-pitr: " + name + ": flag provided but not defined: -no-such-flag (see 'mysql-pitr " + name + " --help')\n"
			if code != 2 || stderr != want {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, want)
			}
			_, stderr, code = runCLI(t, t.Context(), append(command, "--help")...)
			if code != 0 || !strings.HasPrefix(stderr, "Usage: mysql-pitr "+name+" [flags]\n") || !strings.Contains(stderr, "\n  -") {
				t.Errorf("--help: exit %d, stderr %q; want exit 0 and the flags", code, childout.Last(stderr, 3, "\n"))
			}
		})
	}
	t.Run("before the command", func(t *testing.T) {
		_, stderr, code := runCLI(t, t.Context(), "--no-such-flag")
		if want := "mysql-pitr: unknown command \"--no-such-flag\" (see 'mysql-pitr --help')\n"; code != 2 || stderr != want {
			t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, want)
		}
	})
}

// TestDSNPassword checks where a DSN may hold the password: not on the
// command line, where every user of the host can read it, but in the
// DSN's environment variable, and then as the only password given.
func TestDSNPassword(t *testing.T) {
	const secret = "s3cret-in-dsn"
	passwordFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(passwordFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		target   bool   // the flags of restore --target-dsn
		password string // the password the connection gets; "" when refused
		refusal  string
	}{
		{name: "--dsn with a password", args: []string{"--dsn", "pitr:" + secret + "@tcp(db:3306)/"},
			refusal: "--dsn holds a password, which every user of this host can read in the process list: leave it out and give it with --password-file or MYSQL_PITR_PASSWORD (or set the whole DSN in MYSQL_PITR_DSN)"},
		{name: "--target-dsn with a password", target: true, args: []string{"--target-dsn", "restorer:" + secret + "@unix(/run/mysqld.sock)/"},
			refusal: "--target-dsn holds a password, which every user of this host can read in the process list: leave it out and give it with --target-password-file or MYSQL_PITR_TARGET_PASSWORD (or set the whole DSN in MYSQL_PITR_TARGET_DSN)"},
		{name: "MYSQL_PITR_DSN with a password", env: map[string]string{"MYSQL_PITR_DSN": "pitr:" + secret + "@tcp(db:3306)/"}, password: secret},
		{name: "MYSQL_PITR_TARGET_DSN with a password", target: true, env: map[string]string{"MYSQL_PITR_TARGET_DSN": "restorer:" + secret + "@tcp(db:3306)/"},
			password: secret},
		{name: "MYSQL_PITR_DSN with a password and --password-file", args: []string{"--password-file", passwordFile},
			env:     map[string]string{"MYSQL_PITR_DSN": "pitr:" + secret + "@tcp(db:3306)/"},
			refusal: "the DSN holds a password and a password file or MYSQL_PITR_PASSWORD gives one too: give it once"},
		{name: "MYSQL_PITR_DSN with a password and MYSQL_PITR_PASSWORD",
			env:     map[string]string{"MYSQL_PITR_DSN": "pitr:" + secret + "@tcp(db:3306)/", "MYSQL_PITR_PASSWORD": "other"},
			refusal: "the DSN holds a password and a password file or MYSQL_PITR_PASSWORD gives one too: give it once"},
		{name: "--dsn without a password, --password-file", args: []string{"--dsn", "pitr@tcp(db:3306)/", "--password-file", passwordFile},
			password: "from-file"},
		{name: "--dsn without a password, MYSQL_PITR_PASSWORD", args: []string{"--dsn", "pitr@tcp(db:3306)/"},
			env: map[string]string{"MYSQL_PITR_PASSWORD": secret}, password: secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var m mysqlFlags
			if tc.target {
				m.registerTarget(fs)
			} else {
				m.register(fs)
			}
			err := parseFlags(fs, tc.args)
			if err == nil {
				var cfg *mysql.Config
				if cfg, err = m.config(slog.New(slog.DiscardHandler)); err == nil && cfg.Passwd != tc.password {
					t.Errorf("password %q, want %q", cfg.Passwd, tc.password)
				}
			}
			switch {
			case tc.refusal == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refusal != "" && (err == nil || err.Error() != tc.refusal):
				t.Errorf("error %v, want %q", err, tc.refusal)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestLogFlags: every command takes --log-level and --log-format, and
// refuses a level it does not know before it touches a server or the
// archive.
func TestLogFlags(t *testing.T) {
	storage := "file://" + t.TempDir()
	for _, command := range [][]string{
		{"agent", "--dsn", "u@tcp(127.0.0.1:1)/", "--storage", storage},
		{"snapshot", "--dsn", "u@tcp(127.0.0.1:1)/", "--storage", storage},
		{"list", "--storage", storage},
		{"prune", "--storage", storage, "--keep-snapshots", "1"},
		{"restore", "--storage", storage, "--to", "latest", "--dry-run"},
		{"verify", "--storage", storage},
		{"drill", "--storage", storage},
		{"binlog", "fetch", "--storage", storage, "--out", t.TempDir()},
		{"status", "--url", "http://127.0.0.1:1"},
		{"grants"},
	} {
		t.Run(strings.Join(command[:1], " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, t.Context(), append(command, "--log-format", "text", "--log-level", "loud")...)
			if want := `--log-level: "loud" is not one of debug, info, warn, error`; code != 2 || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, want)
			}
		})
	}
}
