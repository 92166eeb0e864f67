package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// usage is what a tool's processes cost, read from wait4's rusage once each
// has exited: the same utime+stime and VmHWM that /proc/PID shows, but
// without racing the process's exit.
type usage struct {
	// CPU is user plus system time, summed over the pipeline's processes
	// (and any children they waited for, such as mariadb-backup under
	// mysql-pitr).
	CPU time.Duration
	// PeakRSS is the largest resident set of any one of the processes, in
	// bytes.
	PeakRSS int64
}

// stage is one process of a pipeline: argv, extra environment (secrets go
// here, never in argv) and the file its stderr goes to.
type stage struct {
	argv []string
	env  []string
	log  string
}

// runPipeline runs the stages with each one's stdout feeding the next one's
// stdin, the first reading stdin (a file path, or "" for none) and the last
// writing stdout (a file path, or "" to append to its log). It returns when
// every process has exited, with their summed usage.
func runPipeline(ctx context.Context, stages []stage, stdin, stdout string) (usage, error) {
	var u usage
	cmds := make([]*exec.Cmd, len(stages))
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
		closers = nil
	}
	defer closeAll()
	for i, s := range stages {
		cmd := exec.CommandContext(ctx, s.argv[0], s.argv[1:]...)
		cmd.Env = append(os.Environ(), s.env...)
		// A benchmark killed with Ctrl-C must not leave a dump running.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.WaitDelay = 5 * time.Second
		logFile, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return u, fmt.Errorf("open %s: %w", s.log, err)
		}
		closers = append(closers, logFile)
		cmd.Stderr = logFile
		if i == len(stages)-1 {
			cmd.Stdout = logFile
		}
		cmds[i] = cmd
	}
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			return u, err
		}
		closers = append(closers, f)
		cmds[0].Stdin = f
	}
	if stdout != "" {
		f, err := os.Create(stdout)
		if err != nil {
			return u, err
		}
		closers = append(closers, f)
		cmds[len(cmds)-1].Stdout = f
	}
	for i := 0; i+1 < len(cmds); i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return u, err
		}
		closers = append(closers, r, w)
		cmds[i].Stdout, cmds[i+1].Stdin = w, r
	}
	started := 0
	var errs []error
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			errs = append(errs, fmt.Errorf("start %s: %w", cmd.Args[0], err))
			break
		}
		started++
	}
	// The children hold their own ends of the pipes; ours must close, or
	// a reader never sees EOF.
	closeAll()
	for i, cmd := range cmds[:started] {
		if err := cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (log %s:\n%s)", cmd.Args[0], err, stages[i].log, tail(stages[i].log, 8)))
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			u.CPU += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			u.PeakRSS = max(u.PeakRSS, ru.Maxrss<<10) // KiB on Linux
		}
	}
	if started < len(cmds) {
		for _, cmd := range cmds[:started] {
			cmd.Process.Kill()
		}
	}
	return u, errors.Join(errs...)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return benchkit.LastLines(string(b), n)
}

// machineLoad is how busy the machine was during a run, as fractions of
// all CPUs' time: busy with any process, and busy with processes that are
// not part of the benchmark (another tenant's build, say).
type machineLoad struct {
	Busy, Others float64
}

func (l machineLoad) String() string {
	return fmt.Sprintf("machine %.0f%% busy (others %.0f%%)", l.Busy*100, l.Others*100)
}

// cpuMeter measures a run's server CPU and machine load; start it just
// before the run.
type cpuMeter struct {
	srv          *server
	machine      benchkit.CPUTimes
	server, self time.Duration
}

func startMeter(srv *server) cpuMeter {
	return cpuMeter{srv: srv, machine: benchkit.ReadCPUTimes(), server: srv.CPU(), self: benchkit.SelfCPU()}
}

// stop returns the server's CPU time during the run and the machine's load,
// counting as the benchmark's own the server, this process and the tool's
// CPU time (ours).
func (m cpuMeter) stop(ours time.Duration) (server time.Duration, load machineLoad) {
	now := benchkit.ReadCPUTimes()
	server = m.srv.CPU() - m.server
	self := benchkit.SelfCPU() - m.self
	total := float64(now.Total - m.machine.Total)
	if total <= 0 {
		return server, load
	}
	busy := now.Busy - m.machine.Busy
	load.Busy = float64(busy) / total
	others := time.Duration(busy)*time.Second/benchkit.UserHZ - server - self - ours
	load.Others = max(0, others.Seconds()*benchkit.UserHZ/total)
	return server, load
}
