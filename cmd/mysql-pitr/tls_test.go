package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// secureMariaDB starts a MariaDB 10.11 server with a certificate from ca
// for hosts that refuses unencrypted TCP connections
// (require_secure_transport=ON).
func secureMariaDB(t *testing.T, ca *testbed.CA, serverID uint32, hosts ...string) *testbed.MariaDB {
	t.Helper()
	return secureServer(t, testbed.MariaDB1011, ca, serverID, hosts...)
}

// secureServer is secureMariaDB for a server of release f.
func secureServer(t *testing.T, f testbed.Flavor, ca *testbed.CA, serverID uint32, hosts ...string) *testbed.MariaDB {
	t.Helper()
	cert, key := ca.ServerCert(t, hosts...)
	return testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: serverID,
		TLS: &testbed.ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, RequireSecureTransport: true}})
}

// plainServer starts a server of release f that offers no TLS: MariaDB
// 10.11 as it comes, MySQL with TLS turned off (tls_version empty).
func plainServer(t *testing.T, f testbed.Flavor, serverID uint32) *testbed.MariaDB {
	t.Helper()
	opts := testbed.MariaDBOptions{Flavor: f, ServerID: serverID}
	if f.MySQL() {
		opts.ExtraArgs = []string{"--tls-version="}
	}
	return testbed.NewMariaDB(t, opts)
}

// serverCA copies the CA of a MySQL server's self-generated certificate
// (ca.pem in its datadir), as an operator would, into a file of the test's.
func serverCA(t *testing.T, db *testbed.MariaDB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(db.DataDir(), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile
}

func pitrDSN(db *testbed.MariaDB) string {
	return fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
}

// TestMySQLTLSModes takes a logical snapshot with each --mysql-tls mode,
// on MariaDB 10.11 and MySQL 9.7, against a server that requires TLS with
// a certificate from a CA, one whose certificate names another host, and
// one without TLS, and on MySQL against a server with its self-generated
// certificate: what connects, what is refused, and what the user is told.
func TestMySQLTLSModes(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) { tlsModes(t, f) })
	}
}

func tlsModes(t *testing.T, f testbed.Flavor) {
	ca := testbed.NewCA(t, "database CA")
	wrongCA := testbed.NewCA(t, "another CA")
	secure := secureServer(t, f, ca, 21, "localhost", "127.0.0.1")
	otherHost := secureServer(t, f, ca, 22, "db.other.example")
	plain := plainServer(t, f, 23)
	servers := []*testbed.MariaDB{secure, otherHost, plain}
	// MySQL's own certificate, as it generates it: its CA is ca.pem in its
	// datadir, and it names no host.
	var own *testbed.MariaDB
	var ownCA string
	if f.MySQL() {
		own = testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: 24})
		ownCA = serverCA(t, own)
		servers = append(servers, own)
	}
	for _, db := range servers {
		db.Exec(t, "CREATE DATABASE app")
		db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
		db.Exec(t, "INSERT INTO app.t VALUES (1, 'one'), (2, 'two')")
	}
	// An account that logs in only with a client certificate from ca.
	secure.Exec(t, "SET SESSION sql_log_bin = 0")
	secure.Exec(t, "CREATE USER 'certuser'@'%' IDENTIFIED BY 'certpass' REQUIRE X509")
	secure.Exec(t, "GRANT ALL ON *.* TO 'certuser'@'%'")
	clientCert, clientKey := ca.ClientCert(t, "certuser")

	full := []string{"--mysql-tls", "verify-full", "--mysql-ca", ca.CertFile}
	// Refused unencrypted: MariaDB says Access denied, which mysql-pitr
	// explains; MySQL says why itself.
	offRefused := []string{"Access denied", "not encrypted (--mysql-tls off)", "require_secure_transport=ON"}
	if f.MySQL() {
		offRefused = []string{"Connections using insecure transport are prohibited while --require_secure_transport=ON"}
	}
	type tlsCase struct {
		name     string
		db       *testbed.MariaDB
		dsn      string // default: the pitr account
		password string // default: the pitr account's
		args     []string
		code     int
		want     []string // in stderr
	}
	var ownCases []tlsCase
	if own != nil {
		ownCases = []tlsCase{
			{name: "own certificate: verify-ca with its ca.pem", db: own, args: []string{"--mysql-tls", "verify-ca", "--mysql-ca", ownCA}},
			{name: "own certificate: verify-ca with a wrong CA", db: own, args: []string{"--mysql-tls", "verify-ca", "--mysql-ca", wrongCA.CertFile},
				code: 1, want: []string{"not signed by the CA in " + wrongCA.CertFile}},
			{name: "own certificate: verify-full with its ca.pem names no host", db: own, args: []string{"--mysql-tls", "verify-full", "--mysql-ca", ownCA},
				code: 1, want: []string{"TLS: the server's certificate", "verify-ca"}},
			{name: "own certificate: skip-verify works and warns", db: own, args: []string{"--mysql-tls", "skip-verify"},
				want: []string{"level=WARN", "TLS mode skip-verify", "not verified"}},
			{name: "own certificate: preferred by default encrypts without verifying, and says so", db: own,
				want: []string{"level=INFO", unverifiedMarker, "Auto_Generated_CA_Certificate"}},
			{name: "own certificate: preferred with its ca.pem verifies as verify-full", db: own, args: []string{"--mysql-tls", "preferred", "--mysql-ca", ownCA},
				code: 1, want: []string{"TLS: the server's certificate"}},
			{name: "own certificate: off connects unencrypted", db: own, args: []string{"--mysql-tls", "off"}},
		}
	}
	for _, tt := range append([]tlsCase{
		{name: "verify-full with the right CA", db: secure, args: full},
		{name: "verify-full with a wrong CA", db: secure, args: []string{"--mysql-tls", "verify-full", "--mysql-ca", wrongCA.CertFile},
			code: 1, want: []string{"not signed by the CA in " + wrongCA.CertFile, "--mysql-ca"}},
		{name: "verify-full with the system's roots", db: secure, args: []string{"--mysql-tls", "verify-full"},
			code: 1, want: []string{"not signed by a CA this system trusts", "--mysql-ca"}},
		{name: "verify-full with a certificate for another host", db: otherHost, args: full,
			code: 1, want: []string{"not valid for the host name 127.0.0.1", "verify-ca"}},
		{name: "verify-ca with a certificate for another host", db: otherHost, args: []string{"--mysql-tls", "verify-ca", "--mysql-ca", ca.CertFile}},
		{name: "verify-ca with a wrong CA", db: otherHost, args: []string{"--mysql-tls", "verify-ca", "--mysql-ca", wrongCA.CertFile},
			code: 1, want: []string{"not signed by the CA in"}},
		{name: "skip-verify works and warns", db: otherHost, args: []string{"--mysql-tls", "skip-verify"},
			want: []string{"level=WARN", "TLS mode skip-verify", "not verified"}},
		{name: "off against require_secure_transport", db: secure, args: []string{"--mysql-tls", "off"},
			code: 1, want: offRefused},
		{name: "preferred verifies", db: secure, args: []string{"--mysql-tls", "preferred", "--mysql-ca", ca.CertFile}},
		{name: "preferred with a wrong CA is refused, not downgraded", db: secure, args: []string{"--mysql-tls", "preferred", "--mysql-ca", wrongCA.CertFile},
			code: 1, want: []string{"not signed by"}},
		{name: "preferred by default encrypts without verifying, and says so", db: secure,
			want: []string{"level=INFO", unverifiedMarker, "certificate_issuer=\"CN=database CA\""}},
		{name: "preferred by default to a certificate for another host", db: otherHost,
			want: []string{unverifiedMarker}},
		{name: "preferred without TLS on the server", db: plain},
		{name: "verify-full without TLS on the server", db: plain, args: full,
			code: 1, want: []string{"offers no TLS", "never falls back to plaintext"}},
		{name: "skip-verify without TLS on the server", db: plain, args: []string{"--mysql-tls", "skip-verify"},
			code: 1, want: []string{"offers no TLS"}},
		{name: "client certificate", db: secure, dsn: fmt.Sprintf("certuser@tcp(127.0.0.1:%d)/", secure.Port()), password: "certpass",
			args: append([]string{"--mysql-cert", clientCert, "--mysql-key", clientKey}, full...)},
		{name: "client certificate missing", db: secure, dsn: fmt.Sprintf("certuser@tcp(127.0.0.1:%d)/", secure.Port()), password: "certpass",
			args: full, code: 1, want: []string{"Access denied"}},
	}, ownCases...) {
		t.Run(tt.name, func(t *testing.T) {
			dsn, password := tt.dsn, tt.password
			if dsn == "" {
				dsn, password = pitrDSN(tt.db), tt.db.PitrPassword()
			}
			t.Setenv("MYSQL_PITR_PASSWORD", password)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			args := append([]string{"snapshot", "--log-format", "text", "--threads", "2", "--dsn", dsn, "--storage", "file://" + t.TempDir()}, tt.args...)
			stdout, stderr, code := runCLI(t, ctx, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 0 {
				t.Log(lines[len(lines)-1])
			}
			if code == 0 && !strings.Contains(stdout, "snapshot ") {
				t.Fatalf("no snapshot reported: %s", stdout)
			}
			if strings.Contains(stderr, password) {
				t.Fatalf("the password leaked: %s", stderr)
			}
		})
	}
}

// TestTLSEverywhere runs the whole chain with verify-full, on MariaDB 10.11
// and MySQL 9.7, against servers that refuse unencrypted connections and an
// HTTPS S3 endpoint with its own private CA: the agent archives
// (replication stream and pool), physical (mariadb-backup, or the clone
// plugin) and logical snapshots are taken, and a restore into a running
// server replays through the mariadb or mysql client; the archive matches
// the server byte for byte and the restored tables match the source's.
func TestTLSEverywhere(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) { tlsEverywhere(t, f) })
	}
}

func tlsEverywhere(t *testing.T, f testbed.Flavor) {
	dbCA := testbed.NewCA(t, "database CA")
	s3CA := testbed.NewCA(t, "storage CA")
	src := secureServer(t, f, dbCA, 31, "localhost", "127.0.0.1")
	dst := secureServer(t, f, dbCA, 32, "localhost", "127.0.0.1")
	if f.MySQL() {
		dst.Exec(t, "SET GLOBAL local_infile = ON")
	}
	if dir := f.BinDir(); dir != "" {
		// The clone is finished by the release's mysqld.
		t.Setenv("MYSQL_PITR_SERVER_BINDIR", dir)
	}
	s3cert, s3key := s3CA.ServerCert(t, "127.0.0.1")
	gw := testbed.StartS3With(t, testbed.S3Options{CertFile: s3cert, KeyFile: s3key})
	gw.SetEnv(t)
	storageURL := gw.URL("tls")
	if !strings.Contains(storageURL, "https") {
		t.Fatalf("storage URL %s is not https", storageURL)
	}
	// Through the environment, as in a pod: every command below gets them.
	tlsEnv := map[string]string{"MYSQL_PITR_MYSQL_TLS": "verify-full", "MYSQL_PITR_MYSQL_CA": dbCA.CertFile, "MYSQL_PITR_S3_CA_FILE": s3CA.CertFile}
	env := append(gw.Env(), "MYSQL_PITR_PASSWORD="+src.PitrPassword())
	for k, v := range tlsEnv {
		t.Setenv(k, v)
		env = append(env, k+"="+v)
	}
	t.Setenv("MYSQL_PITR_PASSWORD", src.PitrPassword())

	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.orders (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(100))")
	insert := func(n int, note string) {
		for i := 0; i < n; i++ {
			src.Exec(t, "INSERT INTO app.orders (note) VALUES (?)", fmt.Sprintf("%s %d", note, i))
		}
	}
	insert(20, "before the agent")

	a := startAgent(t, env, "--dsn", pitrDSN(src), "--storage", storageURL, "--spool-dir", t.TempDir(), "--agent-id", "tls-0",
		"--flush-interval", "200ms", "--server-id", "4242")
	a.waitReady(60 * time.Second)
	snapshotCLI := func(method string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		stdout, stderr, code := runCLI(t, ctx, "snapshot", "--method", method, "--threads", "2", "--log-format", "text",
			"--dsn", pitrDSN(src), "--storage", storageURL)
		if code != 0 {
			t.Fatalf("%s snapshot over verify-full: exit %d\n%s", method, code, stderr)
		}
		if strings.Contains(stderr, "level=WARN") {
			t.Fatalf("%s snapshot warned:\n%s", method, stderr)
		}
		t.Logf("%s", strings.TrimSpace(stdout))
	}
	snapshotCLI("physical")
	insert(20, "after the physical snapshot")
	snapshotCLI("logical")
	insert(20, "after the logical snapshot")
	src.Exec(t, "UPDATE app.orders SET note = CONCAT(note, '!') WHERE id % 3 = 0")
	a.waitDurable(src, 60*time.Second)
	if logs := a.logs(); strings.Contains(logs, `"level":"WARN"`) || strings.Contains(logs, "not encrypted") {
		t.Fatalf("the agent warned:\n%s", logs)
	}
	compareArchive(t, storageURL, src)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	stdout, stderr, code := runCLI(t, ctx, "restore", "--storage", storageURL, "--to", "latest", "--log-format", "text",
		"--target-dsn", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", dst.Port()), "--replay", "mysqlbinlog", "--threads", "2")
	if code != 0 {
		t.Fatalf("restore into the TLS server: exit %d\n%s\n%s", code, stdout, stderr)
	}
	checksum := func(db *testbed.MariaDB) (rows int, sum string) {
		db.DB(t).QueryRow("SELECT COUNT(*) FROM app.orders").Scan(&rows)
		var name string
		if err := db.DB(t).QueryRow("CHECKSUM TABLE app.orders EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		return rows, sum
	}
	srcRows, srcSum := checksum(src)
	dstRows, dstSum := checksum(dst)
	if srcRows != 60 || dstRows != srcRows || dstSum != srcSum {
		t.Fatalf("restored app.orders: %d rows, checksum %s; source %d rows, checksum %s", dstRows, dstSum, srcRows, srcSum)
	}
}

// TestS3TLSFlags: --s3-ca-file makes an https endpoint with a private CA
// usable; without it the command fails saying why; a plain http endpoint
// elsewhere than loopback is a warning at every start.
func TestS3TLSFlags(t *testing.T) {
	ca := testbed.NewCA(t, "storage CA")
	cert, key := ca.ServerCert(t, "127.0.0.1")
	gw := testbed.StartS3With(t, testbed.S3Options{CertFile: cert, KeyFile: key})
	gw.SetEnv(t)
	storageURL := gw.URL("flags")

	// The location holds no archive: saying so takes a listing over TLS.
	if _, stderr, code := runCLI(t, t.Context(), "list", "--storage", storageURL, "--s3-ca-file", ca.CertFile); code != 1 || !strings.Contains(stderr, "no mysql-pitr archive") {
		t.Fatalf("list with --s3-ca-file: exit %d: %s; want the bucket reached and found holding no archive", code, stderr)
	}
	_, stderr, code := runCLI(t, t.Context(), "list", "--storage", storageURL)
	if code != 1 || !strings.Contains(stderr, "certificate is not trusted") || !strings.Contains(stderr, "--s3-ca-file") {
		t.Fatalf("list without --s3-ca-file: exit %d: %s; want a refusal naming --s3-ca-file", code, stderr)
	}

	// A server that never answers stands in for a remote plain endpoint:
	// the warning comes before the first request.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, stderr, _ = runCLI(t, ctx, "list", "--log-format", "text", "--storage", "s3://backups/x?region=us-east-1&path-style=true&endpoint=http://192.0.2.1:9000")
	if !strings.Contains(stderr, "level=WARN") || !strings.Contains(stderr, "plain http") {
		t.Fatalf("no warning about a plain http endpoint:\n%s", stderr)
	}
}

func TestTLSBadInput(t *testing.T) {
	file := "file://" + t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown mode", []string{"snapshot", "--dsn", "u@tcp(127.0.0.1:1)/", "--storage", file, "--mysql-tls", "required"}, "--mysql-tls"},
		{"verify-ca without a CA", []string{"snapshot", "--dsn", "u@tcp(127.0.0.1:1)/", "--storage", file, "--mysql-tls", "verify-ca"}, "needs a CA file"},
		{"certificate without key", []string{"agent", "--dsn", "u@tcp(127.0.0.1:1)/", "--storage", file, "--mysql-cert", "/c.pem"}, "give both"},
		{"missing CA file", []string{"agent", "--dsn", "u@tcp(127.0.0.1:1)/", "--storage", file, "--mysql-ca", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{"tls in the DSN", []string{"snapshot", "--dsn", "u@tcp(127.0.0.1:1)/?tls=skip-verify", "--storage", file}, "--mysql-tls"},
		{"restore target with verify-ca and no CA", []string{"restore", "--storage", file, "--to", "latest", "--target-dsn", "u@tcp(127.0.0.1:1)/",
			"--mysql-tls", "verify-ca"}, "needs a CA file"},
		{"S3 CA file with a plain http endpoint", []string{"list", "--storage", "s3://backups/x?endpoint=http://10.0.0.1:9000", "--s3-ca-file", "/ca.pem"}, "plain http"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, t.Context(), tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d: %s; want exit 2 and a message mentioning %q", code, stderr, tt.want)
			}
		})
	}
}
