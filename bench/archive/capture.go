package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// Tool names, as printed.
const (
	toolMariaDBBinlog = "mariadb-binlog"
	toolAgentFile     = "agent file://"
	toolAgentS3       = "agent s3://"
)

// captureRun is one timed capture of the server's whole binlog by one tool.
type captureRun struct {
	Tool  string
	Run   int // 1-based, per tool
	Order int // 1-based position in the alternating sequence
	Bytes int64
	Time  time.Duration
	// Received is when the agent had received the whole binlog, before
	// it was durable (agent only).
	Received time.Duration
	Usage    procUsage
	// ServerCPU is the CPU time mariadbd spent during the run, mostly in
	// the binlog dump thread that feeds the tool.
	ServerCPU time.Duration
	// Load is how busy the whole machine was during the run.
	Load machineLoad
	// Stored is what the archive holds in storage (agent only).
	Stored int64
	Err    error
}

// MBps is the run's throughput in MB (10⁶ bytes) per second.
func (r captureRun) MBps() float64 {
	if r.Time <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Time.Seconds()
}

// MBperCPU is the MB captured per CPU-second of the tool: its efficiency,
// which a busy machine disturbs less than its throughput.
func (r captureRun) MBperCPU() float64 {
	if r.Usage.CPU <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Usage.CPU.Seconds()
}

// captureTarget is what a capture run must reach: the server's binlog as it
// stands, idle.
type captureTarget struct {
	first string           // the oldest binlog file
	end   catalog.Position // SHOW MASTER STATUS
	bytes int64            // sum of SHOW BINARY LOGS sizes
	files int              // how many files SHOW BINARY LOGS lists
}

// binlogMagic starts every binlog file.
const binlogMagic = "\xfebin"

// bench holds what every phase needs.
type bench struct {
	cfg      config
	srv      *server
	agentBin string
	s3       *s3Gateway // nil without --s3
	serverID uint32     // the next replica server_id to hand out
}

func (b *bench) nextServerID() uint32 {
	b.serverID++
	return b.serverID
}

// runMariaDBBinlog times mariadb-binlog copying the whole binlog into a
// fresh directory: done when the bytes it wrote equal the server's total.
func (b *bench) runMariaDBBinlog(ctx context.Context, dir string, t captureTarget) captureRun {
	r := captureRun{Tool: toolMariaDBBinlog}
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		r.Err = err
		return r
	}
	bin, err := testbed.LookBinary("mariadb-binlog")
	if err != nil {
		r.Err = err
		return r
	}
	argv := []string{bin, "--read-from-remote-server", "--raw", "--stop-never",
		"--stop-never-slave-server-id=" + strconv.FormatUint(uint64(b.nextServerID()), 10),
		"--host=127.0.0.1", "--port=" + strconv.Itoa(b.srv.Port()), "--user=root",
		"--result-file=" + out + "/", t.first}
	meter := b.startMeter()
	begin := time.Now()
	c, err := benchkit.StartChild(toolMariaDBBinlog, argv, nil, filepath.Join(dir, "mariadb-binlog.log"))
	if err != nil {
		r.Err = err
		return r
	}
	defer c.Stop(5 * time.Second)
	deadline := begin.Add(b.cfg.captureTimeout)
	for {
		n, err := dirSize(out)
		if err != nil {
			r.Err = err
			return r
		}
		if n >= t.bytes {
			r.Time = time.Since(begin)
			r.Bytes = n
			break
		}
		if done, err := c.Exited(); done {
			r.Err = fmt.Errorf("mariadb-binlog exited (%v) after %d of %d bytes:\n%s", err, n, t.bytes, c.LogTail(10))
			return r
		}
		if time.Now().After(deadline) {
			r.Err = fmt.Errorf("mariadb-binlog: only %d of %d bytes after %s", n, t.bytes, b.cfg.captureTimeout)
			return r
		}
		time.Sleep(b.cfg.poll)
	}
	r.Usage, r.Err = readUsage(c.Pid())
	r.ServerCPU, r.Load = meter.stop(r.Usage.CPU)
	if r.Bytes != t.bytes {
		r.Err = fmt.Errorf("mariadb-binlog wrote %d bytes, the server has %d", r.Bytes, t.bytes)
	}
	return r
}

// dirSize sums the sizes of the regular files in dir (not recursive).
func dirSize(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}

// agentProc is a running agent and how to reach it.
type agentProc struct {
	*benchkit.Child
	status  string // the /status URL
	storage string // the --storage URL
	env     []string
}

// startAgent starts the agent on a fresh, empty archive under dir.
func (b *bench) startAgent(dir, tool string, flushInterval time.Duration) (*agentProc, error) {
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	a := &agentProc{env: []string{"MYSQL_PITR_PASSWORD=" + b.srv.PitrPassword()}}
	switch tool {
	case toolAgentS3:
		a.storage = b.s3.url(filepath.Base(dir))
		a.env = append(a.env, b.s3.env()...)
	default:
		archive := filepath.Join(dir, "archive")
		if err := os.MkdirAll(archive, 0o755); err != nil {
			return nil, err
		}
		a.storage = "file://" + archive
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	a.status = "http://" + listen + "/status"
	argv := []string{b.agentBin, "agent",
		// The password travels in MYSQL_PITR_PASSWORD, not in argv.
		"--dsn", b.srv.DSNFor(testbed.PitrUser, ""),
		"--storage", a.storage,
		"--listen", listen,
		"--spool-dir", filepath.Join(dir, "spool"),
		"--server-id", strconv.FormatUint(uint64(b.nextServerID()), 10),
		"--flush-interval", flushInterval.String(),
		"--log-format", "json",
	}
	a.Child, err = benchkit.StartChild("agent", argv, a.env, filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	return a, nil
}

// agentStatus is the part of /status the benchmark reads.
type agentStatus struct {
	Binlog struct {
		Durable     catalog.Position `json:"durable"`
		Received    catalog.Position `json:"received"`
		LagBytes    int64            `json:"lag_bytes"`
		SpoolBytes  int64            `json:"spool_bytes"`
		LastError   string           `json:"last_error"`
		UploadError string           `json:"upload_error"`
	} `json:"binlog"`
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// readStatus fetches /status; an agent that is still starting has no
// listener yet, which is an error the caller retries.
func readStatus(ctx context.Context, url string) (agentStatus, error) {
	var st agentStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode %s: %w", url, err)
	}
	return st, nil
}

// runAgent times a fresh agent archiving the whole binlog: done when /status
// says the archive is durable up to the server's end.
// A non-nil profile is called with the agent's pid once it has started and
// again when it is done; see perfRecorder.
func (b *bench) runAgent(ctx context.Context, dir, tool string, t captureTarget, profile func(pid int) error) captureRun {
	r := captureRun{Tool: tool}
	meter := b.startMeter()
	begin := time.Now()
	a, err := b.startAgent(dir, tool, b.cfg.flushInterval)
	if err != nil {
		r.Err = err
		return r
	}
	defer a.Stop(10 * time.Second)
	if profile != nil {
		if err := profile(a.Pid()); err != nil {
			r.Err = err
			return r
		}
	}
	deadline := begin.Add(b.cfg.captureTimeout)
	var last agentStatus
	for {
		st, err := readStatus(ctx, a.status)
		if err == nil {
			last = st
			if r.Received == 0 && benchkit.PosAtLeast(st.Binlog.Received, t.end) {
				r.Received = time.Since(begin)
			}
			if benchkit.PosAtLeast(st.Binlog.Durable, t.end) {
				r.Time = time.Since(begin)
				break
			}
		}
		if done, err := a.Exited(); done {
			r.Err = fmt.Errorf("agent exited (%v) at durable %s of %s:\n%s", err, last.Binlog.Durable, t.end, a.LogTail(10))
			return r
		}
		if time.Now().After(deadline) {
			r.Err = fmt.Errorf("agent: durable %s, received %s, not %s after %s (last error %q, upload error %q)",
				last.Binlog.Durable, last.Binlog.Received, t.end, b.cfg.captureTimeout, last.Binlog.LastError, last.Binlog.UploadError)
			return r
		}
		time.Sleep(b.cfg.poll)
	}
	r.Usage, r.Err = readUsage(a.Pid())
	r.ServerCPU, r.Load = meter.stop(r.Usage.CPU)
	if profile != nil {
		r.Err = errors.Join(r.Err, profile(a.Pid()))
	}
	a.Stop(10 * time.Second)
	cov, err := b.listArchive(ctx, a)
	if err != nil {
		r.Err = errors.Join(r.Err, err)
		return r
	}
	// Segments hold the events of a file, not its 4-byte magic number,
	// which the agent writes back when it restores the file.
	want := uint64(t.bytes - int64(len(binlogMagic))*int64(t.files))
	if cov.Bytes != want || cov.Gaps != 0 {
		r.Err = errors.Join(r.Err, fmt.Errorf("the archive holds %d event bytes in %d gaps, the server's %d files have %d",
			cov.Bytes, cov.Gaps, t.files, want))
	}
	r.Bytes, r.Stored = t.bytes, cov.Stored
	return r
}

// coverage sums `list --json` over the archive's timelines.
type coverage struct {
	Bytes    uint64
	Stored   int64
	Segments int
	Gaps     int
}

// listArchive asks `mysql-pitr list --json` what the archive holds, so the
// stored size is the archive's own account of itself.
func (b *bench) listArchive(ctx context.Context, a *agentProc) (coverage, error) {
	var c coverage
	cmd := exec.CommandContext(ctx, b.agentBin, "list", "--storage", a.storage, "--json")
	cmd.Env = append(os.Environ(), a.env...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return c, fmt.Errorf("mysql-pitr list: %w\n%s", err, ee.Stderr)
		}
		return c, fmt.Errorf("mysql-pitr list: %w", err)
	}
	var l struct {
		Binlogs []catalog.Coverage `json:"binlogs"`
		Gaps    []json.RawMessage  `json:"gaps"`
	}
	if err := json.Unmarshal(out, &l); err != nil {
		return c, fmt.Errorf("decode mysql-pitr list: %w", err)
	}
	for _, t := range l.Binlogs {
		c.Bytes += t.Bytes
		c.Stored += t.Stored
		c.Segments += t.Segments
	}
	c.Gaps = len(l.Gaps)
	return c, nil
}
