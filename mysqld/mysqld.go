// Package mysqld runs the temporary servers a restore needs: it initializes
// a datadir and starts a server on it that listens only on a private Unix
// socket, then shuts it down cleanly. The flavor differences (MariaDB's
// mariadbd and mariadb-install-db, MySQL's mysqld --initialize-insecure,
// the options each needs) are decided here; the programs come from the
// finder in Options.Programs and must be of the datadir's release.
//
// It is the one launcher of servers in the project: with Options.Bare it
// starts a server with only its own options (files, port, user) and the
// caller's, and initialises a datadir as the official images do. The test
// bed (internal/testbed) starts every test server so, with the images'
// options, which makes every test exercise the process handling restores
// rely on.
package mysqld

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
	"github.com/mysql-pitr/mysql-pitr/internal/childout"
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
	if opts.Program != "" {
		return programs.Program{Path: opts.Program}, nil
	}
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

// Init creates a fresh datadir at opts.Datadir. A temporary server's has
// the same InnoDB settings Start gives the server: root@localhost without
// a password, reachable only through the socket of a server started by
// Start. With Bare it is initialised as the official images do: MariaDB's
// with mariadb-install-db given the datadir, the tmpdir and InitArgs;
// MySQL's by the server itself, with the options Start gives it (Args
// included), InitArgs and --initialize-insecure, which leaves
// root@localhost without a password.
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
	var path string
	var args []string
	if opts.Bare {
		if err := makeDirs(opts); err != nil {
			return err
		}
		path, args, err = bareInit(ctx, opts, bin)
	} else {
		// The bootstrap's temporary tables go in a directory of its own:
		// any server starting with the default tmpdir deletes every #sql
		// file in /tmp, a running bootstrap's included, which then fails.
		tmp, terr := os.MkdirTemp("", "mysqld-init-")
		if terr != nil {
			return fmt.Errorf("initialize datadir %s: %w", datadir, terr)
		}
		defer os.RemoveAll(tmp)
		path, args, err = temporaryInit(ctx, opts, bin, tmp)
	}
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = childenv.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := errorLines(out, 10)
		if opts.Bare {
			// MySQL's server writes to its error log.
			msg = strings.Trim(msg+" | "+Logs(opts.RunDir, 10, " | "), " |")
		}
		return fmt.Errorf("initialize datadir %s: %w: %s", datadir, err, msg)
	}
	return nil
}

// temporaryInit is the command line that initialises a restore's
// temporary datadir, with tmp as its tmpdir.
func temporaryInit(ctx context.Context, opts Options, bin programs.Program, tmp string) (string, []string, error) {
	files := filepath.Join(tmp, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		return "", nil, fmt.Errorf("initialize datadir %s: %w", opts.Datadir, err)
	}
	path := bin.Path
	var args []string
	switch opts.Flavor {
	case MySQL:
		args = []string{"--no-defaults", "--initialize-insecure", "--datadir=" + opts.Datadir, "--tmpdir=" + tmp,
			"--secure-file-priv=" + files, "--skip-log-bin"}
	default:
		install, err := opts.Programs.Find(ctx, MariaDB, programs.Install)
		if err != nil {
			return "", nil, err
		}
		path = install.Path
		args = []string{"--no-defaults", "--datadir=" + opts.Datadir, "--auth-root-authentication-method=normal",
			"--skip-test-db", "--skip-name-resolve", "--tmpdir=" + tmp, "--secure-file-priv=" + files}
	}
	args = append(args, memoryArgs(opts.Flavor, opts.BufferPool)...)
	args = append(args, datadirArgs(opts)...)
	return path, append(args, userArgs(opts)...), nil
}

// bareInit is the command line that initialises a datadir as the official
// images do (see Init).
func bareInit(ctx context.Context, opts Options, bin programs.Program) (string, []string, error) {
	if opts.Flavor == MySQL {
		// The image's docker_init_database_dir: the server's own options,
		// then --initialize-insecure.
		args := append(startArgs(opts, bin.Version), opts.InitArgs...)
		return bin.Path, append(args, "--initialize-insecure"), nil
	}
	install, err := opts.Programs.Find(ctx, MariaDB, programs.Install)
	if err != nil {
		return "", nil, err
	}
	// --no-defaults must come first; it keeps /etc/mysql and ~/.my.cnf out
	// of both the install and the bootstrap server it runs.
	args := []string{"--no-defaults", "--datadir=" + opts.Datadir, "--tmpdir=" + tmpDir(opts)}
	args = append(args, userArgs(opts)...)
	return install.Path, append(args, opts.InitArgs...), nil
}

// Options configure a server: a restore's temporary server, or with
// Bare one whose settings the caller chooses.
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
	// LowerCaseTableNames and PageSize are lower_case_table_names and
	// innodb_page_size, which a datadir keeps for life: those of the
	// server a snapshot was taken of, given to Init and Start alike. Zero
	// leaves the server's default.
	LowerCaseTableNames int
	PageSize            int
	// Programs finds the server programs.
	Programs programs.Finder
	// Program, when set, is the server program to run, found and checked
	// by the caller: Programs is not asked, and Release not checked.
	Program string
	// StartTimeout bounds how long Start waits for the server to accept
	// connections; zero means two minutes.
	StartTimeout time.Duration
	// Args are appended to the server's command line.
	Args []string
	// Port, when set, has the server listen on 127.0.0.1:Port as well as
	// on its socket; zero keeps it off the network (--skip-networking).
	Port int
	// User is the OS account the server runs as when this process runs
	// as root; empty means root.
	User string
	// Bare leaves out the settings of a restore's temporary server (see
	// Start) for a caller that chooses them all, as the test bed does to
	// run servers as their official images run them: Start gives the
	// server only its files in RunDir, Datadir, TmpDir, Port, ServerID
	// when set, the user, and Args; Init initialises as the images do
	// (see Init). SkipGrants, BufferPool and the settings a datadir keeps
	// for life are then the caller's to put in Args and InitArgs.
	Bare bool
	// InitArgs are appended to Init's command line when Bare.
	InitArgs []string
	Logger   *slog.Logger
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

// datadirArgs are the options of the settings a datadir keeps for life
// (see Options.LowerCaseTableNames), those that differ from the servers'
// defaults.
func datadirArgs(opts Options) []string {
	var args []string
	if opts.LowerCaseTableNames != 0 {
		args = append(args, "--lower-case-table-names="+strconv.Itoa(opts.LowerCaseTableNames))
	}
	if opts.PageSize != 0 && opts.PageSize != 16384 {
		args = append(args, "--innodb-page-size="+strconv.Itoa(opts.PageSize))
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
		return childout.Last(string(b), n, " | ")
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return string(bytes.Join(keep, []byte(" | ")))
}
