// Package mysqld runs the temporary servers a restore needs: it initializes
// a datadir and starts a server on it that listens only on a private Unix
// socket, then shuts it down cleanly. The flavor differences (MariaDB's
// mariadbd and mariadb-install-db, MySQL's mysqld --initialize-insecure)
// are decided here.
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
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
)

// Flavors.
const (
	MariaDB = "mariadb"
	MySQL   = "mysql"
)

// ErrNotInstalled is returned when the server programs are missing.
var ErrNotInstalled = errors.New("server programs not installed")

// Look finds a program on PATH or in the sbin directories.
func Look(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"} {
			p := filepath.Join(dir, n)
			if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%w: none of %v found on PATH", ErrNotInstalled, names)
}

func serverBinary(flavor string) (string, error) {
	if flavor == MySQL {
		return Look("mysqld")
	}
	return Look("mariadbd", "mysqld")
}

// Init creates a fresh datadir: root@localhost without a password, reachable
// only through the socket of a server started by Start.
func Init(ctx context.Context, flavor, datadir string) error {
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
	var cmd *exec.Cmd
	switch flavor {
	case MySQL:
		bin, err := serverBinary(MySQL)
		if err != nil {
			return err
		}
		args := []string{"--no-defaults", "--initialize-insecure", "--datadir=" + datadir, "--tmpdir=" + tmp}
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		cmd = exec.CommandContext(ctx, bin, args...)
	default:
		bin, err := Look("mariadb-install-db", "mysql_install_db")
		if err != nil {
			return err
		}
		args := []string{"--no-defaults", "--datadir=" + datadir, "--auth-root-authentication-method=normal",
			"--skip-test-db", "--skip-name-resolve", "--tmpdir=" + tmp}
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		cmd = exec.CommandContext(ctx, bin, args...)
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
	bin, err := serverBinary(opts.Flavor)
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
	args := []string{
		"--no-defaults",
		"--datadir=" + opts.Datadir,
		"--socket=" + filepath.Join(opts.RunDir, "mysqld.sock"),
		"--pid-file=" + filepath.Join(opts.RunDir, "mysqld.pid"),
		"--log-error=" + filepath.Join(opts.RunDir, "error.log"),
		"--tmpdir=" + tmp,
		"--skip-networking",
		"--server-id=" + strconv.FormatUint(uint64(opts.ServerID), 10),
		"--skip-slave-start",
		"--max-allowed-packet=1G",
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
	}
	if opts.Flavor == MySQL {
		args = append(args, "--skip-log-bin", "--mysqlx=OFF")
	}
	if opts.SkipGrants {
		args = append(args, "--skip-grant-tables")
	}
	args = append(args, memoryArgs(opts.Flavor, opts.BufferPool)...)
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = childenv.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
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
