package kit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// Binary returns the mysql-pitr binary to benchmark: given, made absolute,
// or else ./cmd/mysql-pitr of this module built into dir.
func Binary(ctx context.Context, given, dir string) (string, error) {
	if given != "" {
		return filepath.Abs(given)
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the mysql-pitr module (%v): run from the repository or pass -mysql-pitr", err)
	}
	bin := filepath.Join(dir, "mysql-pitr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/mysql-pitr")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mysql-pitr: %w\n%s", err, out)
	}
	Logf("built %s", bin)
	return bin, nil
}

// PitrArgs are the flags that point a mysql-pitr command at the server as
// the test bed's least-privilege pitr account (its password travels in
// PitrEnv, never in argv), with the server release's programs.
func (s *Server) PitrArgs() []string {
	args := []string{"--dsn", s.DSNFor(testbed.PitrUser, "")}
	if d := s.Flavor().BinDir(); d != "" {
		args = append(args, "--server-bindir", d)
	}
	return args
}

// PitrEnv is the environment of a mysql-pitr command: the pitr password,
// and the server release's programs first on PATH (a MySQL clone finishes
// with the mysqld it finds there).
func (s *Server) PitrEnv() []string {
	return append(BinPath(s.Flavor()), "MYSQL_PITR_PASSWORD="+s.PitrPassword())
}

// BinPath puts the flavor's programs first on PATH, as if installed; nil
// for a flavor whose programs are the host's.
func BinPath(f testbed.Flavor) []string {
	if d := f.BinDir(); d != "" {
		return []string{"PATH=" + d + ":" + os.Getenv("PATH")}
	}
	return nil
}

// Agent is a running `mysql-pitr agent` and how to reach it.
type Agent struct {
	*Child
	Status  string // the /status URL
	Storage string // the --storage URL
	Env     []string
}

// StartAgent starts the agent on s, archiving to storage (whose
// credentials are in env), with its spool and log under dir, and with the
// agent flags in extra besides.
func StartAgent(bin string, s *Server, storage string, env []string, dir string, serverID uint32, flush time.Duration, extra ...string) (*Agent, error) {
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	a := &Agent{Status: "http://" + listen + "/status", Storage: storage, Env: append(s.PitrEnv(), env...)}
	argv := append([]string{bin, "agent", "--storage", storage, "--listen", listen,
		"--spool-dir", filepath.Join(dir, "spool"), "--server-id", strconv.FormatUint(uint64(serverID), 10),
		"--flush-interval", flush.String(), "--log-format", "json"}, s.PitrArgs()...)
	argv = append(argv, extra...)
	a.Child, err = Start(argv, a.Env, filepath.Join(dir, "agent.log"))
	return a, err
}

// AgentStatus is the part of /status the benchmarks read.
type AgentStatus struct {
	Binlog struct {
		Durable     catalog.Position `json:"durable"`
		Received    catalog.Position `json:"received"`
		LagBytes    int64            `json:"lag_bytes"`
		LastError   string           `json:"last_error"`
		UploadError string           `json:"upload_error"`
		// Ack is there when the agent runs with --ack.
		Ack *binlog.AckStatus `json:"ack"`
	} `json:"binlog"`
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// ReadStatus fetches /status; an agent that is still starting has no
// listener yet, which is an error the caller retries.
func (a *Agent) ReadStatus(ctx context.Context) (AgentStatus, error) {
	var st AgentStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Status, nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s", a.Status, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// WaitDurable polls /status every poll until the archive is durable up to
// end; each status read is passed to seen (may be nil).
func (a *Agent) WaitDurable(ctx context.Context, end catalog.Position, poll, timeout time.Duration, seen func(AgentStatus)) error {
	var last AgentStatus
	for deadline := time.Now().Add(timeout); ; {
		if st, err := a.ReadStatus(ctx); err == nil {
			last = st
			if seen != nil {
				seen(st)
			}
			if PosAtLeast(st.Binlog.Durable, end) {
				return nil
			}
		}
		if done, err := a.Exited(); done {
			return fmt.Errorf("agent exited (%v) at durable %s of %s", err, last.Binlog.Durable, end)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent: durable %s, received %s, not %s after %s (last error %q, upload error %q)",
				last.Binlog.Durable, last.Binlog.Received, end, timeout, last.Binlog.LastError, last.Binlog.UploadError)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Snapshots are the complete snapshots of the file:// archive at dir.
func Snapshots(ctx context.Context, dir string) ([]*catalog.Manifest, error) {
	st, err := file.New(dir)
	if err != nil {
		return nil, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return nil, err
	}
	return snaps.Complete, nil
}

// DirSize sums the sizes of the regular files under dir.
func DirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

// SyncTree fsyncs every file and directory under dir, so that a reference
// tool's output is as durable as mysql-pitr's file store makes its own.
func SyncTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() && !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		return errors.Join(f.Sync(), f.Close())
	})
}

// LogTimes reads mysql-pitr's --log-format json lines and returns when
// each message was last logged; lines that are not JSON (a child's
// message) are skipped.
func LogTimes(r io.Reader) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg != "" {
			out[l.Msg] = l.Time
		}
	}
	return out, sc.Err()
}

// LogFileTimes is LogTimes of a file.
func LogFileTimes(path string) (map[string]time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return LogTimes(f)
}
