package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// binary is the mysql-pitr binary built for tests that run it as a process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mysql-pitr-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mysql-pitr")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentProc is the agent running as a child process.
type agentProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	listen string
	log    *bytes.Buffer
	mu     *sync.Mutex
	done   chan error
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startAgent runs `mysql-pitr agent` with args and env; it is killed when the test ends.
func startAgent(t *testing.T, env []string, args ...string) *agentProc {
	t.Helper()
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(binary, append([]string{"agent", "--listen", listen, "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	p := &agentProc{t: t, cmd: cmd, listen: listen, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	cmd.Stdout = syncWriter{p.mu, p.log}
	cmd.Stderr = syncWriter{p.mu, p.log}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() || testing.Verbose() {
			t.Logf("agent log:\n%s", p.logs())
		}
	})
	return p
}

func (p *agentProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type statusDoc struct {
	Ready  bool `json:"ready"`
	Binlog struct {
		Timeline uint32 `json:"timeline"`
		Durable  struct {
			File string `json:"file"`
			Pos  uint64 `json:"pos"`
		} `json:"durable"`
		SpoolBytes int64  `json:"spool_bytes"`
		LastError  string `json:"last_error"`
	} `json:"binlog"`
}

func (p *agentProc) status() (statusDoc, error) {
	var st statusDoc
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.listen + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitDurable waits until the agent reports the archive durable up to the server's end.
func (p *agentProc) waitDurable(db *testbed.MariaDB, timeout time.Duration) {
	p.t.Helper()
	file, pos := masterStatus(p.t, db)
	testbed.Eventually(p.t, timeout, func() error {
		st, err := p.status()
		if err != nil {
			return fmt.Errorf("archive not yet durable up to %s:%d: status: %w", file, pos, err)
		}
		if st.Binlog.Durable.File > file || st.Binlog.Durable.File == file && st.Binlog.Durable.Pos >= pos {
			return nil
		}
		return fmt.Errorf("archive durable up to %s:%d, want %s:%d", st.Binlog.Durable.File, st.Binlog.Durable.Pos, file, pos)
	})
}

func (p *agentProc) waitReady(timeout time.Duration) {
	p.t.Helper()
	c := http.Client{Timeout: time.Second}
	testbed.Eventually(p.t, timeout, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			return testbed.Halt(fmt.Errorf("agent exited before becoming ready: %v", err))
		default:
		}
		resp, err := c.Get("http://" + p.listen + "/readyz")
		if err != nil {
			return fmt.Errorf("agent not ready: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("agent not ready: /readyz says %s", resp.Status)
		}
		return nil
	})
}

func (p *agentProc) signal(sig syscall.Signal) error {
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(30 * time.Second):
		p.t.Fatalf("agent did not exit on %v", sig)
		return nil
	}
}

func masterStatus(t *testing.T, db *testbed.MariaDB) (string, uint64) {
	t.Helper()
	// MySQL 8.4 dropped SHOW MASTER STATUS for SHOW BINARY LOG STATUS,
	// which answers with the same columns.
	q := "SHOW MASTER STATUS"
	if db.Flavor().MySQL() {
		q = "SHOW BINARY LOG STATUS"
	}
	rows, err := db.DB(t).Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatalf("%s returned nothing", q)
	}
	vals := make([]any, len(cols))
	var file string
	var pos uint64
	vals[0], vals[1] = &file, &pos
	for i := 2; i < len(vals); i++ {
		vals[i] = new(any)
	}
	if err := rows.Scan(vals...); err != nil {
		t.Fatal(err)
	}
	return file, pos
}

// runCLI runs a command in-process and returns its stdout, stderr and exit code.
func runCLI(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	code := exitCode(err, &errb)
	return out.String(), errb.String(), code
}

// compareArchive fetches the newest timeline and compares each file with the server's.
func compareArchive(t *testing.T, storageURL string, db *testbed.MariaDB) {
	t.Helper()
	out := t.TempDir()
	stdout, stderr, code := runCLI(t, t.Context(), "binlog", "fetch", "--storage", storageURL, "--out", out)
	if code != 0 {
		t.Fatalf("binlog fetch: exit %d: %s", code, stderr)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		path, _, _ := strings.Cut(line, "\t")
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(db.BinlogDir(), filepath.Base(path)))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > len(want) {
			t.Fatalf("%s: archive holds %d bytes, the server's file %d", path, len(got), len(want))
		}
		want = want[:len(got)]
		if strings.HasSuffix(line, "continues") && len(want) > 21 {
			want[21] &^= 1 // in-use flag of the active file, which a replica never sees
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s differs from the server's file at byte %d of %d", filepath.Base(path), i, len(got))
		}
		n++
	}
	if n == 0 {
		t.Fatal("binlog fetch wrote no file")
	}
	t.Logf("%d binlog files identical to the server's", n)
}

var _ = io.Discard

func TestCopySelf(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "mysql-pitr")
	out, err := exec.Command(binary, "copy-self", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("copy-self: %v: %s", err, out)
	}
	got, _ := os.ReadFile(dst)
	want, _ := os.ReadFile(binary)
	if !bytes.Equal(got, want) {
		t.Fatal("the copy differs from the binary")
	}
	if v, err := exec.Command(dst, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(v), "mysql-pitr ") {
		t.Fatalf("the copy does not run: %v %s", err, v)
	}
	if _, _, code := runCLI(t, t.Context(), "copy-self"); code != 2 {
		t.Fatalf("copy-self without a destination: exit %d, want 2", code)
	}
}

func TestRestoreDestinationFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--pod", "mysql-0", "--datadir", "/x"},
		{"--to-new-pvc", "restored", "--datadir", "/x"},
		{"--datadir", "/x", "--target-dsn", "u@tcp(127.0.0.1:1)/"},
		{"--datadir", "/x", "--server-bindir", "/nonexistent/mysql/bin"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			all := append([]string{"restore", "--storage", "file://" + t.TempDir(), "--to", "latest"}, args...)
			if _, stderr, code := runCLI(t, t.Context(), all...); code != 2 {
				t.Fatalf("exit %d, want 2 (usage): %s", code, stderr)
			}
		})
	}
}

// TestRestoreKube: restoring a pod of the chart is the kubectl plugin's;
// mysql-pitr, which carries no Kubernetes client, says so in one line
// before it reads any other flag.
func TestRestoreKube(t *testing.T) {
	for _, args := range [][]string{
		{"--kube", "--pod", "mysql-0", "--to", "latest"},
		{"--storage", "file:///nonexistent", "-kube=true", "--pod", "mysql-0", "--to-new-pvc", "restored"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, t.Context(), append([]string{"restore"}, args...)...)
			if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "run kubectl mysql-pitr restore --pod NAME") {
				t.Fatalf("exit %d, stderr %q; want exit 2 and one line naming kubectl mysql-pitr restore", code, stderr)
			}
		})
	}
}

// TestNoKubernetesClient keeps the sidecar's binary lean: the cluster-facing
// commands, and the Kubernetes client with them, are the kubectl plugin's
// (cmd/kubectl-mysql_pitr).
func TestNoKubernetesClient(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "k8s.io/") || strings.Contains(line, "/restore/kube") {
			t.Errorf("mysql-pitr depends on %s", line)
		}
	}
}
