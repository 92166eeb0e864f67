package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// wireTap forwards TCP connections from its own address to a server and
// keeps every byte that crosses it in either direction, as an eavesdropper
// on the network between mysql-pitr and the server would see them.
type wireTap struct {
	addr string

	mu      sync.Mutex
	backend string
	streams []*bytes.Buffer // two per connection: to the server, from it
}

// newWireTap listens on host (an IP address of this machine) and forwards
// to backend until the test ends.
func newWireTap(t *testing.T, host, backend string) *wireTap {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	w := &wireTap{addr: l.Addr().String(), backend: backend}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			up, down := &bytes.Buffer{}, &bytes.Buffer{}
			w.streams = append(w.streams, up, down)
			backend := w.backend
			w.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer s.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(s, io.TeeReader(c, lockedWriter{&w.mu, up}))
					s.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, io.TeeReader(s, lockedWriter{&w.mu, down}))
				c.Close()
				<-done
			}()
		}
	}()
	return w
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// saw reports whether s crossed the tap in the clear, in any connection.
func (w *wireTap) saw(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.streams {
		if bytes.Contains(b.Bytes(), []byte(s)) {
			return true
		}
	}
	return false
}

// plaintext returns how many connections sent something other than what
// a client switching to TLS sends first: an SSLRequest packet (32 bytes,
// sequence 1) followed by a TLS handshake record.
func (w *wireTap) plaintext() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for i := 0; i < len(w.streams); i += 2 {
		up := w.streams[i].Bytes()
		if len(up) > 0 && !bytes.HasPrefix(up, []byte{32, 0, 0, 1}) || len(up) > 36 && up[36] != 0x16 {
			n++
		}
	}
	return n
}

// connections is the number of connections the tap has forwarded.
func (w *wireTap) connections() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.streams) / 2
}

// setBackend sends the next connections elsewhere: an impostor taking the
// server's place.
func (w *wireTap) setBackend(addr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.backend = addr
}

// serverAddr is a test server's TCP address.
func serverAddr(db *testbed.MariaDB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(db.Port()))
}

// networkIP returns an IP address of this machine that is not a loopback
// one, for a connection that counts as crossing a network, or "" when the
// machine has none.
func networkIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(n.IP.String(), "0"))
		if err != nil {
			continue
		}
		l.Close()
		return n.IP.String()
	}
	return ""
}

// unverifiedMarker is part of the notice that preferred accepted a
// certificate it did not verify.
const unverifiedMarker = "the server's certificate was not verified"

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestDefaultTLSOnStockServers runs the agent and a logical snapshot with
// no TLS flag against servers as they come: MySQL 9.7 and MariaDB 11.8 with
// the certificate they generate for themselves, MariaDB 10.11 with a
// certificate from a CA no system trusts, and MariaDB 10.11 without TLS.
// Every connection goes through a tap that keeps what crosses the wire: a
// value written to the server must never be seen there when the server
// offers TLS (and is seen when it offers none, which proves the tap). The
// notice that the certificate was not verified is said once per process,
// however many connections the process makes.
func TestDefaultTLSOnStockServers(t *testing.T) {
	ca := testbed.NewCA(t, "test bed CA")
	cert, key := ca.ServerCert(t, "localhost", "127.0.0.1")
	for _, tt := range []struct {
		name string
		opts testbed.MariaDBOptions
		tls  bool // the server offers TLS
	}{
		{"mysql-9.7", testbed.MariaDBOptions{Flavor: testbed.MySQL97, ServerID: 41}, true},
		{"mariadb-11.8", testbed.MariaDBOptions{Flavor: testbed.MariaDB118, ServerID: 42}, true},
		{"mariadb-10.11 with the test bed's CA", testbed.MariaDBOptions{ServerID: 43,
			TLS: &testbed.ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key}}, true},
		{"mariadb-10.11 without TLS", testbed.MariaDBOptions{ServerID: 44}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := testbed.NewMariaDB(t, tt.opts)
			secret := "wire-secret-" + randomHex(t)
			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(64))")
			db.Exec(t, "INSERT INTO app.t VALUES (1, ?)", secret+"-before")
			tap := newWireTap(t, "127.0.0.1", serverAddr(db))
			dsn := testbed.PitrUser + "@tcp(" + tap.addr + ")/"
			storageURL := "file://" + t.TempDir()
			t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())

			a := startAgent(t, []string{"MYSQL_PITR_PASSWORD=" + db.PitrPassword()}, "--dsn", dsn, "--storage", storageURL,
				"--spool-dir", t.TempDir(), "--agent-id", "tls-default", "--flush-interval", "200ms", "--server-id", "4242")
			a.waitReady(90 * time.Second)
			db.Exec(t, "INSERT INTO app.t VALUES (2, ?)", secret+"-streamed")
			a.waitDurable(db, 60*time.Second)
			// The server ends the replication connection; the agent
			// connects again, and says nothing new about the certificate.
			killBinlogDump(t, db)
			db.Exec(t, "INSERT INTO app.t VALUES (3, ?)", secret+"-after-reconnect")
			a.waitDurable(db, 60*time.Second)
			compareArchive(t, storageURL, db)

			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			stdout, stderr, code := runCLI(t, ctx, "snapshot", "--log-format", "text", "--threads", "2", "--dsn", dsn, "--storage", storageURL)
			if code != 0 {
				t.Fatalf("snapshot with no TLS flag: exit %d\n%s\n%s", code, stdout, stderr)
			}
			logs := map[string]string{"logical snapshot": stderr}
			if !tt.opts.Flavor.MySQL() {
				// mariadb-backup, given TLS options of its own, connects
				// through the tap too.
				if dir := tt.opts.Flavor.BinDir(); dir != "" {
					t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
				}
				stdout, stderr, code := runCLI(t, ctx, "snapshot", "--method", "physical", "--log-format", "text", "--dsn", dsn, "--storage", storageURL)
				if code != 0 {
					t.Fatalf("physical snapshot with no TLS flag: exit %d\n%s\n%s", code, stdout, stderr)
				}
				logs["physical snapshot"] = stderr
			}
			agentLog := a.logs()
			logs["agent"] = agentLog
			t.Logf("%d connections through the tap", tap.connections())
			if n := tap.connections(); n < 5 {
				t.Fatalf("only %d connections went through the tap", n)
			}
			if !tt.tls {
				// The tap sees plaintext; on this host's loopback that is
				// said nowhere, as before (see TestDefaultTLSAcrossANetwork).
				if !tap.saw(secret+"-streamed") || tap.plaintext() != tap.connections() {
					t.Fatalf("the tap did not see plaintext (%d of %d connections): it proves nothing", tap.plaintext(), tap.connections())
				}
				for name, log := range logs {
					if strings.Contains(log, unverifiedMarker) || strings.Contains(log, "offers no TLS") {
						t.Fatalf("the %s spoke of TLS against a server without it, on loopback:\n%s", name, log)
					}
				}
				return
			}
			for _, s := range []string{secret, db.PitrPassword()} {
				if tap.saw(s) {
					t.Fatalf("%q crossed the wire in the clear", s)
				}
			}
			if n := tap.plaintext(); n != 0 {
				t.Fatalf("%d of %d connections did not switch to TLS first", n, tap.connections())
			}
			for name, log := range logs {
				if n := strings.Count(log, unverifiedMarker); n != 1 {
					t.Fatalf("the %s said %d times that the certificate was not verified, want once:\n%s", name, n, log)
				}
				for _, w := range []string{"--mysql-ca", "verify-full", "verify-ca"} {
					if !strings.Contains(log, w) {
						t.Fatalf("the %s's notice does not say how to verify (%s):\n%s", name, w, log)
					}
				}
			}
			// On this host's loopback it is a note, not a warning.
			for _, l := range strings.Split(strings.Join(slices.Collect(maps.Values(logs)), "\n"), "\n") {
				if strings.Contains(l, unverifiedMarker) && !strings.Contains(l, `"level":"INFO"`) && !strings.Contains(l, "level=INFO") {
					t.Fatalf("not a note on loopback: %s", l)
				}
			}
		})
	}
}

// TestDefaultTLSRestoreTarget restores, with no TLS flag, into a server
// that requires TLS and offers a certificate from a CA no system trusts,
// through the tap: the privilege preflight, the loader and the mariadb
// client of the mysqlbinlog replay all connect encrypted, nothing restored
// crosses the wire in the clear, and the notice is said once.
func TestDefaultTLSRestoreTarget(t *testing.T) {
	ca := testbed.NewCA(t, "test bed CA")
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 49})
	dst := secureMariaDB(t, ca, 50, "localhost", "127.0.0.1")
	storageURL := "file://" + t.TempDir()
	t.Setenv("MYSQL_PITR_PASSWORD", src.PitrPassword())
	secret := "wire-secret-" + randomHex(t)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(64))")
	src.Exec(t, "INSERT INTO app.t VALUES (1, ?)", secret+"-in-the-snapshot")
	a := startAgent(t, []string{"MYSQL_PITR_PASSWORD=" + src.PitrPassword()}, "--dsn", pitrDSN(src), "--storage", storageURL,
		"--spool-dir", t.TempDir(), "--agent-id", "tls-restore", "--flush-interval", "200ms", "--server-id", "4242")
	a.waitReady(60 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if stdout, stderr, code := runCLI(t, ctx, "snapshot", "--threads", "2", "--dsn", pitrDSN(src), "--storage", storageURL); code != 0 {
		t.Fatalf("snapshot: exit %d\n%s\n%s", code, stdout, stderr)
	}
	src.Exec(t, "INSERT INTO app.t VALUES (2, ?)", secret+"-replayed")
	a.waitDurable(src, 60*time.Second)

	tap := newWireTap(t, "127.0.0.1", serverAddr(dst))
	stdout, stderr, code := runCLI(t, ctx, "restore", "--storage", storageURL, "--to", "latest", "--log-format", "text",
		"--target-dsn", "root@tcp("+tap.addr+")/", "--replay", "mysqlbinlog", "--threads", "2")
	if code != 0 {
		t.Fatalf("restore with no TLS flag into a server that requires TLS: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var got []string
	rows, err := dst.DB(t).Query("SELECT v FROM app.t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v string
		rows.Scan(&v)
		got = append(got, v)
	}
	rows.Close()
	if want := []string{secret + "-in-the-snapshot", secret + "-replayed"}; !slices.Equal(got, want) {
		t.Fatalf("restored rows %q, want %q", got, want)
	}
	if tap.saw(secret) {
		t.Fatal("restored data crossed the wire in the clear")
	}
	if n := tap.plaintext(); n != 0 || tap.connections() < 3 {
		t.Fatalf("%d of %d connections did not switch to TLS first", n, tap.connections())
	}
	if n := strings.Count(stderr, unverifiedMarker); n != 1 {
		t.Fatalf("the restore said %d times that the certificate was not verified, want once:\n%s", n, stderr)
	}
}

// TestDefaultTLSAcrossANetwork: reached at an address that is not this
// host's loopback, a server with a self-generated certificate gets a
// warning (once) that it was not verified, and one without TLS the
// existing plaintext warning.
func TestDefaultTLSAcrossANetwork(t *testing.T) {
	ip := networkIP()
	if ip == "" {
		msg := "this machine has no address other than loopback: the test needs a network interface with one"
		if testbed.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, tt := range []struct {
		name string
		opts testbed.MariaDBOptions
		want string
	}{
		{"mysql-9.7", testbed.MariaDBOptions{Flavor: testbed.MySQL97, ServerID: 45}, unverifiedMarker},
		{"mariadb-10.11 without TLS", testbed.MariaDBOptions{ServerID: 46}, plaintextWarning},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := testbed.NewMariaDB(t, tt.opts)
			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
			tap := newWireTap(t, ip, serverAddr(db))
			t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
			stdout, stderr, code := runCLI(t, t.Context(), "snapshot", "--log-format", "text", "--threads", "2",
				"--dsn", testbed.PitrUser+"@tcp("+tap.addr+")/", "--storage", "file://"+t.TempDir())
			if code != 0 {
				t.Fatalf("snapshot: exit %d\n%s\n%s", code, stdout, stderr)
			}
			var warned []string
			for _, l := range strings.Split(stderr, "\n") {
				if strings.Contains(l, "level=WARN") {
					warned = append(warned, l)
				}
			}
			if len(warned) != 1 || !strings.Contains(warned[0], tt.want) || !strings.Contains(warned[0], tap.addr) {
				t.Fatalf("warnings %q; want one, about %s, naming %s:\n%s", warned, tt.want, tap.addr, stderr)
			}
		})
	}
}

// TestVerifyCARefusesAnImpostor: verify-ca with MySQL's own CA (ca.pem in
// its datadir) connects to that server; when another server answers at the
// same address, presenting a certificate of its own, verify-ca refuses it
// where the default mode would accept it with its notice.
func TestVerifyCARefusesAnImpostor(t *testing.T) {
	real := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97, ServerID: 47})
	impostor := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97, ServerID: 48})
	// The impostor knows the account and its password: only the
	// certificate tells them apart.
	impostor.Exec(t, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", testbed.PitrUser, real.PitrPassword()))
	for _, db := range []*testbed.MariaDB{real, impostor} {
		db.Exec(t, "CREATE DATABASE app")
		db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	b, err := os.ReadFile(filepath.Join(real.DataDir(), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	tap := newWireTap(t, "127.0.0.1", serverAddr(real))
	t.Setenv("MYSQL_PITR_PASSWORD", real.PitrPassword())
	snapshot := func(args ...string) (string, int) {
		t.Helper()
		all := append([]string{"snapshot", "--log-format", "text", "--threads", "2",
			"--dsn", testbed.PitrUser + "@tcp(" + tap.addr + ")/", "--storage", "file://" + t.TempDir()}, args...)
		_, stderr, code := runCLI(t, t.Context(), all...)
		return stderr, code
	}
	verifyCA := []string{"--mysql-tls", "verify-ca", "--mysql-ca", caFile}
	if stderr, code := snapshot(verifyCA...); code != 0 || strings.Contains(stderr, "level=WARN") || strings.Contains(stderr, unverifiedMarker) {
		t.Fatalf("verify-ca with the server's own ca.pem: exit %d\n%s", code, stderr)
	}
	tap.setBackend(serverAddr(impostor))
	if stderr, code := snapshot(verifyCA...); code != 1 || !strings.Contains(stderr, "not signed by the CA in "+caFile) {
		t.Fatalf("verify-ca against the impostor: exit %d, want 1 naming the CA\n%s", code, stderr)
	}
	// With a CA, preferred verifies as verify-full: refused (here for the
	// host name first, which a self-generated certificate never holds).
	if stderr, code := snapshot("--mysql-tls", "preferred", "--mysql-ca", caFile); code != 1 || !strings.Contains(stderr, "TLS: the server's certificate") {
		t.Fatalf("preferred with --mysql-ca against the impostor: exit %d, want 1 refusing the certificate\n%s", code, stderr)
	}
	if stderr, code := snapshot(); code != 0 || strings.Count(stderr, unverifiedMarker) != 1 {
		t.Fatalf("the default against the impostor: exit %d; want it accepted, with the notice once\n%s", code, stderr)
	}
}

// killBinlogDump ends the server's replication connections (the agent's).
func killBinlogDump(t *testing.T, db *testbed.MariaDB) {
	t.Helper()
	rows, err := db.DB(t).Query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		t.Fatal("no replication connection to end")
	}
	for _, id := range ids {
		db.Exec(t, fmt.Sprintf("KILL %d", id))
	}
}
