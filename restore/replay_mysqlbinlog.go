package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// mysqlbinlogReplay is the ReplayMysqlbinlog mode: it pipes the flavor's
// binlog reader (mariadb-binlog, mysqlbinlog) into its client (mariadb,
// mysql), the standard tools, with an exact stop position (never a stop
// time, which can cut a transaction).
type mysqlbinlogReplay struct {
	// target is the server replayed into; the client reads its account,
	// password included, from a 0600 option file: never argv or the
	// environment.
	target   *mysql.Config
	tls      clientTLS
	tools    binlogTools
	work     string // where the option file goes
	log      *slog.Logger
	progress reporter
}

// binlogTools is what the mysqlbinlog replay needs to choose its programs.
type binlogTools struct {
	programs programs.Finder
	// flavor is the source's (and the target's) family: its binlog reader
	// reads the binlog, its client applies what it prints.
	flavor string
	// release is the source's server version: an older binlog reader may
	// not know the events it wrote.
	release string
}

// find finds the binlog reader and the client of the flavor.
func (bt binlogTools) find(ctx context.Context) (dump, client string, err error) {
	reader, err := bt.programs.Find(ctx, bt.flavor, programs.BinlogTool)
	if err != nil {
		return "", "", err
	}
	if err := checkReader(reader, bt.release); err != nil {
		return "", "", err
	}
	c, err := bt.programs.Find(ctx, bt.flavor, programs.Client)
	if err != nil {
		return "", "", err
	}
	return reader.Path, c.Path, nil
}

// checkReader refuses a binlog reader of an older release than the source
// that wrote the binlog, when both are known.
func checkReader(reader programs.Program, release string) error {
	if reader.Version == "" || release == "" {
		return nil
	}
	gm, gn, ok1 := programs.MajorMinor(reader.Version)
	wm, wn, ok2 := programs.MajorMinor(release)
	if !ok1 || !ok2 || gm > wm || gm == wm && gn >= wn {
		return nil
	}
	return fmt.Errorf("%s is %s, older than the server that wrote the binlog (%s): name the directory of %d.%d's programs, or a later release's, with --server-bindir or %s",
		reader.Path, reader.Version, release, wm, wn, programs.EnvDir)
}

// replay runs the pipe over the stop's range. It reports nothing as it
// goes: the phase starts and ends.
func (m *mysqlbinlogReplay) replay(ctx context.Context, stop *Stop) (err error) {
	if nothingToReplay(stop, m.log) {
		return nil
	}
	total := stop.replayBytes()
	m.progress.report(PhaseReplay, 0, total)
	defer func() {
		if err == nil {
			m.progress.report(PhaseReplay, total, total)
		}
	}()
	dump, client, err := m.tools.find(ctx)
	if err != nil {
		return err
	}
	tlsLines, guard, err := m.tls.clientOptions(ctx, client, m.target)
	if err != nil {
		return err
	}
	defaults, err := clientDefaults(m.work, m.target, tlsLines)
	if err != nil {
		return err
	}
	defer os.Remove(defaults)
	begin := time.Now()
	first, last := stop.Files[0], stop.Files[len(stop.Files)-1]
	m.log.Info("replaying with mysqlbinlog", "from", first.Name+":"+strconv.FormatUint(first.From, 10),
		"until", last.Name+":"+strconv.FormatUint(last.To, 10))
	p := &pipe{dump: dump, client: client, dumpArgs: readerArgs(stop), clientArgs: []string{"--defaults-file=" + defaults, "--binary-mode"}}
	derr, cerr, err := p.run(ctx, guard)
	if err != nil {
		return err
	}
	if err := m.explain(p, derr, cerr); err != nil {
		return err
	}
	m.log.Info("replayed with mysqlbinlog", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// readerArgs are the binlog reader's arguments for the stop's range.
func readerArgs(stop *Stop) []string {
	args := []string{"--no-defaults", "--start-position=" + strconv.FormatUint(stop.Files[0].From, 10)}
	for _, f := range stop.Files {
		args = append(args, f.Path)
	}
	return append(args, "--stop-position="+strconv.FormatUint(stop.Files[len(stop.Files)-1].To, 10))
}

// explain turns how the two programs of a pipe that ran ended into the
// replay's error.
func (m *mysqlbinlogReplay) explain(p *pipe, derr, cerr error) error {
	// The guard's refusal first: the dump then dies of a closed pipe.
	if cerr != nil && strings.Contains(p.clientErr.String(), guardMarker) {
		return fmt.Errorf("%s's connection to %s is not encrypted: the server offered it no TLS, and TLS mode %s requires TLS; nothing was replayed",
			filepath.Base(p.client), m.target.Addr, m.tls.settings.Mode)
	}
	// A dump killed by a closed pipe only shows that the client died first.
	if derr != nil && (cerr == nil || !brokenPipe(derr)) {
		return fmt.Errorf("%s: %w: %s", filepath.Base(p.dump), derr, p.dumpErr.String())
	}
	if cerr != nil {
		return fmt.Errorf("%s applying the binlog: %w: %s", filepath.Base(p.client), cerr, p.clientErr.String())
	}
	return nil
}

// pipe is the binlog reader (dump) writing into the client through a real
// pipe: if the client dies, the dump gets EPIPE instead of blocking.
type pipe struct {
	dump, client         string
	dumpArgs, clientArgs []string
	// The last of what each wrote to its stderr.
	dumpErr, clientErr childout.Tail
}

// run starts the client, writes guard (when not "") into it before
// anything else, then starts the dump and waits for both. It returns how
// each ended, or err when the pipe could not be run.
func (p *pipe) run(ctx context.Context, guard string) (derr, cerr, err error) {
	dumpCmd := exec.CommandContext(ctx, p.dump, p.dumpArgs...)
	clientCmd := exec.CommandContext(ctx, p.client, p.clientArgs...)
	dumpCmd.Env, clientCmd.Env = childenv.Environ(), childenv.Environ()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	dumpCmd.Stdout = pw
	clientCmd.Stdin = pr
	dumpCmd.Stderr, clientCmd.Stderr = &p.dumpErr, &p.clientErr
	if err := clientCmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, nil, fmt.Errorf("start %s: %w", p.client, err)
	}
	pr.Close()
	if guard != "" {
		// Before the dump writes anything: the guard is the first statement.
		if _, err := pw.WriteString(guard); err != nil {
			pw.Close()
			clientCmd.Wait()
			return nil, nil, fmt.Errorf("%s: %w: %s", filepath.Base(p.client), err, p.clientErr.String())
		}
	}
	if err := dumpCmd.Start(); err != nil {
		pw.Close()
		clientCmd.Wait()
		return nil, nil, fmt.Errorf("start %s: %w", p.dump, err)
	}
	pw.Close()
	cerr = clientCmd.Wait()
	derr = dumpCmd.Wait()
	return derr, cerr, nil
}

// brokenPipe reports whether a child was killed by SIGPIPE.
func brokenPipe(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGPIPE
}

// clientDefaults writes a client option file for target, with the extra
// [client] lines (TLS options), mode 0600.
func clientDefaults(dir string, target *mysql.Config, extra []string) (string, error) {
	var b strings.Builder
	b.WriteString("[client]\n")
	fmt.Fprintf(&b, "user=%s\n", optionValue(target.User))
	if target.Passwd != "" {
		fmt.Fprintf(&b, "password=%s\n", optionValue(target.Passwd))
	}
	switch target.Net {
	case "unix":
		fmt.Fprintf(&b, "socket=%s\nprotocol=socket\n", optionValue(target.Addr))
	default:
		host, port, err := net.SplitHostPort(target.Addr)
		if err != nil {
			return "", fmt.Errorf("target address %q: %w", target.Addr, err)
		}
		fmt.Fprintf(&b, "host=%s\nport=%s\nprotocol=tcp\n", optionValue(host), port)
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	f, err := os.CreateTemp(dir, "client-*.cnf")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return "", err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// optionValue quotes a value for an option file.
func optionValue(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}
