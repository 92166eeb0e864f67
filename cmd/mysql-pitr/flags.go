package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/bytesize"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// program is the name errors and usage give this command.
const program = "mysql-pitr"

// parseFlags parses args for the subcommand fs (cli.Parse).
func parseFlags(fs *flag.FlagSet, args []string) error { return cli.Parse(program, fs, args) }

// sizeFlag is a byte size such as 512MiB, 1GB or 1048576.
type sizeFlag int64

func (s *sizeFlag) String() string { return bytesize.Format(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// dsnFlag is a DSN flag's value. On the command line a DSN must not hold a
// password: any user of the host can read a process's arguments. In the
// flag's environment variable, which only the process's user can read, it
// may.
type dsnFlag struct {
	dsn *string
	// passwordFlag and passwordEnv are where the password goes instead.
	passwordFlag, passwordEnv string
}

func (d dsnFlag) String() string {
	if d.dsn == nil {
		return ""
	}
	return *d.dsn
}

func (d dsnFlag) Set(v string) error {
	*d.dsn = v
	return nil
}

// CheckArgv refuses a DSN given as the named flag that holds a password.
// The DSN itself is never shown.
func (d dsnFlag) CheckArgv(name string) error {
	cfg, err := mysql.ParseDSN(*d.dsn)
	if err != nil || cfg.Passwd == "" {
		return nil // an invalid DSN is reported as such later
	}
	return cli.Usage(fmt.Errorf("--%s holds a password, which every user of this host can read in the process list: "+
		"leave it out and give it with %s or %s (or set the whole DSN in %s)", name, d.passwordFlag, d.passwordEnv, cli.EnvName(name)))
}

// mysqlFlags locate the server and its credentials.
type mysqlFlags struct {
	dsn          string
	passwordFile string
	tls          tlsFlags
}

func (m *mysqlFlags) register(fs *flag.FlagSet) {
	fs.Var(dsnFlag{&m.dsn, "--password-file", "MYSQL_PITR_PASSWORD"}, "dsn", "server to archive, as a Go MySQL DSN: user@tcp(host:3306)/ or user@unix(/run/mysqld/mysqld.sock)/; "+
		"without the password (refused here), which comes from --password-file or MYSQL_PITR_PASSWORD")
	fs.StringVar(&m.passwordFile, "password-file", "", "file holding the MySQL password (first line)")
	m.tls.register(fs)
}

// config parses the DSN and fills the password from the file or
// MYSQL_PITR_PASSWORD. Errors never contain the DSN, which may hold a password.
func (m *mysqlFlags) config() (*mysql.Config, error) {
	return m.configWithEnv("MYSQL_PITR_PASSWORD")
}

// configWithEnv is config with the password's environment variable named.
func (m *mysqlFlags) configWithEnv(passwordEnv string) (*mysql.Config, error) {
	if m.dsn == "" {
		return nil, cli.Usage(fmt.Errorf("--dsn is required"))
	}
	cfg, err := mysql.ParseDSN(m.dsn)
	if err != nil {
		return nil, cli.Usage(fmt.Errorf("--dsn is not a valid DSN (expected user@tcp(host:port)/): %v", err))
	}
	if cfg.Passwd != "" && (m.passwordFile != "" || os.Getenv(passwordEnv) != "") {
		return nil, cli.Usage(fmt.Errorf("the DSN holds a password and a password file or %s gives one too: give it once", passwordEnv))
	}
	if cfg.Passwd == "" {
		switch {
		case m.passwordFile != "":
			b, err := os.ReadFile(m.passwordFile)
			if err != nil {
				return nil, cli.Usage(fmt.Errorf("--password-file: %w", err))
			}
			cfg.Passwd = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
		default:
			cfg.Passwd = os.Getenv(passwordEnv)
		}
	}
	if cfg.Net == "" {
		cfg.Net = "tcp"
	}
	if err := m.applyTLS(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// binDirFlag is --server-bindir: the directory of the server release's
// programs, which every program mysql-pitr runs is taken from.
type binDirFlag struct{ dir string }

func (b *binDirFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&b.dir, "server-bindir", "", "directory of the server release's programs, the only place they are taken from "+
		"(mysqld or mariadbd, mysqlbinlog or mariadb-binlog, mysql or mariadb, mariadb-install-db, mariadb-backup, mbstream); "+
		"default: PATH, then /usr/sbin, /usr/local/sbin, /usr/local/mysql/bin, passing over programs of the other family")
}

// finder returns the program finder, refusing a --server-bindir that is
// not a directory.
func (b *binDirFlag) finder() (programs.Finder, error) {
	if b.dir == "" {
		return programs.Finder{}, nil
	}
	fi, err := os.Stat(b.dir)
	if err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return programs.Finder{}, cli.Usage(fmt.Errorf("--server-bindir %s: %w", b.dir, err))
	}
	abs, err := filepath.Abs(b.dir)
	if err != nil {
		return programs.Finder{}, cli.Usage(fmt.Errorf("--server-bindir %s: %w", b.dir, err))
	}
	return programs.Finder{Dir: abs}, nil
}
