// Package mysqld runs the temporary servers a restore needs: it initializes
// a datadir and starts a server on it that listens only on a private Unix
// socket, then shuts it down cleanly. The flavor differences (MariaDB's
// mariadbd and mariadb-install-db, MySQL's mysqld --initialize-insecure,
// the options each needs) are decided here; the programs come from the
// finder in Options.Programs and must be of the datadir's release.
package mysqld

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// Flavors.
const (
	MariaDB = "mariadb"
	MySQL   = "mysql"
)

// ErrNotInstalled is returned (wrapped) when the server programs are
// missing; the message names what was looked for and where.
var ErrNotInstalled = programs.ErrNotFound

// ErrRelease is returned (wrapped) when the server program is of another
// major.minor release than the datadir it would run on.
var ErrRelease = errors.New("server program of another release")

// ErrDotDatadir is returned (wrapped) for a MySQL datadir whose name starts
// with a dot: MySQL initialises it but then fails to start on it ("Can't
// create UNDO tablespace innodb_undo_001 since './undo_001' already
// exists"), wherever it lies and however it got its name.
var ErrDotDatadir = errors.New("MySQL cannot run on a datadir whose name starts with a dot")

// server finds the flavor's server program and checks its release.
func server(ctx context.Context, opts Options) (programs.Program, error) {
	p, err := opts.Programs.Find(ctx, opts.Flavor, programs.Server)
	if err != nil {
		return p, err
	}
	if err := checkRelease(p, opts.Release); err != nil {
		return p, err
	}
	return p, nil
}

// checkRelease refuses a program of another major.minor release than
// release, when both are known: a datadir one release made is not for
// another (MySQL refuses a downgrade outright, and InnoDB's formats change
// between releases), and a server older than the binlog it replays may not
// know its events.
func checkRelease(p programs.Program, release string) error {
	if release == "" || p.Version == "" {
		return nil
	}
	wm, wn, ok1 := programs.MajorMinor(release)
	gm, gn, ok2 := programs.MajorMinor(p.Version)
	if !ok1 || !ok2 || wm == gm && wn == gn {
		return nil
	}
	return fmt.Errorf("%w: %s is %s, the datadir is for %s %d.%d: name the directory of the %d.%d programs with --server-bindir or %s",
		ErrRelease, p.Path, p.Version, release, wm, wn, wm, wn, programs.EnvDir)
}

// checkDatadir refuses what the flavor cannot run on ("" is not known yet).
func checkDatadir(flavor, datadir string) error {
	if flavor == MySQL && datadir != "" && strings.HasPrefix(filepath.Base(filepath.Clean(datadir)), ".") {
		return fmt.Errorf("%w: %s", ErrDotDatadir, datadir)
	}
	return nil
}

// Check finds the programs Start, and with init Init, would run, and checks
// the datadir's name and the server's release (see Options.Release), so
// that a caller can refuse before it does any work. It runs nothing but the
// server's --version.
func Check(ctx context.Context, opts Options, init bool) error {
	if err := checkDatadir(opts.Flavor, opts.Datadir); err != nil {
		return err
	}
	if _, err := server(ctx, opts); err != nil {
		return err
	}
	if init && opts.Flavor == MariaDB {
		if _, err := opts.Programs.Find(ctx, MariaDB, programs.Install); err != nil {
			return err
		}
	}
	return nil
}

// Init creates a fresh datadir at opts.Datadir with the same InnoDB
// settings Start gives the server: root@localhost without a password,
// reachable only through the socket of a server started by Start.
func Init(ctx context.Context, opts Options) error {
	datadir := opts.Datadir
	if err := checkDatadir(opts.Flavor, datadir); err != nil {
		return err
	}
	// MariaDB's install script runs the server of its own installation,
	// which the finder's Dir or PATH puts beside it; its release is checked
	// through the server the finder gives.
	bin, err := server(ctx, opts)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(datadir, 0o750); err != nil {
		return fmt.Errorf("create datadir: %w", err)
	}
	// The bootstrap's temporary tables go in a directory of its own: any
	// server starting with the default tmpdir deletes every #sql file in
	// /tmp, a running bootstrap's included, which then fails.
	tmp, err := os.MkdirTemp("", "mysqld-init-")
	if err != nil {
		return fmt.Errorf("initialize datadir %s: %w", datadir, err)
	}
	defer os.RemoveAll(tmp)
	files := filepath.Join(tmp, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		return fmt.Errorf("initialize datadir %s: %w", datadir, err)
	}
	var cmd *exec.Cmd
	switch opts.Flavor {
	case MySQL:
		args := []string{"--no-defaults", "--initialize-insecure", "--datadir=" + datadir, "--tmpdir=" + tmp,
			"--secure-file-priv=" + files, "--skip-log-bin"}
		args = append(args, memoryArgs(opts.Flavor, opts.BufferPool)...)
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		cmd = exec.CommandContext(ctx, bin.Path, args...)
	default:
		install, err := opts.Programs.Find(ctx, MariaDB, programs.Install)
		if err != nil {
			return err
		}
		args := []string{"--no-defaults", "--datadir=" + datadir, "--auth-root-authentication-method=normal",
			"--skip-test-db", "--skip-name-resolve", "--tmpdir=" + tmp, "--secure-file-priv=" + files}
		args = append(args, memoryArgs(opts.Flavor, opts.BufferPool)...)
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		cmd = exec.CommandContext(ctx, install.Path, args...)
	}
	cmd.Env = childenv.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initialize datadir %s: %w: %s", datadir, err, errorLines(out, 10))
	}
	return nil
}

// Options configure a temporary server.
type Options struct {
	Flavor  string
	Datadir string
	// RunDir holds the socket, pid file, error log and tmpdir; keep it short
	// (a socket path is limited to 107 bytes).
	RunDir string
	// TmpDir, when set, is the server's tmpdir instead of one in RunDir:
	// where it sorts what does not fit in memory, such as the secondary
	// indexes of a table loaded in bulk, which can be as large as they.
	TmpDir string
	// ServerID must differ from the server whose binlog is replayed, or the
	// server would skip those events as its own.
	ServerID uint32
	// SkipGrants starts without privilege checks, for a datadir whose
	// accounts are unknown (a physical backup). Only the socket is open.
	SkipGrants bool
	// BufferPool is the InnoDB buffer pool size in bytes; 0 leaves the
	// server's default (128 MiB), which makes loading and replaying
	// anything larger than it read and write the same pages again and
	// again. The redo log is sized with it where the flavor allows.
	BufferPool int64
	// Release, when set, is the server release the datadir is for (a
	// snapshot's server version): a server program of another major.minor
	// release is refused (ErrRelease).
	Release string
	// Programs finds the server programs.
	Programs programs.Finder
	// Args are appended to the server's command line.
	Args   []string
	Logger *slog.Logger
}

// Server is a running temporary server.
type Server struct {
	opts Options
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
	db   *sql.DB
}

// Start starts the server and waits until it accepts connections on its socket.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := checkDatadir(opts.Flavor, opts.Datadir); err != nil {
		return nil, err
	}
	bin, err := server(ctx, opts)
	if err != nil {
		return nil, err
	}
	if opts.ServerID == 0 {
		opts.ServerID = 4294967000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tmp := opts.TmpDir
	if tmp == "" {
		tmp = filepath.Join(opts.RunDir, "tmp")
	}
	if err := os.MkdirAll(opts.RunDir, 0o750); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return nil, fmt.Errorf("create tmpdir: %w", err)
	}
	// A secure_file_priv directory of its own: nothing the server reads or
	// writes as files (LOAD DATA LOCAL streams from the client) depends on
	// what an installation or image happens to have (MySQL's compiled-in
	// /var/lib/mysql-files, which it refuses to start without).
	files := filepath.Join(opts.RunDir, "files")
	if err := os.MkdirAll(files, 0o700); err != nil {
		return nil, fmt.Errorf("create secure_file_priv directory: %w", err)
	}
	args := []string{
		"--no-defaults",
		"--datadir=" + opts.Datadir,
		"--socket=" + filepath.Join(opts.RunDir, "mysqld.sock"),
		"--pid-file=" + filepath.Join(opts.RunDir, "mysqld.pid"),
		"--log-error=" + filepath.Join(opts.RunDir, "error.log"),
		"--tmpdir=" + tmp,
		// Relay logs of a replay stay out of the datadir: MySQL's RESET
		// REPLICA ALL starts an empty one for the default channel.
		"--relay-log=" + filepath.Join(opts.RunDir, "relay-bin"),
		"--skip-networking",
		"--secure-file-priv=" + files,
		// A logical snapshot loads with LOAD DATA LOCAL, which MySQL 8.0
		// and later refuse by default.
		"--local-infile=ON",
		"--server-id=" + strconv.FormatUint(uint64(opts.ServerID), 10),
		skipReplicaStart(opts.Flavor, bin.Version),
		"--max-allowed-packet=1G",
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
	}
	if opts.Flavor == MySQL {
		// ON_PERMISSIVE takes replicated transactions with a GTID or
		// without, as the replayed source wrote them (and reports
		// itself compatible with a source in any mode but OFF); the
		// binlog is off, so it never makes GTIDs of its own.
		args = append(args, "--skip-log-bin", "--mysqlx=OFF", "--gtid-mode=ON_PERMISSIVE")
	}
	if opts.SkipGrants {
		args = append(args, "--skip-grant-tables")
	}
	args = append(args, memoryArgs(opts.Flavor, opts.BufferPool)...)
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, opts.Args...)
	cmd := exec.Command(bin.Path, args...)
	cmd.Env = childenv.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin.Path, err)
	}
	s := &Server{opts: opts, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
	}()
	cfg := s.Config()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		s.kill()
		return nil, err
	}
	s.db = sql.OpenDB(conn)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.db.PingContext(pctx)
		cancel()
		if err == nil {
			opts.Logger.Debug("temporary server ready", "socket", cfg.Addr)
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("temporary server exited during start: %s", s.ErrorLog(20))
		case <-ctx.Done():
			s.kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return nil, fmt.Errorf("temporary server did not accept connections in 2m: %s", s.ErrorLog(20))
		}
	}
}

// Config returns the connection settings: root over the private socket.
func (s *Server) Config() *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = filepath.Join(s.opts.RunDir, "mysqld.sock")
	cfg.AllowNativePasswords = true
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	return cfg
}

// Socket is the server's Unix socket.
func (s *Server) Socket() string { return filepath.Join(s.opts.RunDir, "mysqld.sock") }

// DB returns a connection pool to the server.
func (s *Server) DB() *sql.DB { return s.db }

// ErrorLog returns the last n lines of the server's error log.
func (s *Server) ErrorLog(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.opts.RunDir, "error.log"))
	return lastLines(b, n)
}

// Stop shuts the server down cleanly and waits for it to exit.
func (s *Server) Stop(ctx context.Context) error {
	s.db.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-ctx.Done():
		s.kill()
		return ctx.Err()
	case <-time.After(10 * time.Minute):
		s.kill()
		return errors.New("temporary server did not shut down in 10m")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("temporary server shutdown: %w: %s", s.err, s.ErrorLog(10))
	}
	return nil
}

func (s *Server) kill() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// skipReplicaStart is the option that keeps replication from starting on
// its own: --skip-replica-start on MySQL 8.0.26 and later, which deprecated
// --skip-slave-start, MariaDB's spelling.
func skipReplicaStart(flavor, version string) string {
	if flavor != MySQL {
		return "--skip-slave-start"
	}
	major, minor, ok := programs.MajorMinor(version)
	if ok && (major < 8 || major == 8 && minor == 0 && patchOf(version) < 26) {
		return "--skip-slave-start"
	}
	return "--skip-replica-start"
}

// patchOf returns 26 of "8.0.26-log"; 0 when there is none.
func patchOf(version string) int {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 3 {
		return 0
	}
	end := strings.IndexFunc(parts[2], func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(parts[2])
	}
	n, _ := strconv.Atoi(parts[2][:end])
	return n
}

// memoryArgs size the buffer pool and, on MariaDB, the redo log: half the
// pool, at least 256 MiB, so that checkpoints do not throttle a bulk load.
// MySQL sizes its redo log with innodb_redo_log_capacity from 8.0.30 on and
// innodb_log_file_size before; its default is left alone rather than guess
// the version.
func memoryArgs(flavor string, pool int64) []string {
	if pool <= 0 {
		return nil
	}
	args := []string{"--innodb-buffer-pool-size=" + strconv.FormatInt(pool, 10)}
	if flavor == MariaDB {
		args = append(args, "--innodb-log-file-size="+strconv.FormatInt(max(pool/2, 256<<20), 10))
	}
	return args
}

// errorLines keeps the lines of a tool's output that report an error: an
// install script ends with a page of advice that would hide them. Without
// such lines it is lastLines.
func errorLines(b []byte, n int) string {
	var keep [][]byte
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		low := bytes.ToLower(l)
		if bytes.Contains(low, []byte("error")) || bytes.Contains(low, []byte("failed")) || bytes.Contains(low, []byte("abort")) {
			keep = append(keep, bytes.TrimSpace(l))
		}
	}
	if len(keep) == 0 {
		return lastLines(b, n)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return string(bytes.Join(keep, []byte(" | ")))
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}
