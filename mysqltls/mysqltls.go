// Package mysqltls turns the TLS settings of a MySQL connection (a mode and
// the CA, certificate and key files) into what each kind of client needs: a
// tls.Config for the Go drivers (go-sql-driver/mysql and go-mysql's
// replication client) and option-file lines for the command-line clients
// and backup tools. Every decision about MySQL TLS is made in this package.
//
// The default mode, Preferred, is meant to work with every server as it
// comes, as the mysql client's own default (ssl-mode=PREFERRED) does: MySQL
// 8.0 and later, and MariaDB 11.4 and later, always offer TLS with a
// certificate they generated for themselves, which names no host and is
// signed by no CA a client could know. So Preferred uses TLS whenever the
// server offers it and, without a CA file, does not verify the
// certificate; the caller is told each time (Settings.Unverified), to say
// once how to verify it. It never goes without TLS to a server that offers
// it, and falls back to plaintext only for a server that offers none.
//
// Preferred does not try to verify without a CA file and carry on when
// verification fails: an impostor presents a certificate that fails, so
// such a check protects against nothing while suggesting it does.
// Verification means something only where a failure stops the connection,
// which needs the user to say what to trust: a CA file makes Preferred
// verify exactly as VerifyFull does (a failure is an error, never a reason
// to go without), and VerifyFull and VerifyCA are unchanged.
//
// MariaDB 11.4's clients verify a self-generated certificate without any
// CA ("zero-configuration SSL"): after the login the server sends a hash of
// the account's password hash, the scramble and the certificate's
// fingerprint, which only the real server can compute. That is not done
// here: the hash arrives in the OK packet of the login, which neither Go
// driver exposes (it would take forks of both), it exists only on MariaDB
// 11.4 and later and only for accounts with a password and a plugin whose
// stored hash the client can derive (mysql_native_password, ed25519,
// parsec), and MySQL, whose default caching_sha2_password has nothing of
// the kind, would still need a CA file. The tools mysql-pitr starts get the
// same choice as its own connections (Effective), so a MariaDB 11.4 client
// is told not to verify where mysql-pitr did not.
//
// Files are read again at each connection, so a renewed CA bundle or client
// certificate is used without a restart; Settings.Config reads them once up
// front so that a bad file fails at start.
package mysqltls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Mode says whether a connection is encrypted and what is verified.
type Mode string

// Modes.
const (
	// VerifyFull requires TLS, verifies the server's certificate chain
	// against the CA file (or the system's roots without one) and checks that
	// the certificate names the host connected to.
	VerifyFull Mode = "verify-full"
	// VerifyCA requires TLS and verifies the chain against the CA file, but
	// not the host name. It needs a CA file: a chain check against the
	// public roots alone accepts any certificate issued to anyone.
	VerifyCA Mode = "verify-ca"
	// SkipVerify requires TLS and verifies nothing: it stops eavesdropping,
	// not an impostor.
	SkipVerify Mode = "skip-verify"
	// Off never uses TLS.
	Off Mode = "off"
	// Preferred uses TLS whenever the server offers it and plaintext only
	// when it offers none. Without a CA file the server's certificate is
	// not verified (Settings.Unverified is called instead); with one it is
	// verified as VerifyFull, against the system's roots plus the CA file,
	// and a certificate that fails is an error, never a reason to fall back
	// to plaintext.
	Preferred Mode = "preferred"
)

// DefaultMode is the mode of Settings with an empty Mode.
const DefaultMode = Preferred

// Modes lists the modes, strictest first.
var Modes = []Mode{VerifyFull, VerifyCA, SkipVerify, Off, Preferred}

// ParseMode reads a mode name.
func ParseMode(s string) (Mode, error) {
	m := Mode(strings.ToLower(strings.TrimSpace(s)))
	if slices.Contains(Modes, m) {
		return m, nil
	}
	names := make([]string, len(Modes))
	for i, m := range Modes {
		names[i] = string(m)
	}
	return "", fmt.Errorf("TLS mode %q: want one of %s", s, strings.Join(names, ", "))
}

// Settings are the TLS settings of the connections to one server.
type Settings struct {
	// Mode is the mode; empty means DefaultMode.
	Mode Mode
	// CAFile holds the PEM certificates of the CAs trusted to sign the
	// server's certificate. With VerifyFull it replaces the system's roots;
	// with Preferred it adds to them, and makes Preferred verify.
	CAFile string
	// CertFile and KeyFile are the client's PEM certificate and key, for
	// servers that authenticate clients by certificate (REQUIRE X509).
	CertFile, KeyFile string
	// Unverified, when set, is called at every TLS connection made with
	// Preferred and no CAFile, whose certificate is accepted unverified:
	// the caller decides how often to say so. It must not block.
	Unverified func(UnverifiedCert)
}

// UnverifiedCert is a server certificate that Preferred accepted without
// verifying it.
type UnverifiedCert struct {
	// Host is the host name or address the server was reached by.
	Host string
	// Cert is the certificate the server presented.
	Cert *x509.Certificate
}

// mode returns the effective mode.
func (s Settings) mode() Mode {
	if s.Mode == "" {
		return DefaultMode
	}
	return s.Mode
}

// Validate checks that the settings make sense together; it does not read
// the files (Config does).
func (s Settings) Validate() error {
	m := s.mode()
	if !slices.Contains(Modes, m) {
		_, err := ParseMode(string(m))
		return err
	}
	switch {
	case (s.CertFile == "") != (s.KeyFile == ""):
		return errors.New("a client certificate and its key go together: give both files or neither")
	case m == VerifyCA && s.CAFile == "":
		return errors.New("TLS mode verify-ca needs a CA file: checking the chain against the public roots alone accepts any certificate issued to anyone")
	case m == Off && (s.CAFile != "" || s.CertFile != ""):
		return errors.New("TLS mode off uses no CA or client certificate: remove them or choose another mode")
	case m == SkipVerify && s.CAFile != "":
		return errors.New("TLS mode skip-verify verifies nothing, so a CA file would be ignored: use verify-ca or verify-full with it")
	}
	return nil
}

// Required reports whether a connection without TLS must fail.
func (s Settings) Required() bool {
	switch s.mode() {
	case VerifyFull, VerifyCA, SkipVerify:
		return true
	}
	return false
}

// Verifies reports whether the server's certificate chain is checked:
// Preferred checks it only with a CA file.
func (s Settings) Verifies() bool {
	switch s.mode() {
	case VerifyFull, VerifyCA:
		return true
	case Preferred:
		return s.CAFile != ""
	}
	return false
}

// Effective returns the settings a separate client (a command-line tool)
// should use once it is known whether this process's own connection to the
// server is encrypted. Preferred becomes Off on a server that does not
// speak TLS; on one that does, VerifyFull with a CA file and SkipVerify
// without, as this process's own connection: the tool neither falls back
// to plaintext where this process did not, nor refuses a certificate this
// process accepted (newer MariaDB clients verify unless told not to). Other
// modes are returned unchanged.
func (s Settings) Effective(encrypted bool) Settings {
	if s.mode() != Preferred {
		return s
	}
	if !encrypted {
		return Settings{Mode: Off}
	}
	if s.CAFile == "" {
		s.Mode = SkipVerify
		return s
	}
	s.Mode = VerifyFull
	return s
}

// Config returns the tls.Config for a connection to host (a name or an IP
// address, checked against the certificate by VerifyFull, and by Preferred
// with a CA file), or nil for Off. It reads the files once to fail early;
// connections read them again, so renewed files are picked up.
func (s Settings) Config(host string) (*tls.Config, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	m := s.mode()
	if m == Off {
		return nil, nil
	}
	if s.CAFile != "" {
		if _, err := readCAs(s.CAFile); err != nil {
			return nil, err
		}
	}
	if s.CertFile != "" {
		if _, err := loadKeyPair(s.CertFile, s.KeyFile); err != nil {
			return nil, err
		}
	}
	// Verification is done here, in VerifyConnection, rather than by
	// crypto/tls: verify-ca needs a chain check without the host name, and
	// doing every mode the same way gives every failure the same clear
	// message. The drivers get no chance to skip it.
	cfg := &tls.Config{InsecureSkipVerify: true}
	if net.ParseIP(host) == nil {
		cfg.ServerName = host // SNI
	}
	if s.CertFile != "" {
		certFile, keyFile := s.CertFile, s.KeyFile
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return loadKeyPair(certFile, keyFile)
		}
	}
	switch m {
	case VerifyFull:
		cfg.VerifyConnection = verifier(s.roots(false), host, s.CAFile)
	case VerifyCA:
		cfg.VerifyConnection = verifier(s.roots(false), "", s.CAFile)
	case Preferred:
		if s.CAFile != "" {
			cfg.VerifyConnection = verifier(s.roots(true), host, s.CAFile)
			break
		}
		cfg.VerifyConnection = unverified(host, s.Unverified)
	}
	return cfg, nil
}

// unverified accepts any certificate and reports it to notify.
func unverified(host string, notify func(UnverifiedCert)) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("TLS: the server sent no certificate")
		}
		if notify != nil {
			notify(UnverifiedCert{Host: host, Cert: cs.PeerCertificates[0]})
		}
		return nil
	}
}

// roots returns a function giving the trusted CAs: the CA file, or the
// system's roots (nil) without one; withSystem adds the system's roots to
// the CA file's.
func (s Settings) roots(withSystem bool) func() (*x509.CertPool, error) {
	caFile := s.CAFile
	return func() (*x509.CertPool, error) {
		if caFile == "" {
			return nil, nil // x509: the system's roots
		}
		cas, err := readCAs(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if withSystem {
			if sys, err := x509.SystemCertPool(); err == nil {
				pool = sys
			}
		}
		for _, c := range cas {
			pool.AddCert(c)
		}
		return pool, nil
	}
}

// VerifyError is a server certificate that failed verification.
type VerifyError struct {
	// Host is the name checked against the certificate; empty when the
	// mode does not check it.
	Host string
	// CAFile is the trusted CA file; empty means the system's roots.
	CAFile string
	// Err is the x509 error.
	Err error
}

func (e *VerifyError) Error() string {
	trusted := "a CA this system trusts"
	if e.CAFile != "" {
		trusted = "the CA in " + e.CAFile
	}
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(e.Err, &ua):
		return fmt.Sprintf("TLS: the server's certificate is not signed by %s (%v)", trusted, e.Err)
	case errors.As(e.Err, &he):
		return fmt.Sprintf("TLS: the server's certificate is not valid for the host name %s it was reached by (%v)", e.Host, e.Err)
	case errors.As(e.Err, &ci):
		return fmt.Sprintf("TLS: the server's certificate is not acceptable (%v)", e.Err)
	}
	return fmt.Sprintf("TLS: the server's certificate failed verification against %s: %v", trusted, e.Err)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// verifier checks the server's chain against roots and, when host is not
// empty, that the certificate names host.
func verifier(roots func() (*x509.CertPool, error), host, caFile string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("TLS: the server sent no certificate")
		}
		pool, err := roots()
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: host})
		if err != nil {
			return &VerifyError{Host: host, CAFile: caFile, Err: err}
		}
		return nil
	}
}

// readCAs reads the certificates of a PEM file.
func readCAs(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TLS CA file: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", path)
	}
	return certs, nil
}

// loadKeyPair loads the client certificate; the error names the files, not
// their contents.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS client certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &kp, nil
}

// Apply sets the TLS of a go-sql-driver configuration: cfg.TLS for the mode
// and the host in cfg.Addr, and the plaintext fallback for Preferred. A unix
// socket gets no TLS whatever the mode: it never leaves the host, and
// servers count it as a secure transport.
func (s Settings) Apply(cfg *mysql.Config) error {
	cfg.TLS, cfg.TLSConfig, cfg.AllowFallbackToPlaintext = nil, "", false
	if err := s.Validate(); err != nil {
		return err
	}
	if cfg.Net == "unix" || s.mode() == Off {
		return nil
	}
	c, err := s.Config(Host(cfg))
	if err != nil {
		return err
	}
	cfg.TLS = c
	if s.mode() == Preferred {
		cfg.AllowFallbackToPlaintext = true
		// The driver drops the TLS config of the configuration a connection
		// uses when it falls back; without a per-connection copy (which a
		// BeforeConnect hook makes it take) one plaintext connection would
		// turn TLS off for every later one.
		if err := cfg.Apply(mysql.BeforeConnect(func(context.Context, *mysql.Config) error { return nil })); err != nil {
			return err
		}
	}
	return nil
}

// Host returns the host part of a TCP address, or the socket path.
func Host(cfg *mysql.Config) string {
	if cfg.Net == "unix" {
		return cfg.Addr
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return cfg.Addr
	}
	return host
}

// Local reports whether the server is reached over a unix socket or this
// host's loopback, where plaintext crosses no network.
func Local(cfg *mysql.Config) bool {
	if cfg.Net == "unix" {
		return true
	}
	return LocalHost(Host(cfg))
}

// LocalHost reports whether host (a name or an IP address) is this host's
// loopback: localhost, 127.0.0.0/8 or ::1.
func LocalHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Warnings returns what a command should log at every start about the
// connection to the server at cfg: nothing for settings that protect it.
// What Preferred does is known only once connected: its fallback to
// plaintext (see Cipher) and its unverified certificate (see
// Settings.Unverified).
func (s Settings) Warnings(cfg *mysql.Config) []string {
	switch m := s.mode(); {
	case cfg.Net == "unix":
		if s.Required() {
			return []string{fmt.Sprintf("TLS mode %s: the server is reached over a unix socket, which TLS does not cover; the connection stays on this host", m)}
		}
	case m == SkipVerify:
		return []string{"TLS mode skip-verify: the connection is encrypted but the server's certificate is not verified, so an impostor can read everything, password included; use verify-full"}
	case m == Off && !Local(cfg):
		return []string{fmt.Sprintf("TLS mode off: the connection to %s is not encrypted; data and credentials cross the network in plaintext", cfg.Addr)}
	}
	return nil
}

// Querier runs a query returning one row; *sql.DB, *sql.Conn and *sql.Tx
// are Queriers.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Cipher returns the TLS cipher of the connection q runs on, or "" when it
// is not encrypted. MySQL and MariaDB both report it as Ssl_cipher.
func Cipher(ctx context.Context, q Querier) (string, error) {
	var name, value string
	if err := q.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &value); err != nil {
		return "", fmt.Errorf("read the connection's TLS cipher: %w", err)
	}
	return value, nil
}
