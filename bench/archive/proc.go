package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a process the benchmark started and must end. Its output goes to
// a log file so that a failed run can show why.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // written before done is closed
}

// startChild starts argv with extra environment variables, logging stdout and
// stderr to logPath. Secrets go in env, never in argv.
func startChild(name string, argv []string, env []string, logPath string) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// A benchmark killed with Ctrl-C must not leave an agent or a
	// mariadb-binlog streaming behind it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has ended, and with what.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, then SIGKILL if the child is still there after grace,
// and waits for it to end.
func (c *child) stop(grace time.Duration) {
	if done, _ := c.exited(); done {
		return
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.cmd.Process.Kill()
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// logTail returns the last lines of the child's log, for error messages.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procUsage is what /proc says about a live process.
type procUsage struct {
	// CPU is user plus system time.
	CPU time.Duration
	// PeakRSS is VmHWM, the resident set's high-water mark, in bytes.
	PeakRSS int64
}

// readUsage reads the CPU time and peak RSS of a live process. It must be
// called before the process is reaped: afterwards /proc/PID is gone.
func readUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	if u.CPU, err = benchkit.ParseStatCPU(string(stat)); err != nil {
		return u, fmt.Errorf("stat of %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("read status of %d: %w", pid, err)
	}
	if u.PeakRSS, err = parseStatusKB(string(status), "VmHWM"); err != nil {
		return u, fmt.Errorf("status of %d: %w", pid, err)
	}
	return u, nil
}

// parseStatusKB returns a "Name:   123 kB" line of /proc/PID/status in bytes.
func parseStatusKB(status, name string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", name, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line", name)
}

// machineLoad is how busy the machine was during a run, as fractions of
// all CPUs' time: busy with any process, busy with processes that are not
// part of the benchmark (another tenant's build, say), and stolen by the
// hypervisor for other guests.
type machineLoad struct {
	Busy, Others, Steal float64
}

func (l machineLoad) String() string {
	return fmt.Sprintf("machine %.0f%% busy (others %.0f%%), %.0f%% steal", l.Busy*100, l.Others*100, l.Steal*100)
}

// cpuMeter measures a run's machine load; start it before the run.
type cpuMeter struct {
	srv          *server
	machine      benchkit.CPUTimes
	server, self time.Duration
}

func (b *bench) startMeter() cpuMeter {
	return cpuMeter{srv: b.srv, machine: benchkit.ReadCPUTimes(), server: b.srv.cpu(), self: benchkit.SelfCPU()}
}

// stop returns the server's CPU time during the run and the machine's load,
// counting as the benchmark's own the server, this process and ours: the
// CPU time of the processes the run started.
func (m cpuMeter) stop(ours time.Duration) (server time.Duration, load machineLoad) {
	now := benchkit.ReadCPUTimes()
	server = m.srv.cpu() - m.server
	self := benchkit.SelfCPU() - m.self
	total := float64(now.Total - m.machine.Total)
	if total <= 0 {
		return server, load
	}
	busy := now.Busy - m.machine.Busy
	load.Busy = float64(busy) / total
	load.Steal = float64(now.Steal-m.machine.Steal) / total
	others := time.Duration(busy)*time.Second/benchkit.UserHZ - server - self - ours
	load.Others = max(0, others.Seconds()*benchkit.UserHZ/total)
	return server, load
}
