package mysqltls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestParseMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Mode
		ok   bool
	}{
		{"verify-full", VerifyFull, true},
		{"VERIFY-CA", VerifyCA, true},
		{" skip-verify ", SkipVerify, true},
		{"off", Off, true},
		{"preferred", Preferred, true},
		{"required", "", false},
		{"", "", false},
		{"true", "", false},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMode(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseMode(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		s    Settings
		want string // part of the error; "" for none
	}{
		{"default", Settings{}, ""},
		{"verify-full with system roots", Settings{Mode: VerifyFull}, ""},
		{"verify-full with CA and client cert", Settings{Mode: VerifyFull, CAFile: "ca", CertFile: "c", KeyFile: "k"}, ""},
		{"verify-ca without CA", Settings{Mode: VerifyCA}, "needs a CA file"},
		{"verify-ca with CA", Settings{Mode: VerifyCA, CAFile: "ca"}, ""},
		{"cert without key", Settings{Mode: VerifyFull, CertFile: "c"}, "give both"},
		{"key without cert", Settings{Mode: VerifyFull, KeyFile: "k"}, "give both"},
		{"off with CA", Settings{Mode: Off, CAFile: "ca"}, "off uses no CA"},
		{"skip-verify with CA", Settings{Mode: SkipVerify, CAFile: "ca"}, "would be ignored"},
		{"skip-verify with client cert", Settings{Mode: SkipVerify, CertFile: "c", KeyFile: "k"}, ""},
		{"unknown mode", Settings{Mode: "maybe"}, "want one of"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v; want %q", err, tt.want)
			}
		})
	}
}

// tlsServer accepts TLS connections with cert until the test ends, asking
// for a client certificate signed by clientCA when it is set.
func tlsServer(t *testing.T, certFile, keyFile string, clientCA *x509.CertPool) string {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}}
	if clientCA != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCA, tls.RequireAndVerifyClientCert
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte("ok"))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// handshake connects to addr with the settings' config for host, as the
// drivers do, and returns the handshake's error.
func handshake(t *testing.T, s Settings, addr, host string) error {
	t.Helper()
	cfg, err := s.Config(host)
	if err != nil {
		t.Fatalf("Config: %v", err)
	}
	if cfg == nil {
		t.Fatal("Config returned no TLS config")
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 2)
	_, err = c.Read(buf) // TLS 1.3: a refused client certificate shows here
	return err
}

// TestModesAgainstTLSServers checks what each mode accepts, with real
// handshakes against servers holding certificates from a private CA.
func TestModesAgainstTLSServers(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	wrongCA := testbed.NewCA(t, "another CA")
	serve := func(cert, key string) string { return tlsServer(t, cert, key, nil) }
	good := serve(ca.ServerCert(t, "localhost", "127.0.0.1"))
	otherName := serve(ca.ServerCert(t, "db.other.example"))
	strange := serve(wrongCA.ServerCert(t, "localhost", "127.0.0.1"))

	type want int
	const (
		ok want = iota
		unknownCA
		wrongHost
	)
	for _, tt := range []struct {
		name   string
		s      Settings
		server string
		host   string
		want   want
	}{
		{"verify-full right CA by IP", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, good, "127.0.0.1", ok},
		{"verify-full right CA by name", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, good, "localhost", ok},
		{"verify-full wrong CA", Settings{Mode: VerifyFull, CAFile: wrongCA.CertFile}, good, "127.0.0.1", unknownCA},
		{"verify-full system roots only", Settings{Mode: VerifyFull}, good, "127.0.0.1", unknownCA},
		{"verify-full wrong host name", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, otherName, "127.0.0.1", wrongHost},
		{"verify-full certificate from another CA", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, strange, "127.0.0.1", unknownCA},
		{"verify-ca wrong host name", Settings{Mode: VerifyCA, CAFile: ca.CertFile}, otherName, "127.0.0.1", ok},
		{"verify-ca wrong CA", Settings{Mode: VerifyCA, CAFile: wrongCA.CertFile}, otherName, "127.0.0.1", unknownCA},
		{"skip-verify anything", Settings{Mode: SkipVerify}, strange, "127.0.0.1", ok},
		{"preferred right CA", Settings{Mode: Preferred, CAFile: ca.CertFile}, good, "127.0.0.1", ok},
		{"preferred wrong CA", Settings{Mode: Preferred, CAFile: wrongCA.CertFile}, good, "127.0.0.1", unknownCA},
		{"preferred without CA does not verify", Settings{}, good, "127.0.0.1", ok},
		{"preferred without CA, another CA's certificate", Settings{}, strange, "127.0.0.1", ok},
		{"preferred without CA, certificate for another host", Settings{}, otherName, "127.0.0.1", ok},
		{"preferred wrong host name", Settings{Mode: Preferred, CAFile: ca.CertFile}, otherName, "127.0.0.1", wrongHost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, tt.s, tt.server, tt.host)
			var ve *VerifyError
			var ua x509.UnknownAuthorityError
			var he x509.HostnameError
			switch tt.want {
			case ok:
				if err != nil {
					t.Fatalf("handshake: %v; want success", err)
				}
			case unknownCA:
				if !errors.As(err, &ve) || !errors.As(err, &ua) || !strings.Contains(err.Error(), "not signed by") {
					t.Fatalf("handshake: %v; want an unknown-authority VerifyError", err)
				}
			case wrongHost:
				if !errors.As(err, &ve) || !errors.As(err, &he) || !strings.Contains(err.Error(), "not valid for the host name 127.0.0.1") {
					t.Fatalf("handshake: %v; want a host-name VerifyError", err)
				}
			}
		})
	}
}

// TestPreferredReportsUnverified: Preferred without a CA file reports
// every certificate it accepts unverified, with the host it was reached
// by; with a CA file, and in the other modes, it reports none.
func TestPreferredReportsUnverified(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	cert, key := ca.ServerCert(t, "127.0.0.1")
	srv := tlsServer(t, cert, key, nil)
	for _, tt := range []struct {
		name string
		s    Settings
		want int
	}{
		{"preferred without CA", Settings{}, 2},
		{"preferred with CA", Settings{Mode: Preferred, CAFile: ca.CertFile}, 0},
		{"verify-full", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, 0},
		{"skip-verify", Settings{Mode: SkipVerify}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []UnverifiedCert
			tt.s.Unverified = func(u UnverifiedCert) { got = append(got, u) }
			for range 2 {
				if err := handshake(t, tt.s, srv, "127.0.0.1"); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != tt.want {
				t.Fatalf("reported %d times, want %d", len(got), tt.want)
			}
			for _, u := range got {
				if u.Host != "127.0.0.1" || u.Cert == nil || u.Cert.Issuer.CommonName != "test CA" {
					t.Fatalf("reported %+v", u)
				}
			}
		})
	}
}

func TestClientCertificate(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	pool := x509.NewCertPool()
	b, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	cert, key := ca.ServerCert(t, "127.0.0.1")
	srv := tlsServer(t, cert, key, pool)
	ccert, ckey := ca.ClientCert(t, "pitr")
	if err := handshake(t, Settings{Mode: VerifyFull, CAFile: ca.CertFile, CertFile: ccert, KeyFile: ckey}, srv, "127.0.0.1"); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if err := handshake(t, Settings{Mode: VerifyFull, CAFile: ca.CertFile}, srv, "127.0.0.1"); err == nil {
		t.Fatal("without a client certificate the server accepted the connection")
	}
}

// TestRenewedCAIsReadAtConnect: a CA file replaced while running (a
// rotated bundle) is used by the next connection without a restart.
func TestRenewedCAIsReadAtConnect(t *testing.T) {
	oldCA := testbed.NewCA(t, "old CA")
	newCA := testbed.NewCA(t, "new CA")
	cert, key := newCA.ServerCert(t, "127.0.0.1")
	srv := tlsServer(t, cert, key, nil)
	bundle := t.TempDir() + "/ca.pem"
	copyFile(t, oldCA.CertFile, bundle)
	s := Settings{Mode: VerifyFull, CAFile: bundle}
	cfg, err := s.Config("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dial := func() error {
		c, err := tls.Dial("tcp", srv, cfg.Clone())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err == nil {
		t.Fatal("a server signed by the new CA was accepted with the old bundle")
	}
	copyFile(t, newCA.CertFile, bundle)
	if err := dial(); err != nil {
		t.Fatalf("after the bundle was renewed: %v", err)
	}
}

func TestConfigFailsEarlyOnBadFiles(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	cert, key := ca.ClientCert(t, "pitr")
	notPEM := t.TempDir() + "/not.pem"
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	for _, tt := range []struct {
		name string
		s    Settings
		want string
	}{
		{"missing CA file", Settings{Mode: VerifyFull, CAFile: "/nonexistent/ca.pem"}, "no such file"},
		{"CA file without certificates", Settings{Mode: VerifyFull, CAFile: notPEM}, "holds no PEM certificate"},
		{"key that does not match", Settings{Mode: VerifyFull, CertFile: cert, KeyFile: notPEM}, "client certificate"},
		{"client cert and key swapped", Settings{Mode: VerifyFull, CertFile: key, KeyFile: cert}, "client certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.s.Config("127.0.0.1")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Config: %v; want an error mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("the error quotes the key: %v", err)
			}
		})
	}
}

func TestApply(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	tcp := func(addr string) *mysql.Config {
		c := mysql.NewConfig()
		c.Net, c.Addr = "tcp", addr
		return c
	}
	sock := mysql.NewConfig()
	sock.Net, sock.Addr = "unix", "/run/mysqld/mysqld.sock"
	for _, tt := range []struct {
		name       string
		s          Settings
		cfg        *mysql.Config
		wantTLS    bool
		wantFall   bool
		serverName string
	}{
		{"preferred falls back", Settings{}, tcp("db.example:3306"), true, true, "db.example"},
		{"verify-full never falls back", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, tcp("db.example:3306"), true, false, "db.example"},
		{"verify-ca never falls back", Settings{Mode: VerifyCA, CAFile: ca.CertFile}, tcp("10.0.0.5:3306"), true, false, ""},
		{"skip-verify never falls back", Settings{Mode: SkipVerify}, tcp("10.0.0.5:3306"), true, false, ""},
		{"off", Settings{Mode: Off}, tcp("db.example:3306"), false, false, ""},
		{"unix socket", Settings{Mode: VerifyFull, CAFile: ca.CertFile}, sock, false, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg.Clone()
			cfg.TLSConfig = "skip-verify" // a DSN's own tls= is replaced
			if err := tt.s.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			if (cfg.TLS != nil) != tt.wantTLS || cfg.AllowFallbackToPlaintext != tt.wantFall || cfg.TLSConfig != "" {
				t.Fatalf("TLS set %v, fallback %v, TLSConfig %q; want %v, %v, \"\"", cfg.TLS != nil, cfg.AllowFallbackToPlaintext, cfg.TLSConfig, tt.wantTLS, tt.wantFall)
			}
			if cfg.TLS != nil && cfg.TLS.ServerName != tt.serverName {
				t.Fatalf("ServerName %q, want %q", cfg.TLS.ServerName, tt.serverName)
			}
			if tt.s.Verifies() && cfg.TLS != nil && cfg.TLS.VerifyConnection == nil {
				t.Fatal("a verifying mode has no verification")
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	cfg := func(netw, addr string) *mysql.Config {
		c := mysql.NewConfig()
		c.Net, c.Addr = netw, addr
		return c
	}
	for _, tt := range []struct {
		name string
		s    Settings
		cfg  *mysql.Config
		want string // "" for no warning
	}{
		{"off over the network", Settings{Mode: Off}, cfg("tcp", "db.example:3306"), "not encrypted"},
		{"off on loopback", Settings{Mode: Off}, cfg("tcp", "127.0.0.1:3306"), ""},
		{"off on localhost", Settings{Mode: Off}, cfg("tcp", "localhost:3306"), ""},
		{"off on IPv6 loopback", Settings{Mode: Off}, cfg("tcp", "[::1]:3306"), ""},
		{"off on a socket", Settings{Mode: Off}, cfg("unix", "/run/mysqld/mysqld.sock"), ""},
		{"skip-verify", Settings{Mode: SkipVerify}, cfg("tcp", "127.0.0.1:3306"), "not verified"},
		{"verify-full on a socket", Settings{Mode: VerifyFull}, cfg("unix", "/run/mysqld/mysqld.sock"), "unix socket"},
		{"verify-full", Settings{Mode: VerifyFull}, cfg("tcp", "db.example:3306"), ""},
		{"preferred", Settings{}, cfg("tcp", "db.example:3306"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.Warnings(tt.cfg)
			if tt.want == "" && len(got) > 0 || tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)) {
				t.Fatalf("Warnings = %q; want one mentioning %q", got, tt.want)
			}
		})
	}
}

func TestEffective(t *testing.T) {
	for _, tt := range []struct {
		s         Settings
		encrypted bool
		want      Mode
	}{
		{Settings{Mode: Preferred, CAFile: "ca"}, true, VerifyFull},
		{Settings{}, true, SkipVerify},
		{Settings{Mode: Preferred, CertFile: "c", KeyFile: "k"}, true, SkipVerify},
		{Settings{}, false, Off},
		{Settings{Mode: Preferred, CAFile: "ca"}, false, Off},
		{Settings{Mode: VerifyCA, CAFile: "ca"}, false, VerifyCA},
		{Settings{Mode: SkipVerify}, true, SkipVerify},
		{Settings{Mode: Off}, true, Off},
	} {
		if got := tt.s.Effective(tt.encrypted); got.mode() != tt.want {
			t.Errorf("%+v.Effective(%v) = %s, want %s", tt.s, tt.encrypted, got.mode(), tt.want)
		}
	}
}

func TestOptionLines(t *testing.T) {
	tcp := mysql.NewConfig()
	tcp.Net, tcp.Addr = "tcp", "db.example:3306"
	sock := mysql.NewConfig()
	sock.Net, sock.Addr = "unix", "/s.sock"
	full := Settings{Mode: VerifyFull, CAFile: `/etc/ca "x".pem`, CertFile: "/c.pem", KeyFile: "/k.pem"}
	for _, tt := range []struct {
		name     string
		s        Settings
		c        Client
		cfg      *mysql.Config
		want     []string
		fallBack bool
	}{
		{"mariadb verify-full", full, MariaDBClient, tcp,
			[]string{"ssl", "ssl-verify-server-cert", `ssl-ca="/etc/ca \"x\".pem"`, `ssl-cert="/c.pem"`, `ssl-key="/k.pem"`}, false},
		{"mariadb verify-ca", Settings{Mode: VerifyCA, CAFile: "/ca.pem"}, MariaDBClient, tcp,
			[]string{"ssl", "skip-ssl-verify-server-cert", `ssl-ca="/ca.pem"`}, true},
		{"mariadb skip-verify", Settings{Mode: SkipVerify}, MariaDBClient, tcp, []string{"ssl", "skip-ssl-verify-server-cert"}, true},
		{"mariadb off", Settings{Mode: Off}, MariaDBClient, tcp, []string{"skip-ssl"}, false},
		{"mariadb unresolved preferred verifies", Settings{CAFile: "/ca.pem"}, MariaDBClient, tcp,
			[]string{"ssl", "ssl-verify-server-cert", `ssl-ca="/ca.pem"`}, false},
		{"mariadb preferred encrypted without CA", Settings{}.Effective(true), MariaDBClient, tcp,
			[]string{"ssl", "skip-ssl-verify-server-cert"}, true},
		{"mariadb preferred without TLS on the server", Settings{}.Effective(false), MariaDBClient, tcp, []string{"skip-ssl"}, false},
		{"mysql preferred encrypted without CA", Settings{}.Effective(true), MySQLClient, tcp, []string{`ssl-mode="REQUIRED"`}, false},
		{"mysql preferred encrypted with CA", Settings{CAFile: "/ca.pem"}.Effective(true), MySQLClient, tcp,
			[]string{`ssl-mode="VERIFY_IDENTITY"`, `ssl-ca="/ca.pem"`}, false},
		{"mariadb socket", full, MariaDBClient, sock, []string{"skip-ssl"}, false},
		{"mysql verify-full", full, MySQLClient, tcp,
			[]string{"ssl-mode=\"VERIFY_IDENTITY\"", `ssl-ca="/etc/ca \"x\".pem"`, `ssl-cert="/c.pem"`, `ssl-key="/k.pem"`}, false},
		{"mysql verify-ca", Settings{Mode: VerifyCA, CAFile: "/ca.pem"}, MySQLClient, tcp, []string{`ssl-mode="VERIFY_CA"`, `ssl-ca="/ca.pem"`}, false},
		{"mysql skip-verify", Settings{Mode: SkipVerify}, MySQLClient, tcp, []string{`ssl-mode="REQUIRED"`}, false},
		{"mysql off", Settings{Mode: Off}, MySQLClient, tcp, []string{`ssl-mode="DISABLED"`}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.OptionLines(tt.c, tt.cfg); !slices.Equal(got, tt.want) {
				t.Fatalf("OptionLines =\n%q\nwant\n%q", got, tt.want)
			}
			if got := tt.s.ToolMayFallBack(tt.c, tt.cfg); got != tt.fallBack {
				t.Fatalf("ToolMayFallBack = %v, want %v", got, tt.fallBack)
			}
		})
	}
}

func TestClientOf(t *testing.T) {
	for in, want := range map[string]Client{
		"mariadb  Ver 15.1 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64) using  EditLine wrapper": MariaDBClient,
		"mysql  Ver 15.1 Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)":                            MariaDBClient,
		"mysql  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)":                              MySQLClient,
	} {
		if got := ClientOf(in); got != want {
			t.Errorf("ClientOf(%q) = %v, want %v", in, got, want)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
