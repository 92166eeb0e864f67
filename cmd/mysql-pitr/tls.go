package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// tlsFlags are the TLS settings of the connections to a MySQL server: the
// tool's own, the replication stream's, and those of the tools it runs.
type tlsFlags struct {
	mode, ca, cert, key string
}

func (f *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.mode, "mysql-tls", string(mysqltls.DefaultMode), "TLS to the MySQL server: verify-full (TLS required, certificate chain and host name verified), "+
		"verify-ca (required, chain verified against --mysql-ca, host name not checked), skip-verify (required, nothing verified: insecure), "+
		"off (never), preferred (TLS whenever the server offers it, plaintext only when it offers none; the certificate is verified "+
		"as verify-full with --mysql-ca, and without it not verified, which is said once)")
	fs.StringVar(&f.ca, "mysql-ca", "", "PEM file of the CAs that sign the MySQL server's certificate (verify-full: instead of the system's roots; "+
		"preferred: in addition, and the certificate must verify)")
	fs.StringVar(&f.cert, "mysql-cert", "", "PEM client certificate for servers that require one (REQUIRE X509); with --mysql-key")
	fs.StringVar(&f.key, "mysql-key", "", "PEM key of --mysql-cert")
}

// settings checks the flags and returns them as mysqltls settings.
func (f *tlsFlags) settings() (mysqltls.Settings, error) {
	mode, err := mysqltls.ParseMode(f.mode)
	if err != nil {
		return mysqltls.Settings{}, cli.Usage(fmt.Errorf("--mysql-tls: %w", err))
	}
	s := mysqltls.Settings{Mode: mode, CAFile: f.ca, CertFile: f.cert, KeyFile: f.key}
	if err := s.Validate(); err != nil {
		return s, cli.Usage(fmt.Errorf("--mysql-tls %s: %w", mode, err))
	}
	return s, nil
}

// logTLS logs the warnings the TLS settings call for at every start, and
// for Preferred against a server elsewhere, whether it fell back to
// plaintext: a connection is tried for that, and a failure to connect is
// left to the command to report.
func logTLS(ctx context.Context, logger *slog.Logger, s mysqltls.Settings, cfg *mysql.Config, checkFallback bool) {
	for _, w := range s.Warnings(cfg) {
		logger.Warn(w)
	}
	if !checkFallback || cfg.TLS == nil || !cfg.AllowFallbackToPlaintext || mysqltls.Local(cfg) {
		return
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if cipher, err := mysqltls.Cipher(ctx, db); err == nil && cipher == "" {
		logger.Warn(plaintextWarning, "server", cfg.Addr)
	}
}

// plaintextWarning is logged when Preferred found a server without TLS.
const plaintextWarning = "the server offers no TLS: the connection is not encrypted (--mysql-tls preferred); configure TLS on the server, or say --mysql-tls off to mean it"

// unverifiedWarning and unverifiedNote are said once per command run when
// Preferred accepted the server's certificate without verifying it: the
// warning for a server across a network, the note for one on this host's
// loopback.
const (
	unverifiedWarning = unverifiedMessage + ", so an impostor between here and the server could read and change what is sent, " +
		"the login included; " + howToVerify
	unverifiedNote = unverifiedMessage + "; the server is on this host's loopback, where nothing crosses a network; " + howToVerify

	unverifiedMessage = "TLS: the connection to the server is encrypted, but the server's certificate was not verified " +
		"(--mysql-tls preferred without --mysql-ca)"
	howToVerify = "to verify it, give the CA that signed it with --mysql-ca and choose --mysql-tls verify-full, " +
		"or verify-ca for a certificate that names no host (as a server's self-generated one; MySQL keeps its CA as ca.pem in its datadir)"
)

// unverifiedNotice says once that Preferred accepted a certificate without
// verifying it: as a warning for a server across a network, as a note for
// one on this host's loopback, where nothing crosses a network (and a
// server in plaintext is not even mentioned). One is made for each
// command run's server; the hook is called from the drivers' goroutines.
type unverifiedNotice struct {
	once   sync.Once
	logger *slog.Logger
}

func newUnverifiedNotice(logger *slog.Logger) *unverifiedNotice {
	return &unverifiedNotice{logger: logger}
}

// hook returns the mysqltls.Settings.Unverified of the connections to the
// server at cfg.
func (n *unverifiedNotice) hook(cfg *mysql.Config) func(mysqltls.UnverifiedCert) {
	addr, level, msg := cfg.Addr, slog.LevelWarn, unverifiedWarning
	if mysqltls.Local(cfg) {
		level, msg = slog.LevelInfo, unverifiedNote
	}
	return func(u mysqltls.UnverifiedCert) {
		n.once.Do(func() {
			n.logger.Log(context.Background(), level, msg, "server", addr,
				"certificate_subject", u.Cert.Subject.String(), "certificate_issuer", u.Cert.Issuer.String())
		})
	}
}

// explainTLS adds to a command's error what the TLS settings have to do
// with it.
func explainTLS(err error, s mysqltls.Settings, cfg *mysql.Config) error {
	if err == nil || cfg == nil {
		return err
	}
	msg := err.Error()
	switch {
	case errors.Is(err, mysql.ErrNoTLS) || strings.Contains(msg, "does not support TLS"):
		return fmt.Errorf("%w; the server at %s offers no TLS, and --mysql-tls %s never falls back to plaintext: enable TLS on the server "+
			"(ssl_cert, ssl_key), or choose --mysql-tls preferred or off", err, cfg.Addr, s.Mode)
	case strings.Contains(msg, "not valid for the host name"):
		return fmt.Errorf("%w; connect by a name the certificate holds, or use --mysql-tls verify-ca to check the CA only", err)
	case strings.Contains(msg, "TLS: the server's certificate"):
		if s.Mode == mysqltls.Preferred {
			return fmt.Errorf("%w; give the CA that signs the server's certificate with --mysql-ca (with --mysql-ca, --mysql-tls preferred "+
				"verifies the certificate as verify-full does, and never goes without TLS when it fails)", err)
		}
		return fmt.Errorf("%w; give the CA that signs the server's certificate with --mysql-ca", err)
	case s.Mode == mysqltls.Off && cfg.Net != "unix" && strings.Contains(msg, "Access denied"):
		return fmt.Errorf("%w; the connection was not encrypted (--mysql-tls off): a server with require_secure_transport=ON refuses "+
			"unencrypted logins, MariaDB with this very error; use --mysql-tls verify-full", err)
	}
	return err
}
