package testbed

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// Every difference between the servers the test bed starts is decided in
// this file: where their programs come from, how a datadir is initialised,
// the options a server runs with and the accounts it has. Each is started as
// its official Docker image starts it (GTIDs on, --skip-name-resolve, the
// image's install and accounts, the server's own TLS certificate), with the
// binlog on as the chart has it and the test bed's sizes and speed-ups.

// Flavor is a server release the test bed can start.
type Flavor int

// Flavors.
const (
	// MariaDB1011 is MariaDB 10.11 from the host's Debian 12 packages; the
	// zero value, and what the test bed started before it knew others.
	MariaDB1011 Flavor = iota
	// MariaDB118 is MariaDB 11.8 from the server root scripts/setup.sh
	// builds from Debian trixie.
	MariaDB118
	// MySQL97 is MySQL 9.7 from the server root scripts/setup.sh builds
	// from Debian sid.
	MySQL97
)

// Flavors lists every flavor.
var Flavors = []Flavor{MariaDB1011, MariaDB118, MySQL97}

// flavorSpec is what differs between flavors in where things are.
type flavorSpec struct {
	// name is how MYSQL_PITR_TEST_SERVERS names the flavor.
	name string
	// family is "mariadb" or "mysql".
	family string
	// root is the server root's directory under RootsDir; "" for the
	// host's packages.
	root string
	// server, client and binlogTool are program names; install is the
	// datadir initialiser, "" where the server initialises it itself.
	server, client, binlogTool, install string
}

var flavorSpecs = map[Flavor]flavorSpec{
	MariaDB1011: {name: "mariadb-10.11", family: "mariadb",
		server: "mariadbd", client: "mariadb", binlogTool: "mariadb-binlog", install: "mariadb-install-db"},
	MariaDB118: {name: "mariadb-11.8", family: "mariadb", root: "mariadb-11.8",
		server: "mariadbd", client: "mariadb", binlogTool: "mariadb-binlog", install: "mariadb-install-db"},
	MySQL97: {name: "mysql-9.7", family: "mysql", root: "mysql-9.7",
		server: "mysqld", client: "mysql", binlogTool: "mysqlbinlog"},
}

func (f Flavor) spec() (flavorSpec, error) {
	s, ok := flavorSpecs[f]
	if !ok {
		return flavorSpec{}, fmt.Errorf("unknown server flavor %d", int(f))
	}
	return s, nil
}

// String is the flavor's name: mariadb-10.11, mariadb-11.8 or mysql-9.7.
func (f Flavor) String() string {
	if s, err := f.spec(); err == nil {
		return s.name
	}
	return fmt.Sprintf("flavor(%d)", int(f))
}

// ParseFlavor reads a flavor's name as String prints it.
func ParseFlavor(name string) (Flavor, error) {
	for _, f := range Flavors {
		if f.String() == name {
			return f, nil
		}
	}
	names := make([]string, len(Flavors))
	for i, f := range Flavors {
		names[i] = f.String()
	}
	return 0, fmt.Errorf("unknown server %q: want one of %s", name, strings.Join(names, ", "))
}

// Family is "mariadb" or "mysql", the values of binlog.Flavor and the
// mysqld package's flavors.
func (f Flavor) Family() string {
	s, _ := f.spec()
	return s.family
}

// MySQL reports whether the flavor is a MySQL release.
func (f Flavor) MySQL() bool { return f.Family() == "mysql" }

// ServerProgram, ClientProgram and BinlogTool name the flavor's server,
// command-line client and binlog reader (mysqld, mysql, mysqlbinlog or
// mariadbd, mariadb, mariadb-binlog); Program finds them.
func (f Flavor) ServerProgram() string { s, _ := f.spec(); return s.server }

// ClientProgram names the flavor's command-line client; see ServerProgram.
func (f Flavor) ClientProgram() string { s, _ := f.spec(); return s.client }

// BinlogTool names the flavor's binlog reader; see ServerProgram.
func (f Flavor) BinlogTool() string { s, _ := f.spec(); return s.binlogTool }

// RootsEnv names the environment variable that overrides DefaultRootsDir,
// read by both scripts/setup.sh and the test bed.
const RootsEnv = "MYSQL_PITR_ROOTS"

// DefaultRootsDir is where scripts/setup.sh builds the server roots.
const DefaultRootsDir = "/var/cache/mysql-pitr/roots"

// RootsDir is the directory of the server roots: $MYSQL_PITR_ROOTS, or
// DefaultRootsDir.
func RootsDir() string {
	if d := os.Getenv(RootsEnv); d != "" {
		return d
	}
	return DefaultRootsDir
}

// BinDir is the directory of the flavor's programs: its server root's
// wrappers, which run the root's programs as if they were installed, so
// putting BinDir first on PATH makes code that looks programs up by name use
// them. It is "" for MariaDB1011, whose programs are the host's.
func (f Flavor) BinDir() string {
	s, err := f.spec()
	if err != nil || s.root == "" {
		return ""
	}
	return filepath.Join(RootsDir(), s.root, ".bin")
}

// Programs is the finder mysql-pitr is given for the flavor's programs, as
// an operator gives it --server-bindir: BinDir alone, or PATH and the sbin
// directories for MariaDB1011.
func (f Flavor) Programs() programs.Finder { return programs.Finder{Dir: f.BinDir()} }

// installHint says how to get the flavor's programs.
func (f Flavor) installHint() string {
	s, err := f.spec()
	if err != nil || s.root == "" {
		return MariaDBInstall
	}
	return fmt.Sprintf("scripts/setup.sh, which builds the server root %s", filepath.Join(RootsDir(), s.root))
}

// Program returns the path of one of the flavor's programs (mysqld,
// mysqlbinlog, mariadb-backup, …): in BinDir, or for MariaDB1011 on PATH
// and in the sbin directories.
func (f Flavor) Program(name string) (string, error) {
	s, err := f.spec()
	if err != nil {
		return "", err
	}
	if s.root == "" {
		return LookBinary(name)
	}
	p, err := f.Programs().Look(name)
	if err != nil {
		return "", fmt.Errorf("%s is missing or not executable", filepath.Join(f.BinDir(), name))
	}
	return p, nil
}

// Binary returns the path of one of the flavor's programs. When it is
// missing the test fails under CI and is skipped elsewhere, naming how to
// get it.
func (f Flavor) Binary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := f.Program(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s %s not found: %v; run %s", f, name, err, f.installHint())
	if InCI() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// require skips or fails the test unless the flavor's server can be
// started. MariaDB1011's check is the one the test bed always made.
func (f Flavor) require(tb testing.TB) {
	tb.Helper()
	s, err := f.spec()
	if err != nil {
		tb.Fatal(err)
	}
	if s.root == "" {
		Binary(tb, "mariadbd", MariaDBInstall)
		Binary(tb, "mariadb-install-db", MariaDBInstall)
		return
	}
	f.Binary(tb, s.server)
	if s.install != "" {
		f.Binary(tb, s.install)
	}
}

// ServersEnv names the environment variable that chooses the servers for
// Servers.
const ServersEnv = "MYSQL_PITR_TEST_SERVERS"

// Servers returns the flavors a test that runs against several servers runs
// against: those MYSQL_PITR_TEST_SERVERS names, comma-separated
// ("mariadb-10.11,mysql-9.7"), or every flavor for "all"; MariaDB1011 alone
// when it is unset. An unknown name fails the test. Whether a flavor is
// there is checked when its server starts, so a missing one skips (or under
// CI fails) only the subtests that use it:
//
//	for _, f := range testbed.Servers(t) {
//		t.Run(f.String(), func(t *testing.T) {
//			m := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
//			…
//		})
//	}
func Servers(tb testing.TB) []Flavor {
	tb.Helper()
	fs, err := parseServers(os.Getenv(ServersEnv))
	if err != nil {
		tb.Fatalf("%s: %v", ServersEnv, err)
	}
	return fs
}

// ServersAmong is Servers limited to among, in Servers' order: for a suite
// that runs on some releases only, because on the others it would cost
// more time than it proves. When none of among is selected the test is
// skipped, naming them.
//
//	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
//		t.Run(f.String(), func(t *testing.T) { … })
//	}
func ServersAmong(tb testing.TB, among ...Flavor) []Flavor {
	tb.Helper()
	fs := selectAmong(Servers(tb), among)
	if len(fs) == 0 {
		names := make([]string, len(among))
		for i, f := range among {
			names[i] = f.String()
		}
		tb.Skipf("runs on %s only, and %s=%q selects none of them", strings.Join(names, ", "), ServersEnv, os.Getenv(ServersEnv))
	}
	return fs
}

func selectAmong(selected, among []Flavor) []Flavor {
	var fs []Flavor
	for _, f := range selected {
		if slices.Contains(among, f) {
			fs = append(fs, f)
		}
	}
	return fs
}

func parseServers(v string) ([]Flavor, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "":
		return []Flavor{MariaDB1011}, nil
	case "all":
		return append([]Flavor(nil), Flavors...), nil
	}
	var fs []Flavor
	for _, name := range strings.Split(v, ",") {
		f, err := ParseFlavor(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	return fs, nil
}

// mysqlPitrGrants are PitrUser's privileges on MySQL: what `mysql-pitr
// grants --flavor mysql --role streamer,logical,physical` prints (a test
// keeps them equal). pitrGrants are MariaDB's.
const mysqlPitrGrants = "REPLICATION SLAVE, REPLICATION CLIENT, SELECT, SHOW VIEW, TRIGGER, EVENT, BACKUP_ADMIN, RELOAD, PROCESS"

// initialize makes the server's datadir as the flavor's official image does.
func (m *MariaDB) initialize() error {
	if err := m.makeDirs(); err != nil {
		return err
	}
	if err := mysqld.Init(context.Background(), m.launch()); err != nil {
		return fmt.Errorf("%s: %w", m.opts.Flavor, err)
	}
	return nil
}

// makeDirs creates the directories the server's options name.
func (m *MariaDB) makeDirs() error {
	dirs := []string{m.BinlogDir(), m.tmpDir()}
	if m.opts.Flavor.MySQL() {
		// secure_file_priv's directory must exist before any start.
		dirs = append(dirs, m.filesDir())
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s directory: %w", m.opts.Flavor, err)
		}
	}
	return nil
}

// initArgs are the options of the flavor's datadir initialisation beyond
// the launcher's (see mysqld.Init with Bare): on MySQL those of the
// image's docker_init_database_dir beyond the server's own, which
// --initialize-insecure follows (root@localhost without a password, and
// the server's TLS certificate and key pair); on MariaDB those of
// mariadb-install-db.
func (m *MariaDB) initArgs() []string {
	switch m.opts.Flavor {
	case MariaDB1011:
		return []string{
			"--auth-root-authentication-method=normal",
			"--skip-test-db",
			"--skip-name-resolve",
			"--innodb-log-file-size=64M",
			"--innodb-buffer-pool-size=128M",
		}
	case MySQL97:
		return []string{"--default-time-zone=SYSTEM"}
	}
	// The image's docker_init_database_dir, word for word, but for
	// --no-defaults (first, as it must be), the directories, and the
	// test bed's InnoDB sizes that every start uses too.
	return []string{
		"--rpm",
		"--auth-root-authentication-method=normal",
		"--cross-bootstrap",
		"--skip-test-db",
		"--old-mode=UTF8_IS_UTF8MB3",
		"--default-time-zone=SYSTEM",
		"--enforce-storage-engine=",
		"--skip-log-bin",
		"--expire-logs-days=0",
		"--loose-innodb_buffer_pool_load_at_startup=0",
		"--loose-innodb_buffer_pool_dump_at_shutdown=0",
		"--innodb-log-file-size=64M",
		"--innodb-buffer-pool-size=128M",
	}
}

// flavorArgs are the server options that differ between flavors, after
// the common ones and before MaxBinlogSize, TLS and ExtraArgs.
func (m *MariaDB) flavorArgs() []string {
	o := m.opts
	switch o.Flavor {
	case MariaDB1011:
		args := []string{
			"--binlog-format=" + o.BinlogFormat,
			"--binlog-checksum=" + o.BinlogChecksum,
			"--gtid-strict-mode=ON",
			"--innodb-buffer-pool-size=128M",
			"--innodb-log-file-size=64M",
			"--skip-name-resolve",
			"--max-allowed-packet=1G",
			// Production servers (Debian's config, the official images) default
			// to utf8mb4; --no-defaults would leave latin1.
			"--character-set-server=utf8mb4",
			"--collation-server=utf8mb4_general_ci",
			// Durability is traded for speed: a test server's crash safety is
			// tested with Kill, which the OS page cache survives.
			"--innodb-flush-log-at-trx-commit=2",
			"--sync-binlog=0",
		}
		if !o.NoBinlog {
			args = append(args,
				"--log-bin="+filepath.Join(m.BinlogDir(), "mysql-bin"),
				"--log-slave-updates",
			)
		}
		return args
	case MySQL97:
		args := []string{
			"--binlog-checksum=" + o.BinlogChecksum,
			"--gtid-mode=ON",
			"--enforce-gtid-consistency=ON",
			"--innodb-buffer-pool-size=128M",
			// The image's my.cnf has skip-name-resolve and a
			// secure_file_priv directory of its own.
			"--skip-name-resolve",
			"--secure-file-priv=" + m.filesDir(),
			"--max-allowed-packet=1G",
			"--innodb-flush-log-at-trx-commit=2",
			"--sync-binlog=0",
			// The X Protocol listener (33060 and /tmp/mysqlx.sock in the
			// image) would clash between servers, and nothing here uses it.
			"--mysqlx=OFF",
		}
		// ROW is the default, and naming binlog_format at all is
		// deprecated since 8.0.34.
		if o.BinlogFormat != DefaultBinlogFormat {
			args = append(args, "--binlog-format="+o.BinlogFormat)
		}
		// The binlog is on by default, as binlog.NNNNNN in the datadir,
		// as in the image and the chart (log_bin = binlog).
		if o.NoBinlog {
			args = append(args, "--skip-log-bin")
		}
		return args
	}
	// MariaDB 11.8: the character set is left at the server's default
	// (utf8mb4 since 11.6); the binlog is named and placed as the chart
	// has it (log_bin = binlog, in the datadir).
	args := []string{
		"--binlog-format=" + o.BinlogFormat,
		"--binlog-checksum=" + o.BinlogChecksum,
		"--gtid-strict-mode=ON",
		"--innodb-buffer-pool-size=128M",
		"--innodb-log-file-size=64M",
		"--skip-name-resolve",
		"--max-allowed-packet=1G",
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
	}
	if !o.NoBinlog {
		args = append(args, "--log-bin=binlog", "--log-slave-updates")
	}
	return args
}

// binlogInDatadir reports whether the flavor keeps its binlog in the
// datadir, as the chart and MySQL's default have it; MariaDB1011 keeps it
// apart, as the test bed always did.
func (f Flavor) binlogInDatadir() bool { return f != MariaDB1011 }

// rootOverSocket reports whether the test bed's own root connections use
// the unix socket: on MySQL the only root account before setUp is
// root@localhost, which --skip-name-resolve never matches over TCP (the
// image's entrypoint too makes root@'%' over the socket).
func (f Flavor) rootOverSocket() bool { return f.MySQL() }

// filesDir is MySQL's secure_file_priv directory.
func (m *MariaDB) filesDir() string { return filepath.Join(m.dir, "files") }

// setUp makes the accounts once the server first runs: the image
// entrypoint's on MySQL, then PitrUser, and records the version.
// MariaDB1011 keeps its own bootstrap.
func (m *MariaDB) setUp() error {
	if m.opts.Flavor == MariaDB1011 {
		return m.bootstrap()
	}
	ctx, cancel := context.WithTimeout(context.Background(), mariaDBStartTimeout)
	defer cancel()
	// A private pool, closed afterwards: sql_log_bin=0 must not survive in
	// a connection that the shared pool would hand to a test. It keeps
	// the setup out of the binlog, as the images keep theirs.
	c, err := mysql.NewConnector(m.rootConfig())
	if err != nil {
		return fmt.Errorf("%s connector: %w", m.opts.Flavor, err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", m.opts.Flavor, err)
	}
	defer conn.Close()
	stmts := []string{"SET SESSION sql_log_bin = 0"}
	grants := pitrGrants
	if m.opts.Flavor.MySQL() {
		// docker_setup_db with MYSQL_ALLOW_EMPTY_PASSWORD and
		// MYSQL_ROOT_HOST's default, '%'. The MariaDB image's own
		// changes to root are not made: the accounts are the ones
		// mariadb-install-db makes.
		stmts = append(stmts,
			"ALTER USER 'root'@'localhost' IDENTIFIED BY ''",
			"GRANT ALL ON *.* TO 'root'@'localhost' WITH GRANT OPTION",
			"FLUSH PRIVILEGES",
			"CREATE USER 'root'@'%' IDENTIFIED BY ''",
			"GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION",
			"DROP DATABASE IF EXISTS test",
			// Physical snapshots clone with the clone plugin, which the
			// chart loads for them; an administrator installs it once.
			"INSTALL PLUGIN clone SONAME 'mysql_clone.so'",
		)
		grants = mysqlPitrGrants
	}
	stmts = append(stmts,
		// The password is hex, so formatting it in is safe.
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", PitrUser, m.pitrPass),
		fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'", grants, PitrUser),
	)
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("set up %s: %s: %w", m.opts.Flavor, firstWords(s), err)
		}
	}
	if err := conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.version); err != nil {
		return fmt.Errorf("read %s version: %w", m.opts.Flavor, err)
	}
	return nil
}
