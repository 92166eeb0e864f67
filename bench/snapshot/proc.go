package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the kernel's USER_HZ, the unit of utime and stime in
// /proc/PID/stat. It is 100 on every Linux architecture Go supports; reading
// it properly needs sysconf, which needs cgo.
const userHZ = 100

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
		logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return u, fmt.Errorf("open %s: %w", s.log, err)
		}
		closers = append(closers, logf)
		cmd.Stderr = logf
		if i == len(stages)-1 {
			cmd.Stdout = logf
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
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	// After ")" come field 3 (state) onwards; utime and stime are fields
	// 14 and 15.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields", len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// pidCPU is the CPU time a live process has used; 0 if it cannot be read.
func pidCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	d, _ := parseStatCPU(string(stat))
	return d
}

// cpuTimes are the machine's aggregate CPU counters from /proc/stat, in
// USER_HZ ticks.
type cpuTimes struct {
	busy, steal, total int64
}

// readCPUTimes reads the "cpu" line of /proc/stat; zero if it cannot.
func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseCPULine(line)
}

// parseCPULine parses "cpu user nice system idle iowait irq softirq steal ...".
// Guest time is already counted in user and nice, so it is left out.
func parseCPULine(line string) cpuTimes {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
	busy := user + nice + system + irq + softirq
	return cpuTimes{busy: busy, steal: steal, total: busy + idle + iowait + steal}
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
	machine      cpuTimes
	server, self time.Duration
}

func startMeter(srv *server) cpuMeter {
	return cpuMeter{srv: srv, machine: readCPUTimes(), server: srv.cpu(), self: selfCPU()}
}

// stop returns the server's CPU time during the run and the machine's load,
// counting as the benchmark's own the server, this process and the tool's
// CPU time (ours).
func (m cpuMeter) stop(ours time.Duration) (server time.Duration, load machineLoad) {
	now := readCPUTimes()
	server = m.srv.cpu() - m.server
	self := selfCPU() - m.self
	total := float64(now.total - m.machine.total)
	if total <= 0 {
		return server, load
	}
	busy := now.busy - m.machine.busy
	load.Busy = float64(busy) / total
	others := time.Duration(busy)*time.Second/userHZ - server - self - ours
	load.Others = max(0, others.Seconds()*userHZ/total)
	return server, load
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	d, _ := parseStatCPU(string(b))
	return d
}
