package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// mysqlFlags locate a server and its credentials: the server to archive
// (--dsn) or a restore's target (--target-dsn).
type mysqlFlags struct {
	dsn          string
	passwordFile string
	tls          tlsFlags
	// passwordEnv is the environment variable the password may come from.
	passwordEnv string
}

// register adds --dsn, --password-file and the TLS flags to fs.
func (m *mysqlFlags) register(fs *flag.FlagSet) {
	m.passwordEnv = "MYSQL_PITR_PASSWORD"
	fs.Var(dsnFlag{&m.dsn, "--password-file", m.passwordEnv}, "dsn", "server to archive, as a Go MySQL DSN: user@tcp(host:3306)/ or user@unix(/run/mysqld/mysqld.sock)/; "+
		"without the password (refused here), which comes from --password-file or MYSQL_PITR_PASSWORD")
	fs.StringVar(&m.passwordFile, "password-file", "", "file holding the MySQL password (first line)")
	m.tls.register(fs)
}

// registerTarget adds restore's --target-dsn, --target-password-file and
// the TLS flags to fs.
func (m *mysqlFlags) registerTarget(fs *flag.FlagSet) {
	m.passwordEnv = "MYSQL_PITR_TARGET_PASSWORD"
	fs.Var(dsnFlag{&m.dsn, "--target-password-file", m.passwordEnv}, "target-dsn",
		"restore into this running, empty server instead of a datadir (logical snapshots); password from --target-password-file or MYSQL_PITR_TARGET_PASSWORD")
	fs.StringVar(&m.passwordFile, "target-password-file", "", "file holding the target server's password")
	m.tls.register(fs)
}

// server is a MySQL server's connection settings, built by
// mysqlFlags.server.
type server struct {
	cfg *mysql.Config
	tls mysqltls.Settings
}

// server builds the connection settings: the DSN, the password from its
// file or environment variable, and the TLS settings, whose warnings are
// logged; with checkFallback a connection is tried to see whether
// preferred went without TLS. What it has built is returned with an error
// too, for explain.
func (m *mysqlFlags) server(ctx context.Context, logger *slog.Logger, checkFallback bool) (s server, err error) {
	if s.cfg, err = m.config(logger); err != nil {
		return s, err
	}
	s.tls, _ = m.tls.settings() // checked by config
	logTLS(ctx, logger, s.tls, s.cfg, checkFallback)
	return s, nil
}

// explain adds to a command's error what the TLS settings have to do with
// it.
func (s server) explain(err error) error { return explainTLS(err, s.tls, s.cfg) }

// config parses the DSN and fills the password from the file or the
// environment variable; the notice that preferred accepted a certificate
// unverified goes to logger. Errors never contain the DSN, which may hold a
// password.
func (m *mysqlFlags) config(logger *slog.Logger) (*mysql.Config, error) {
	return m.configAt(logger, "")
}

// configAt is config for the server at addr (host:port) instead of the
// DSN's, with the DSN's account, password and TLS settings.
func (m *mysqlFlags) configAt(logger *slog.Logger, addr string) (*mysql.Config, error) {
	if m.dsn == "" {
		return nil, cli.Usage(fmt.Errorf("--dsn is required"))
	}
	cfg, err := mysql.ParseDSN(m.dsn)
	if err != nil {
		return nil, cli.Usage(fmt.Errorf("--dsn is not a valid DSN (expected user@tcp(host:port)/): %v", err))
	}
	if cfg.Passwd != "" && (m.passwordFile != "" || os.Getenv(m.passwordEnv) != "") {
		return nil, cli.Usage(fmt.Errorf("the DSN holds a password and a password file or %s gives one too: give it once", m.passwordEnv))
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
			cfg.Passwd = os.Getenv(m.passwordEnv)
		}
	}
	if cfg.Net == "" {
		cfg.Net = "tcp"
	}
	if addr != "" {
		cfg.Net, cfg.Addr = "tcp", addr
	}
	if err := m.applyTLS(cfg, logger); err != nil {
		return nil, err
	}
	return cfg, nil
}

// applyTLS gives cfg the TLS settings; a DSN with its own tls parameter is
// refused, so that there is one place to say it.
func (m *mysqlFlags) applyTLS(cfg *mysql.Config, logger *slog.Logger) error {
	if cfg.TLSConfig != "" {
		return cli.Usage(errors.New("the DSN's tls parameter is not used: set TLS with --mysql-tls (and --mysql-ca, --mysql-cert, --mysql-key)"))
	}
	s, err := m.tls.settings()
	if err != nil {
		return err
	}
	s.Unverified = newUnverifiedNotice(logger).hook(cfg)
	if err := s.Apply(cfg); err != nil {
		return cli.Usage(err)
	}
	return nil
}
