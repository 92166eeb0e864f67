package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/bytesize"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// envPrefix: every flag --some-flag can also be set as MYSQL_PITR_SOME_FLAG.
const envPrefix = "MYSQL_PITR_"

// envName returns the environment variable that sets a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from its MYSQL_PITR_* environment variable.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, envName(f.Name))
	})
	// The flag package prints a bad flag's error and then every flag's
	// usage: the error is said once, in one line, by the caller, and the
	// usage is printed when asked for.
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(out, "Usage: mysql-pitr %s [flags]\n", fs.Name())
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usageError{fmt.Errorf("%s: %w (see 'mysql-pitr %s --help')", fs.Name(), err, fs.Name())}
	}
	var argvErr error
	fs.Visit(func(f *flag.Flag) {
		if d, ok := f.Value.(dsnFlag); ok && argvErr == nil {
			argvErr = d.checkArgv(f.Name)
		}
	})
	if argvErr != nil {
		return argvErr
	}
	if fs.NArg() > 0 {
		// The argument itself is not quoted: a password given by mistake
		// would reach the log.
		return usageError{fmt.Errorf("unexpected argument after the flags (%d of them, %d characters in the first); every value goes with a --flag", fs.NArg(), len(fs.Arg(0)))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = usageError{fmt.Errorf("%s: %w", envName(f.Name), serr)}
			}
		}
	})
	return err
}

// usageError marks bad input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

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

// logFlags configure logging.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "auto", "log format: text, json, or auto (text on a terminal, JSON otherwise)")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", l.level)}
	}
	opts := &slog.HandlerOptions{Level: level}
	format := l.format
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format: %q is not one of text, json, auto", l.format)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
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

// checkArgv refuses a DSN given as the named flag that holds a password.
// The DSN itself is never shown.
func (d dsnFlag) checkArgv(name string) error {
	cfg, err := mysql.ParseDSN(*d.dsn)
	if err != nil || cfg.Passwd == "" {
		return nil // an invalid DSN is reported as such later
	}
	return usageError{fmt.Errorf("--%s holds a password, which every user of this host can read in the process list: "+
		"leave it out and give it with %s or %s (or set the whole DSN in %s)", name, d.passwordFlag, d.passwordEnv, envName(name))}
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
		return nil, usageError{fmt.Errorf("--dsn is required")}
	}
	cfg, err := mysql.ParseDSN(m.dsn)
	if err != nil {
		return nil, usageError{fmt.Errorf("--dsn is not a valid DSN (expected user@tcp(host:port)/): %v", err)}
	}
	if cfg.Passwd != "" && (m.passwordFile != "" || os.Getenv(passwordEnv) != "") {
		return nil, usageError{fmt.Errorf("the DSN holds a password and a password file or %s gives one too: give it once", passwordEnv)}
	}
	if cfg.Passwd == "" {
		switch {
		case m.passwordFile != "":
			b, err := os.ReadFile(m.passwordFile)
			if err != nil {
				return nil, usageError{fmt.Errorf("--password-file: %w", err)}
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
		return programs.Finder{}, usageError{fmt.Errorf("--server-bindir %s: %w", b.dir, err)}
	}
	abs, err := filepath.Abs(b.dir)
	if err != nil {
		return programs.Finder{}, usageError{fmt.Errorf("--server-bindir %s: %w", b.dir, err)}
	}
	return programs.Finder{Dir: abs}, nil
}
