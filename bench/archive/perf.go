package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// perfRecorder profiles the agent from outside with Linux perf, since the
// agent has no pprof endpoint: its first call attaches `perf record` to the
// pid, its second stops it and writes `perf report` as text.
type perfRecorder struct {
	dir  string
	proc *benchkit.Child
}

func (p *perfRecorder) profile(pid int) error {
	bin, err := exec.LookPath("perf")
	if err != nil {
		return fmt.Errorf("perf: %w", err)
	}
	data := filepath.Join(p.dir, "perf.data")
	if p.proc == nil {
		p.proc, err = benchkit.StartChild("perf", []string{bin, "record", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", data},
			nil, filepath.Join(p.dir, "perf-record.log"))
		return err
	}
	// perf record writes its data file when interrupted.
	p.proc.Signal(syscall.SIGINT)
	select {
	case <-p.proc.Done():
	case <-time.After(30 * time.Second):
		p.proc.Stop(time.Second)
	}
	out, err := exec.Command(bin, "report", "-i", data, "--stdio", "--no-children",
		"--sort", "symbol", "--percent-limit", "0.5", "-g", "none").CombinedOutput()
	if err != nil {
		return fmt.Errorf("perf report: %w\n%s", err, benchkit.LastLines(string(out), 10))
	}
	return os.WriteFile(filepath.Join(p.dir, "perf-report.txt"), out, 0o644)
}
