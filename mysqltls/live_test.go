package mysqltls

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// switchingProxy forwards the n-th connection to backends[min(n, last)].
func switchingProxy(t *testing.T, backends ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	var n atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			i := min(int(n.Add(1))-1, len(backends)-1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b, err := net.Dial("tcp", backends[i])
				if err != nil {
					return
				}
				defer b.Close()
				go func() { io.Copy(b, c); b.Close() }()
				io.Copy(c, b)
			}()
		}
	}()
	return l.Addr().String()
}

// TestPreferredKeepsTLSAfterAFallback: with Preferred, one connection to a
// server without TLS must not turn TLS off for the pool's later
// connections. The proxy sends the first connection to a server without TLS
// and the next ones to a server that requires it.
func TestPreferredKeepsTLSAfterAFallback(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	cert, key := ca.ServerCert(t, "127.0.0.1")
	plain := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 1})
	secure := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 2,
		TLS: &testbed.ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, RequireSecureTransport: true}})
	// The same account and password on both.
	plain.Exec(t, "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pass'")
	secure.Exec(t, "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pass'")
	proxy := switchingProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(plain.Port())), net.JoinHostPort("127.0.0.1", strconv.Itoa(secure.Port())))

	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "app", "app-pass", "tcp", proxy
	if err := (Settings{Mode: Preferred, CAFile: ca.CertFile}).Apply(cfg); err != nil {
		t.Fatal(err)
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cipherOf := func() string {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer c.Raw(func(any) error { return driver.ErrBadConn }) // discarded: a new connection each time
		cipher, err := Cipher(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return cipher
	}
	if got := cipherOf(); got != "" {
		t.Fatalf("first connection (server without TLS): cipher %q, want plaintext", got)
	}
	if got := cipherOf(); got == "" {
		t.Fatal("second connection (server with TLS): plaintext; the first connection's fallback stuck")
	}
}

// TestOptionLinesReadBack: the client library reads the option lines back
// as written, whatever the file names hold.
func TestOptionLinesReadBack(t *testing.T) {
	printDefaults := testbed.Binary(t, "my_print_defaults", "apt-get install mariadb-client")
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr = "tcp", "db.example:3306"
	s := Settings{Mode: VerifyFull, CAFile: `/etc/my ca/#1 "x";\y.pem`, CertFile: "/c.pem", KeyFile: "/k.pem"}
	path := filepath.Join(t.TempDir(), "client.cnf")
	content := "[client]\n" + strings.Join(s.OptionLines(MariaDBClient, cfg), "\n") + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), printDefaults, "--defaults-file="+path, "client").Output()
	if err != nil {
		t.Fatalf("my_print_defaults: %v", err)
	}
	want := "--ssl\n--ssl-verify-server-cert\n--ssl-ca=" + s.CAFile + "\n--ssl-cert=/c.pem\n--ssl-key=/k.pem\n"
	if string(out) != want {
		t.Fatalf("read back\n%s\nwant\n%s", out, want)
	}
}

// TestDefaultModeOnStockServers connects with the default settings to
// servers as they come, each offering a certificate no system trusts
// (MySQL 9.7's and MariaDB 11.8's self-generated ones, and MariaDB 10.11's
// from a private CA): every connection of a Go pool is encrypted and
// reported unverified, and the flavor's command-line client, given the
// option lines of what the pool did (Effective), is encrypted too.
func TestDefaultModeOnStockServers(t *testing.T) {
	ca := testbed.NewCA(t, "test bed CA")
	cert, key := ca.ServerCert(t, "localhost", "127.0.0.1")
	for _, tt := range []struct {
		name string
		opts testbed.MariaDBOptions
	}{
		{"mysql-9.7", testbed.MariaDBOptions{Flavor: testbed.MySQL97}},
		{"mariadb-11.8", testbed.MariaDBOptions{Flavor: testbed.MariaDB118}},
		{"mariadb-10.11 with the test bed's CA", testbed.MariaDBOptions{TLS: &testbed.ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := testbed.NewMariaDB(t, tt.opts)
			client := tt.opts.Flavor.Binary(t, tt.opts.Flavor.ClientProgram())
			cfg, err := mysql.ParseDSN(db.PitrDSN())
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var reported []UnverifiedCert
			s := Settings{Unverified: func(u UnverifiedCert) { mu.Lock(); reported = append(reported, u); mu.Unlock() }}
			if err := s.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			conn, err := mysql.NewConnector(cfg)
			if err != nil {
				t.Fatal(err)
			}
			pool := sql.OpenDB(conn)
			defer pool.Close()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var conns []*sql.Conn
			for range 3 {
				c, err := pool.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
				cipher, err := Cipher(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				if cipher == "" {
					t.Fatal("a connection of the default mode is not encrypted")
				}
			}
			mu.Lock()
			n := len(reported)
			mu.Unlock()
			if n != len(conns) {
				t.Fatalf("%d connections reported unverified, want %d", n, len(conns))
			}

			out, err := exec.CommandContext(ctx, client, "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version: %v %s", client, err, out)
			}
			lines := s.Effective(true).OptionLines(ClientOf(string(out)), cfg)
			cnf := filepath.Join(t.TempDir(), "client.cnf")
			content := "[client]\npassword=\"" + db.PitrPassword() + "\"\n" + strings.Join(lines, "\n") + "\n"
			if err := os.WriteFile(cnf, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err = exec.CommandContext(ctx, client, "--defaults-file="+cnf, "--protocol=TCP", "-h", "127.0.0.1", "-P", strconv.Itoa(db.Port()),
				"-u", testbed.PitrUser, "-N", "-B", "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'").CombinedOutput()
			if err != nil {
				t.Fatalf("%s with %q: %v\n%s", filepath.Base(client), lines, err, out)
			}
			if f := strings.Fields(string(out)); len(f) != 2 || f[0] != "Ssl_cipher" {
				t.Fatalf("%s with %q: the session is not encrypted: %q", filepath.Base(client), lines, out)
			}
			t.Logf("%s with %q: %s", filepath.Base(client), lines, strings.TrimSpace(string(out)))
		})
	}
}
