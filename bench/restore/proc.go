package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the benchmark started and must end. Its output goes to
// files so that a failed run can show why.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string        // stderr
	done chan struct{} // closed when the process has exited
	err  error         // written before done is closed
	// usage is what the process and the children it waited for used,
	// from wait4; written before done is closed.
	usage usage
}

// usage is a process tree's CPU time and largest resident set.
type usage struct {
	CPU     time.Duration
	PeakRSS int64 // bytes
}

// startChild starts argv with extra environment variables, logging stdout
// and stderr to logPath. Secrets go in env, never in argv.
func startChild(name string, argv, env []string, logPath string) (*child, error) {
	return startChildOut(name, argv, env, logPath, logPath)
}

// startChildOut is startChild with stdout to its own file.
func startChildOut(name string, argv, env []string, outPath, logPath string) (*child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptors
	outFile := logFile
	if outPath != logPath {
		if outFile, err = os.Create(outPath); err != nil {
			return nil, fmt.Errorf("create %s output: %w", name, err)
		}
		defer outFile.Close()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = outFile
	cmd.Stderr = logFile
	// A benchmark killed with Ctrl-C must not leave an agent, a load or a
	// restore running behind it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			c.usage = usage{CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), PeakRSS: ru.Maxrss << 10} // KiB on Linux
		}
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
	return benchkit.LastLines(string(b), n)
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

// parseComm returns the command name, field 2 of /proc/PID/stat, which may
// hold spaces and parentheses.
func parseComm(stat string) string {
	i, j := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if i < 0 || j < i {
		return ""
	}
	return stat[i+1 : j]
}

// procSample is one reading of one process.
type procSample struct {
	at  time.Time
	cpu time.Duration // utime + stime
	hwm int64         // VmHWM, bytes
}

// procSeries are the readings of one process, oldest first.
type procSeries struct {
	pid     int
	comm    string // the latest name: a forked child changes it at exec
	samples []procSample
}

// cpuAt is the process's CPU time at t: that of the last reading at or
// before t, 0 before the first reading.
func (s *procSeries) cpuAt(t time.Time) time.Duration {
	var cpu time.Duration
	for _, r := range s.samples {
		if r.at.After(t) {
			break
		}
		cpu = r.cpu
	}
	return cpu
}

// treeSampler reads the CPU time and peak RSS of a process and all its
// descendants every interval, so that the part of a run between two log
// lines can be costed and each program's memory told apart (wait4's
// rusage gives only the tree's total CPU and its largest process).
type treeSampler struct {
	root     int
	interval time.Duration

	mu     sync.Mutex
	series map[int]*procSeries
}

func newTreeSampler(root int, interval time.Duration) *treeSampler {
	return &treeSampler{root: root, interval: interval, series: map[int]*procSeries{}}
}

// run samples until ctx ends.
func (s *treeSampler) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample reads every process of the tree once.
func (s *treeSampler) sample(now time.Time) {
	for _, pid := range descendants(s.root) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		cpu, err := benchkit.ParseStatCPU(string(stat))
		if err != nil {
			continue
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		hwm, _ := parseStatusKB(string(status), "VmHWM")
		s.mu.Lock()
		ps := s.series[pid]
		if ps == nil {
			ps = &procSeries{pid: pid}
			s.series[pid] = ps
		}
		ps.comm = parseComm(string(stat))
		ps.samples = append(ps.samples, procSample{at: now, cpu: cpu, hwm: hwm})
		s.mu.Unlock()
	}
}

// descendants lists root and every process below it, through
// /proc/PID/task/TID/children: a Go program forks from any of its threads.
func descendants(root int) []int {
	pids := []int{root}
	for i := 0; i < len(pids); i++ {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pids[i]))
		if err != nil {
			continue
		}
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pids[i], t.Name()))
			if err != nil {
				continue
			}
			for f := range strings.FieldsSeq(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// program groups a process by the program it runs.
func program(comm string) string {
	switch comm {
	case "mysql-pitr", "mariadbd", "mariadb-binlog", "mariadb":
		return comm
	}
	return "other"
}

// cpuBetween is the CPU time each program used between from and to.
func (s *treeSampler) cpuBetween(from, to time.Time) map[string]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Duration{}
	for _, ps := range s.series {
		if d := ps.cpuAt(to) - ps.cpuAt(from); d > 0 {
			out[program(ps.comm)] += d
		}
	}
	return out
}

// peakRSS is the largest VmHWM of any one process of each program.
func (s *treeSampler) peakRSS() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for _, ps := range s.series {
		p := program(ps.comm)
		for _, r := range ps.samples {
			out[p] = max(out[p], r.hwm)
		}
	}
	return out
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

// cpuMeter measures a run's machine load; start it just before the run.
type cpuMeter struct {
	machine benchkit.CPUTimes
	self    time.Duration
}

func startMeter() cpuMeter {
	return cpuMeter{machine: benchkit.ReadCPUTimes(), self: benchkit.SelfCPU()}
}

// stop returns the machine's load, counting as the benchmark's own this
// process and ours: the CPU time of the process tree the run started.
func (m cpuMeter) stop(ours time.Duration) machineLoad {
	var load machineLoad
	now := benchkit.ReadCPUTimes()
	self := benchkit.SelfCPU() - m.self
	total := float64(now.Total - m.machine.Total)
	if total <= 0 {
		return load
	}
	busy := now.Busy - m.machine.Busy
	load.Busy = float64(busy) / total
	others := time.Duration(busy)*time.Second/benchkit.UserHZ - self - ours
	load.Others = max(0, others.Seconds()*benchkit.UserHZ/total)
	return load
}
