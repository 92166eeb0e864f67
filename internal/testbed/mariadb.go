package testbed

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// MariaDBInstall names the Debian packages that provide the server, the
// backup tool and the client; it is the hint a skipped or failed test prints.
const MariaDBInstall = "apt-get install mariadb-server mariadb-backup mariadb-client"

// PitrUser is the account every test server has for the code under test. It
// exists on '%' with a random password (see MariaDB.PitrPassword) and holds
// exactly the privileges `mysql-pitr grants --role streamer,logical,physical`
// prints for MariaDB, not ALL, so that a missing grant in production shows
// up in tests first.
const PitrUser = "pitr"

// pitrGrants are the privileges of PitrUser: REPLICATION SLAVE to stream
// binlogs; BINLOG MONITOR for SHOW BINARY LOGS and SHOW MASTER STATUS;
// SELECT, SHOW VIEW, TRIGGER and EVENT to dump tables, views, triggers and
// events; RELOAD for FLUSH TABLES WITH READ LOCK and mariadb-backup's
// BACKUP STAGE; PROCESS for mariadb-backup. BINLOG MONITOR exists since
// MariaDB 10.5. The preflight package's tests keep this list equal to the
// documented one.
const pitrGrants = "REPLICATION SLAVE, BINLOG MONITOR, SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD, PROCESS"

// Defaults for MariaDBOptions fields left at their zero value.
const (
	DefaultServerID       uint32 = 1
	DefaultBinlogChecksum        = "CRC32"
	DefaultBinlogFormat          = "ROW"
)

// Timeouts for a test server. Startup of a fresh server takes about a second;
// the generous limits are for loaded CI machines, not for normal runs.
const (
	mariaDBStartTimeout = 60 * time.Second
	mariaDBStopTimeout  = 60 * time.Second
	// startAttempts covers the race between FreePort and the server binding
	// the port when several servers start at once.
	startAttempts = 3
)

// MariaDBOptions configures a test server. The zero value is a ROW-format,
// CRC32-checksummed, binlog-enabled MariaDB 10.11 server with server_id 1.
type MariaDBOptions struct {
	// Flavor is the server to start: MariaDB 10.11 (the zero value),
	// MariaDB 11.8 or MySQL 9.7, each started as its official image starts
	// it (see flavor.go).
	Flavor Flavor
	// ServerID is server_id; 0 means DefaultServerID.
	ServerID uint32
	// BinlogChecksum is binlog_checksum, "CRC32" or "NONE"; "" means CRC32.
	BinlogChecksum string
	// BinlogFormat is binlog_format; "" means ROW.
	BinlogFormat string
	// NoBinlog turns binary logging off, so that the zero value keeps it on.
	NoBinlog bool
	// MaxBinlogSize is max_binlog_size in bytes; 0 keeps the server default
	// (1 GiB). MariaDB rounds it to a multiple of 4096, minimum 4096.
	MaxBinlogSize int64
	// TLS, when set, gives the server a certificate so that it offers TLS.
	TLS *ServerTLS
	// ExtraArgs are appended to the server's command line, after the
	// testbed's own flags, so they can override them.
	ExtraArgs []string
}

// ServerTLS is a test server's TLS configuration (see CA for the files).
type ServerTLS struct {
	// CAFile verifies client certificates (ssl_ca); CertFile and KeyFile are
	// the server's certificate and key (ssl_cert, ssl_key).
	CAFile, CertFile, KeyFile string
	// RequireSecureTransport refuses unencrypted TCP connections
	// (require_secure_transport=ON); the unix socket stays open, so the
	// testbed's own root connections go through it.
	RequireSecureTransport bool
}

func (o MariaDBOptions) withDefaults() MariaDBOptions {
	if o.ServerID == 0 {
		o.ServerID = DefaultServerID
	}
	if o.BinlogChecksum == "" {
		o.BinlogChecksum = DefaultBinlogChecksum
	}
	if o.BinlogFormat == "" {
		o.BinlogFormat = DefaultBinlogFormat
	}
	return o
}

// MariaDB is a throwaway server listening on 127.0.0.1, with its datadir,
// binlogs, socket and error log in one temporary directory: mariadbd, or
// MySQL's mysqld for a MySQL Flavor. It can be stopped, killed and started
// again on the same datadir and port. Its methods are safe for concurrent
// use.
type MariaDB struct {
	opts      MariaDBOptions
	dir       string
	datadir   string // "" for dir/data
	port      int
	pitrPass  string
	version   string
	startTime time.Duration

	mu  sync.Mutex
	srv *mysqld.Server // nil when stopped
	db  *sql.DB
}

// NewMariaDB starts a server for one test and stops it and removes its
// directory when the test ends. A missing server program skips the test, or
// fails it under CI=true.
func NewMariaDB(tb testing.TB, opts MariaDBOptions) *MariaDB {
	tb.Helper()
	return newServer(tb, opts, "")
}

// NewMariaDBOn is NewMariaDB on datadir, a datadir made elsewhere, such as
// a restored snapshot of a test server: the server runs with the options
// NewMariaDB's run with, but the datadir is neither initialised nor given
// accounts. It has the ones it holds, and root must log in without a
// password, as on every test server; PitrPassword is unknown ("").
// datadir is left in place when the test ends.
func NewMariaDBOn(tb testing.TB, opts MariaDBOptions, datadir string) *MariaDB {
	tb.Helper()
	return newServer(tb, opts, datadir)
}

func newServer(tb testing.TB, opts MariaDBOptions, datadir string) *MariaDB {
	tb.Helper()
	opts.Flavor.require(tb)
	m, err := start(opts, datadir)
	if err != nil {
		tb.Fatalf("start %s: %v", opts.Flavor, err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("mariadb error log (%s):\n%s", m.ErrorLog(), m.tail(40))
		}
		if err := m.Close(); err != nil {
			tb.Errorf("close mariadb: %v", err)
		}
	})
	return m
}

// StartMariaDB initialises a datadir in a new temporary directory and starts a
// server on it, returning once the server accepts connections. The caller
// must Close it.
func StartMariaDB(opts MariaDBOptions) (*MariaDB, error) { return start(opts, "") }

// start starts a server on datadir, or when it is "" on a new datadir it
// initialises and gives the flavor's accounts and PitrUser.
func start(opts MariaDBOptions, datadir string) (*MariaDB, error) {
	begin := time.Now()
	opts = opts.withDefaults()
	server := opts.Flavor.ServerProgram()
	if _, err := opts.Flavor.Program(server); err != nil {
		return nil, fmt.Errorf("find %s (%s): %w", server, opts.Flavor.installHint(), err)
	}
	// os.MkdirTemp rather than t.TempDir: the socket path must stay under the
	// 108-byte sun_path limit, which long test names would exceed.
	dir, err := os.MkdirTemp("", "mariadb-")
	if err != nil {
		return nil, fmt.Errorf("create mariadb directory: %w", err)
	}
	m := &MariaDB{opts: opts, dir: dir, datadir: datadir}
	if datadir == "" {
		if m.pitrPass, err = randomPassword(); err == nil {
			err = m.initialize()
		}
	} else {
		err = m.makeDirs()
	}
	if err == nil {
		err = m.firstStart()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if datadir == "" {
		err = m.setUp()
	} else {
		err = m.readVersion()
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	m.startTime = time.Since(begin)
	return m, nil
}

// readVersion records the running server's version.
func (m *MariaDB) readVersion() error {
	db, err := m.pool()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), mariaDBStartTimeout)
	defer cancel()
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.version); err != nil {
		return fmt.Errorf("read %s version: %w", m.opts.Flavor, err)
	}
	return nil
}

func randomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// firstStart picks a port and starts the server, picking another port when
// the first was taken between FreePort and the server binding it.
func (m *MariaDB) firstStart() error {
	var err error
	for range startAttempts {
		m.port, err = FreePort()
		if err != nil {
			return fmt.Errorf("pick mariadb port: %w", err)
		}
		err = m.Start()
		if err == nil || !strings.Contains(err.Error(), "Address already in use") {
			return err
		}
	}
	return err
}

// bootstrap creates PitrUser and records the version. sql_log_bin=0 keeps the
// setup out of the binlog, so archives and replays in tests hold only what
// the test wrote and a replay never resets another server's pitr password.
func (m *MariaDB) bootstrap() error {
	ctx, cancel := context.WithTimeout(context.Background(), mariaDBStartTimeout)
	defer cancel()
	// A private pool, closed afterwards: sql_log_bin=0 must not survive in
	// a connection that the shared pool would hand to a test.
	c, err := mysql.NewConnector(m.rootConfig())
	if err != nil {
		return fmt.Errorf("mariadb connector: %w", err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to mariadb: %w", err)
	}
	defer conn.Close()
	stmts := []string{
		"SET SESSION sql_log_bin = 0",
		// root@<hostname>, which install-db creates and --skip-name-resolve
		// ignores, is kept, as on a production server: snapshots and
		// restores must carry it.
		// The password is hex, so formatting it in is safe; prepared
		// CREATE USER with placeholders is not portable across versions.
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", PitrUser, m.pitrPass),
		fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'", pitrGrants, PitrUser),
		"FLUSH PRIVILEGES",
	}
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("bootstrap mariadb: %s: %w", firstWords(s), err)
		}
	}
	if err := conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.version); err != nil {
		return fmt.Errorf("read mariadb version: %w", err)
	}
	return nil
}

// firstWords keeps passwords out of error messages.
func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// launch is how the mysqld package initialises and starts the server:
// in its directory, on 127.0.0.1 at its port, with the flavor's options
// and no others (Bare).
func (m *MariaDB) launch() mysqld.Options {
	f := m.opts.Flavor
	return mysqld.Options{
		Flavor:   f.Family(),
		Programs: f.Programs(),
		Datadir:  m.DataDir(),
		RunDir:   m.dir,
		Port:     m.port,
		ServerID: m.opts.ServerID,
		Bare:     true,
		Args:     m.args(),
		InitArgs: m.initArgs(),
	}
}

// args are the server's options beyond the launcher's (files, port,
// server_id, user): the flavor's, then MaxBinlogSize, TLS and ExtraArgs.
func (m *MariaDB) args() []string {
	o := m.opts
	args := m.flavorArgs()
	if o.MaxBinlogSize > 0 {
		args = append(args, "--max-binlog-size="+strconv.FormatInt(o.MaxBinlogSize, 10))
	}
	if t := o.TLS; t != nil {
		args = append(args, "--ssl-ca="+t.CAFile, "--ssl-cert="+t.CertFile, "--ssl-key="+t.KeyFile)
		if t.RequireSecureTransport {
			args = append(args, "--require-secure-transport=ON")
		}
	}
	return append(args, o.ExtraArgs...)
}

// Start starts the server on its datadir and port, after Stop or Kill, and
// returns once it accepts connections.
func (m *MariaDB) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		if done, _ := m.srv.Exited(); !done {
			return errors.New("start mariadb: already running")
		}
	}
	srv, err := mysqld.Start(context.Background(), m.launch())
	if err != nil {
		return fmt.Errorf("start %s on port %d: %w", m.opts.Flavor, m.port, err)
	}
	m.srv = srv
	return nil
}

// Stop shuts the server down cleanly (SIGTERM, as a container runtime would)
// and waits for it to exit. Stopping a stopped server does nothing; a server
// that had already crashed is reported as an error.
func (m *MariaDB) Stop() error {
	return m.halt(false)
}

// Kill ends the server with SIGKILL, leaving the datadir as a crash would,
// and waits for it to exit.
func (m *MariaDB) Kill() error {
	return m.halt(true)
}

func (m *MariaDB) halt(kill bool) error {
	// The lock is held throughout so that a concurrent Start cannot race a
	// half-stopped server.
	m.mu.Lock()
	defer m.mu.Unlock()
	srv := m.srv
	if srv == nil {
		return nil
	}
	m.srv = nil
	// Idle connections are closed before the server goes too, so that
	// their goodbye does not meet a closed socket and get logged.
	m.dropIdle()
	defer m.dropIdle()
	if done, err := srv.Exited(); done {
		srv.Kill() // releases what is left: its connection pool
		if err != nil {
			return fmt.Errorf("%s had exited: %w\n%s", m.opts.Flavor, err, m.tail(20))
		}
		return nil
	}
	if kill {
		srv.Kill()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), mariaDBStopTimeout)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("stop %s: still running after %s, killed", m.opts.Flavor, mariaDBStopTimeout)
		}
		return fmt.Errorf("stop %s: %w", m.opts.Flavor, err)
	}
	return nil
}

// dropIdle closes the pool's idle connections, which a stopped server has
// broken, so that the driver does not log each one as it finds it dead. The
// pool itself stays open because tests may hold it across a restart.
func (m *MariaDB) dropIdle() {
	if m.db != nil {
		m.db.SetMaxIdleConns(0)
		m.db.SetMaxIdleConns(defaultMaxIdleConns)
	}
}

// defaultMaxIdleConns is database/sql's default, restored after dropIdle.
const defaultMaxIdleConns = 2

// Close kills the server, closes the pool and removes the directory. The
// datadir is thrown away, so a clean shutdown would only cost time.
func (m *MariaDB) Close() error {
	err := m.Kill()
	m.mu.Lock()
	if m.db != nil {
		m.db.Close()
		m.db = nil
	}
	m.mu.Unlock()
	if rmErr := os.RemoveAll(m.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove mariadb directory: %w", rmErr))
	}
	return err
}

func (m *MariaDB) config(user, pass string) *mysql.Config {
	c := mysql.NewConfig()
	c.User = user
	c.Passwd = pass
	c.Net = "tcp"
	c.Addr = "127.0.0.1:" + strconv.Itoa(m.port)
	return c
}

// rootConfig is the testbed's own root connection: over the unix socket
// for a server with TLS, which may refuse unencrypted TCP, and where the
// flavor needs it (see rootOverSocket); over TCP otherwise as before.
func (m *MariaDB) rootConfig() *mysql.Config {
	c := m.config("root", "")
	if m.opts.TLS != nil || m.opts.Flavor.rootOverSocket() {
		c.Net, c.Addr = "unix", m.Socket()
	}
	return c
}

// DSN is a go-sql-driver/mysql DSN for root, which has no password, over TCP:
// root@tcp(127.0.0.1:PORT)/.
func (m *MariaDB) DSN() string { return m.DSNFor("root", "") }

// DSNFor is a go-sql-driver/mysql DSN for the given account over TCP, with no
// default database.
func (m *MariaDB) DSNFor(user, pass string) string { return m.config(user, pass).FormatDSN() }

// PitrPassword is the random password of PitrUser on this server.
func (m *MariaDB) PitrPassword() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pitrPass
}

// SetPitrPassword changes PitrUser's password on the running server, for
// tests that plant a known secret (a canary) and look for it everywhere.
// The change is kept out of the binlog, so neither archives nor replays
// ever hold the password. pass may hold only ASCII letters, digits, '-'
// and '_', so that it needs no quoting.
func (m *MariaDB) SetPitrPassword(tb testing.TB, pass string) {
	tb.Helper()
	if pass == "" || strings.Trim(pass, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		tb.Fatal("SetPitrPassword: the password must be non-empty ASCII letters, digits, '-' and '_'")
	}
	// A private pool, as in bootstrap: sql_log_bin=0 must not reach a
	// connection of the shared pool.
	c, err := mysql.NewConnector(m.config("root", ""))
	if err != nil {
		tb.Fatalf("set pitr password: %v", err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	conn, err := db.Conn(tb.Context())
	if err != nil {
		tb.Fatalf("set pitr password: %v", err)
	}
	defer conn.Close()
	for _, s := range []string{
		"SET SESSION sql_log_bin = 0",
		fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", PitrUser, pass),
	} {
		if _, err := conn.ExecContext(tb.Context(), s); err != nil {
			tb.Fatalf("set pitr password: %s: %v", firstWords(s), err)
		}
	}
	m.mu.Lock()
	m.pitrPass = pass
	m.mu.Unlock()
}

// PitrDSN is DSNFor(PitrUser, PitrPassword()).
func (m *MariaDB) PitrDSN() string { return m.DSNFor(PitrUser, m.PitrPassword()) }

// Port is the TCP port on 127.0.0.1; it stays the same across restarts.
func (m *MariaDB) Port() int { return m.port }

// Socket is the path of the server's Unix socket.
func (m *MariaDB) Socket() string { return filepath.Join(m.dir, "mysqld.sock") }

// DataDir is the server's datadir.
func (m *MariaDB) DataDir() string {
	if m.datadir != "" {
		return m.datadir
	}
	return filepath.Join(m.dir, "data")
}

// BinlogDir is the directory that holds the binlog files and their index:
// for MariaDB 10.11 kept apart from the datadir, as in many deployments;
// for the other flavors the datadir, as the chart and MySQL's defaults
// have it.
func (m *MariaDB) BinlogDir() string {
	if m.opts.Flavor.binlogInDatadir() {
		return m.DataDir()
	}
	return filepath.Join(m.dir, "binlog")
}

// tmpDir is private to the server because temporary table names are only
// unique within one server: parallel installs sharing /tmp collide.
func (m *MariaDB) tmpDir() string { return filepath.Join(m.dir, "tmp") }

// ErrorLog is the path of the server's error log.
func (m *MariaDB) ErrorLog() string { return filepath.Join(m.dir, "error.log") }

// Version is SELECT VERSION() as read when the server was first started, for
// example "10.11.19-MariaDB-0+deb12u1-log" or "9.7.4-2".
func (m *MariaDB) Version() string { return m.version }

// StartupTime is how long StartMariaDB took, from creating the datadir to
// the server being ready with its users.
func (m *MariaDB) StartupTime() time.Duration { return m.startTime }

// Options are the options the server runs with, defaults filled in.
func (m *MariaDB) Options() MariaDBOptions { return m.opts }

// Flavor is the server's flavor.
func (m *MariaDB) Flavor() Flavor { return m.opts.Flavor }

// pool returns the cached root pool. database/sql drops connections that a
// Stop or Kill broke, so the pool survives restarts.
func (m *MariaDB) pool() (*sql.DB, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		c, err := mysql.NewConnector(m.rootConfig())
		if err != nil {
			return nil, fmt.Errorf("mariadb connector: %w", err)
		}
		m.db = sql.OpenDB(c)
	}
	return m.db, nil
}

// DB is a pool of root connections, shared by every caller and closed by
// Close, so callers must not close it.
func (m *MariaDB) DB(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := m.pool()
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

// Exec runs a statement as root and fails the test on error.
func (m *MariaDB) Exec(tb testing.TB, query string, args ...any) sql.Result {
	tb.Helper()
	res, err := m.DB(tb).ExecContext(tb.Context(), query, args...)
	if err != nil {
		tb.Fatalf("exec %q: %v", query, err)
	}
	return res
}

// BinlogFiles lists the server's binlog files, oldest first, as full paths,
// from SHOW BINARY LOGS. It fails the test if binary logging is off.
func (m *MariaDB) BinlogFiles(tb testing.TB) []string {
	tb.Helper()
	rows, err := m.DB(tb).QueryContext(tb.Context(), "SHOW BINARY LOGS")
	if err != nil {
		tb.Fatalf("show binary logs: %v", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		tb.Fatalf("show binary logs: %v", err)
	}
	var files []string
	for rows.Next() {
		// The column count differs between versions (MySQL adds Encrypted).
		vals := make([]any, len(cols))
		var name string
		vals[0] = &name
		for i := 1; i < len(vals); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			tb.Fatalf("show binary logs: %v", err)
		}
		files = append(files, filepath.Join(m.BinlogDir(), name))
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("show binary logs: %v", err)
	}
	return files
}

// tail returns the last n lines of the console and error logs.
func (m *MariaDB) tail(n int) string { return mysqld.Logs(m.dir, n, "\n") }

// The package servers: one per flavor and test binary, each started by the
// first test that asks for it and stopped after all tests ran.
var pkgMariaDB struct {
	mu      sync.Mutex
	enabled bool
	opts    MariaDBOptions
	m       map[Flavor]*MariaDB
	err     map[Flavor]error
}

// RunWithMariaDB runs the tests (m.Run) with a package server available via
// PackageMariaDB (and PackageServer) and stops it afterwards. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testbed.RunWithMariaDB(m, testbed.MariaDBOptions{})) }
//
// The server starts lazily, so a run that selects no test needing it starts
// nothing, and a missing binary skips or fails only the tests that need it.
// m is any Run() int, so that another wrapper can be passed in its place.
func RunWithMariaDB(m interface{ Run() int }, opts MariaDBOptions) int {
	pkgMariaDB.mu.Lock()
	pkgMariaDB.enabled, pkgMariaDB.opts = true, opts
	pkgMariaDB.m, pkgMariaDB.err = map[Flavor]*MariaDB{}, map[Flavor]error{}
	pkgMariaDB.mu.Unlock()

	code := m.Run()

	pkgMariaDB.mu.Lock()
	defer pkgMariaDB.mu.Unlock()
	for f, srv := range pkgMariaDB.m {
		if err := srv.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "testbed: close package %s: %v\n", f, err)
		}
	}
	pkgMariaDB.m, pkgMariaDB.err = nil, nil
	pkgMariaDB.enabled = false
	return code
}

// PackageMariaDB returns the package's shared server, starting it on first
// use. Tests sharing it must not Stop or Kill it and should keep to their own
// databases; use NewMariaDB for a private server. It fails the test if the
// package's TestMain does not call RunWithMariaDB, since nothing would stop
// the server.
func PackageMariaDB(tb testing.TB) *MariaDB {
	tb.Helper()
	pkgMariaDB.mu.Lock()
	f := pkgMariaDB.opts.Flavor
	pkgMariaDB.mu.Unlock()
	return PackageServer(tb, f)
}

// PackageServer is PackageMariaDB for a flavor: the package's shared server
// of that flavor, with the options TestMain gave RunWithMariaDB but f's
// flavor, for tests that run against each of Servers.
func PackageServer(tb testing.TB, f Flavor) *MariaDB {
	tb.Helper()
	f.require(tb)
	pkgMariaDB.mu.Lock()
	defer pkgMariaDB.mu.Unlock()
	if !pkgMariaDB.enabled {
		tb.Fatal("testbed.PackageMariaDB needs TestMain to call testbed.RunWithMariaDB")
	}
	if pkgMariaDB.m[f] == nil && pkgMariaDB.err[f] == nil {
		opts := pkgMariaDB.opts
		opts.Flavor = f
		pkgMariaDB.m[f], pkgMariaDB.err[f] = StartMariaDB(opts)
	}
	if err := pkgMariaDB.err[f]; err != nil {
		// Every later test fails with the same cause instead of each paying
		// for another start that would fail the same way.
		tb.Fatalf("start package %s: %v", f, err)
	}
	return pkgMariaDB.m[f]
}
