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
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// pipeline is what the mysqlbinlog replay needs to choose its programs.
type pipeline struct {
	programs programs.Finder
	// flavor is the source's (and the target's) family: its binlog reader
	// reads the binlog, its client applies what it prints.
	flavor string
	// release is the source's server version: an older binlog reader may
	// not know the events it wrote.
	release string
}

// tools finds the binlog reader and the client of the flavor.
func (pl pipeline) tools(ctx context.Context) (dump, client string, err error) {
	reader, err := pl.programs.Find(ctx, pl.flavor, programs.BinlogTool)
	if err != nil {
		return "", "", err
	}
	if err := checkReader(reader, pl.release); err != nil {
		return "", "", err
	}
	c, err := pl.programs.Find(ctx, pl.flavor, programs.Client)
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

// replayMysqlbinlog pipes the flavor's binlog reader (mariadb-binlog,
// mysqlbinlog) into its client (mariadb, mysql): the standard tools, with
// an exact stop position (never a stop time, which can cut a transaction).
func replayMysqlbinlog(ctx context.Context, target *mysql.Config, ctls clientTLS, pl pipeline, stop *Stop, work string, log *slog.Logger, progress reporter) (err error) {
	if len(stop.Files) == 0 || stop.Transactions == 0 {
		log.Info("nothing to replay after the snapshot")
		return nil
	}
	// The pipeline reports nothing as it goes: the phase starts and ends.
	total := stop.replayBytes()
	progress.report(PhaseReplay, 0, total)
	defer func() {
		if err == nil {
			progress.report(PhaseReplay, total, total)
		}
	}()
	dump, client, err := pl.tools(ctx)
	if err != nil {
		return err
	}
	args := []string{"--no-defaults", "--start-position=" + strconv.FormatUint(stop.Files[0].From, 10)}
	for _, f := range stop.Files {
		args = append(args, f.Path)
	}
	args = append(args, "--stop-position="+strconv.FormatUint(stop.Files[len(stop.Files)-1].To, 10))
	// The client reads the connection, password included, from a 0600 file:
	// never argv or the environment.
	tlsLines, guard, err := ctls.clientOptions(ctx, client, target)
	if err != nil {
		return err
	}
	defaults, err := clientDefaults(work, target, tlsLines)
	if err != nil {
		return err
	}
	defer os.Remove(defaults)
	begin := time.Now()
	log.Info("replaying with mysqlbinlog", "from", stop.Files[0].Name+":"+strconv.FormatUint(stop.Files[0].From, 10),
		"until", stop.Files[len(stop.Files)-1].Name+":"+strconv.FormatUint(stop.Files[len(stop.Files)-1].To, 10))
	dumpCmd := exec.CommandContext(ctx, dump, args...)
	clientCmd := exec.CommandContext(ctx, client, "--defaults-file="+defaults, "--binary-mode")
	dumpCmd.Env, clientCmd.Env = childenv.Environ(), childenv.Environ()
	// A real pipe: if the client dies, the dump gets EPIPE instead of blocking.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	dumpCmd.Stdout = pw
	clientCmd.Stdin = pr
	var dumpErr, clientErr tail
	dumpCmd.Stderr, clientCmd.Stderr = &dumpErr, &clientErr
	if err := clientCmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start %s: %w", client, err)
	}
	pr.Close()
	if guard != "" {
		// Before the dump writes anything: the guard is the first statement.
		if _, err := pw.WriteString(guard); err != nil {
			pw.Close()
			clientCmd.Wait()
			return fmt.Errorf("%s: %w: %s", filepath.Base(client), err, clientErr.String())
		}
	}
	if err := dumpCmd.Start(); err != nil {
		pw.Close()
		clientCmd.Wait()
		return fmt.Errorf("start %s: %w", dump, err)
	}
	pw.Close()
	cerr := clientCmd.Wait()
	derr := dumpCmd.Wait()
	// The guard's refusal first: the dump then dies of a closed pipe.
	if cerr != nil && strings.Contains(clientErr.String(), guardMarker) {
		return fmt.Errorf("%s's connection to %s is not encrypted: the server offered it no TLS, and TLS mode %s requires TLS; nothing was replayed",
			filepath.Base(client), target.Addr, ctls.settings.Mode)
	}
	// A dump killed by a closed pipe only shows that the client died first.
	if derr != nil && (cerr == nil || !brokenPipe(derr)) {
		return fmt.Errorf("%s: %w: %s", filepath.Base(dump), derr, dumpErr.String())
	}
	if cerr != nil {
		return fmt.Errorf("%s applying the binlog: %w: %s", filepath.Base(client), cerr, clientErr.String())
	}
	log.Info("replayed with mysqlbinlog", "took", time.Since(begin).Round(time.Millisecond))
	return nil
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

// tail keeps the last 4 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }
