package mysqld

import (
	"context"
	"database/sql"
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
	"github.com/mysql-pitr/mysql-pitr/internal/childout"
)

// Bounds of a server's start and clean shutdown. A start takes seconds and
// a shutdown flushes what the buffer pool holds; the limits are for loaded
// machines and large pools, not for normal runs.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = 10 * time.Minute
)

// Files of a server in its run directory.
const (
	socketFile  = "mysqld.sock"
	pidFile     = "mysqld.pid"
	errorLog    = "error.log"
	consoleFile = "console.log"
)

// Server is a running server, started by Start.
type Server struct {
	opts Options
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
	db   *sql.DB
}

// Start starts the server and waits until it accepts connections on its
// socket. Without Options.Bare it is a restore's temporary server: only on
// its socket (unless Port is set), with its own secure_file_priv directory
// in RunDir, LOAD DATA LOCAL allowed, replication not started on its own,
// durability traded for speed, and on MySQL without a binlog.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := checkDatadir(opts.Flavor, opts.Datadir); err != nil {
		return nil, err
	}
	bin, err := server(ctx, opts)
	if err != nil {
		return nil, err
	}
	if opts.ServerID == 0 && !opts.Bare {
		opts.ServerID = 4294967000
	}
	if err := makeDirs(opts); err != nil {
		return nil, err
	}
	return launch(ctx, opts, bin.Path, startArgs(opts, bin.Version))
}

// makeDirs creates the run directory, the tmpdir and, for a temporary
// server, its secure_file_priv directory.
func makeDirs(opts Options) error {
	if err := os.MkdirAll(opts.RunDir, 0o750); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	if err := os.MkdirAll(tmpDir(opts), 0o750); err != nil {
		return fmt.Errorf("create tmpdir: %w", err)
	}
	if opts.Bare {
		return nil
	}
	// A secure_file_priv directory of its own: nothing the server reads or
	// writes as files (LOAD DATA LOCAL streams from the client) depends on
	// what an installation or image happens to have (MySQL's compiled-in
	// /var/lib/mysql-files, which it refuses to start without).
	if err := os.MkdirAll(filesDir(opts), 0o700); err != nil {
		return fmt.Errorf("create secure_file_priv directory: %w", err)
	}
	return nil
}

func tmpDir(opts Options) string {
	if opts.TmpDir != "" {
		return opts.TmpDir
	}
	return filepath.Join(opts.RunDir, "tmp")
}

func filesDir(opts Options) string { return filepath.Join(opts.RunDir, "files") }

// startArgs is the server's command line: the launcher's options, a
// temporary server's settings unless Bare, the user, then Args.
func startArgs(opts Options, version string) []string {
	args := []string{
		"--no-defaults",
		"--datadir=" + opts.Datadir,
		"--socket=" + filepath.Join(opts.RunDir, socketFile),
		"--pid-file=" + filepath.Join(opts.RunDir, pidFile),
		"--log-error=" + filepath.Join(opts.RunDir, errorLog),
		"--tmpdir=" + tmpDir(opts),
	}
	if !opts.Bare {
		// Relay logs of a replay stay out of the datadir: MySQL's RESET
		// REPLICA ALL starts an empty one for the default channel.
		args = append(args, "--relay-log="+filepath.Join(opts.RunDir, "relay-bin"))
	}
	if opts.Port != 0 {
		args = append(args, "--port="+strconv.Itoa(opts.Port), "--bind-address=127.0.0.1")
	} else {
		args = append(args, "--skip-networking")
	}
	if !opts.Bare {
		args = append(args, temporaryArgs(opts, version)...)
	} else if opts.ServerID != 0 {
		args = append(args, "--server-id="+strconv.FormatUint(uint64(opts.ServerID), 10))
	}
	args = append(args, userArgs(opts)...)
	return append(args, opts.Args...)
}

// temporaryArgs are the settings of a restore's temporary server.
func temporaryArgs(opts Options, version string) []string {
	args := []string{
		"--secure-file-priv=" + filesDir(opts),
		// A logical snapshot loads with LOAD DATA LOCAL, which MySQL 8.0
		// and later refuse by default.
		"--local-infile=ON",
		"--server-id=" + strconv.FormatUint(uint64(opts.ServerID), 10),
		skipReplicaStart(opts.Flavor, version),
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
	return append(args, datadirArgs(opts)...)
}

// userArgs name the OS account the server runs as when this process is
// root: the server refuses to run as root without --user, and a non-root
// process may not pass it at all.
func userArgs(opts Options) []string {
	if os.Geteuid() != 0 {
		return nil
	}
	if opts.User != "" {
		return []string{"--user=" + opts.User}
	}
	return []string{"--user=root"}
}

// launch runs the server program with args in its own process group,
// killed with this process, its console output appended to console.log in
// the run directory, and waits until it accepts connections.
func launch(ctx context.Context, opts Options, path string, args []string) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Only errors from before the error log opens (a bad option) reach the
	// console.
	console, err := os.OpenFile(filepath.Join(opts.RunDir, consoleFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	defer console.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = childenv.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Stdout, cmd.Stderr = console, console
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
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
		s.Kill()
		return nil, err
	}
	s.db = sql.OpenDB(conn)
	limit := opts.StartTimeout
	if limit <= 0 {
		limit = startTimeout
	}
	deadline := time.Now().Add(limit)
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
			s.db.Close()
			return nil, fmt.Errorf("temporary server exited during start: %s", s.ErrorLog(20))
		case <-ctx.Done():
			s.Kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("temporary server did not accept connections in %s: %s", limit, s.ErrorLog(20))
		}
	}
}

// Config returns the connection settings: root over the private socket.
func (s *Server) Config() *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = s.Socket()
	cfg.AllowNativePasswords = true
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	return cfg
}

// Socket is the server's Unix socket.
func (s *Server) Socket() string { return filepath.Join(s.opts.RunDir, socketFile) }

// DB returns a connection pool to the server.
func (s *Server) DB() *sql.DB { return s.db }

// ErrorLog returns the last n lines of what the server printed (see Logs),
// on one line.
func (s *Server) ErrorLog(n int) string { return Logs(s.opts.RunDir, n, " | ") }

// Logs returns the last n lines of what a server run in runDir printed:
// its console output when there is any (errors from before its error log
// opened, such as a bad option), then its error log, joined by sep.
func Logs(runDir string, n int, sep string) string {
	var parts []string
	for _, name := range []string{consoleFile, errorLog} {
		b, err := os.ReadFile(filepath.Join(runDir, name))
		if err != nil {
			continue
		}
		if last := childout.Last(string(b), n, sep); last != "" {
			parts = append(parts, last)
		}
	}
	return strings.Join(parts, sep)
}

// Exited reports whether the server's process has ended, and how.
func (s *Server) Exited() (bool, error) {
	select {
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return true, s.err
	default:
		return false, nil
	}
}

// Stop shuts the server down cleanly (SIGTERM, as a container runtime
// would) and waits for it to exit; when ctx ends first, or after ten
// minutes, it kills the server. A server that had already exited with an
// error is reported as one.
func (s *Server) Stop(ctx context.Context) error {
	s.db.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-ctx.Done():
		s.Kill()
		return ctx.Err()
	case <-time.After(stopTimeout):
		s.Kill()
		return fmt.Errorf("temporary server did not shut down in %s", stopTimeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("temporary server shutdown: %w: %s", s.err, s.ErrorLog(10))
	}
	return nil
}

// Kill ends the server's process group with SIGKILL, leaving the datadir
// as a crash would, and waits for it to exit.
func (s *Server) Kill() {
	// The pool goes first: a connection closed after the server would
	// meet a dead socket and the driver would log it.
	if s.db != nil {
		s.db.Close()
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}
