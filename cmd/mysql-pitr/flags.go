package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

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
