package kit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// UserHZ is the kernel's USER_HZ, the unit of utime and stime in
// /proc/PID/stat and of /proc/stat.
const UserHZ = 100

// Usage is what a process (or a pipeline's processes) used: CPU time, user
// plus system, and the largest resident set of any one process, in bytes.
type Usage struct {
	CPU     time.Duration
	PeakRSS int64
}

// Add sums CPU and keeps the larger peak RSS.
func (u Usage) Add(o Usage) Usage {
	return Usage{CPU: u.CPU + o.CPU, PeakRSS: max(u.PeakRSS, o.PeakRSS)}
}

// ParseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	// After ")" come field 3 (state) onwards; utime and stime are 14 and 15.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields", len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / UserHZ, nil
}

// ParseStatusKB returns a "Name:   123 kB" line of /proc/PID/status in bytes.
func ParseStatusKB(status, name string) (int64, error) {
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

// ReadUsage reads a live process's CPU time and VmHWM. It must be called
// before the process is reaped: afterwards /proc/PID is gone.
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		u.CPU, err = ParseStatCPU(string(stat))
	}
	if err != nil {
		return u, fmt.Errorf("stat of %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err == nil {
		u.PeakRSS, err = ParseStatusKB(string(status), "VmHWM")
	}
	if err != nil {
		return u, fmt.Errorf("status of %d: %w", pid, err)
	}
	return u, nil
}

// PidCPU is the CPU time process pid has used so far; 0 if it cannot be read.
func PidCPU(pid int) time.Duration {
	u, _ := ReadUsage(pid)
	return u.CPU
}

// CPUTimes are the machine's aggregate CPU counters from /proc/stat, in
// USER_HZ ticks.
type CPUTimes struct{ Busy, Steal, Total int64 }

// ParseCPULine parses "cpu user nice system idle iowait irq softirq steal ...".
// Guest time is already counted in user and nice, so it is left out.
func ParseCPULine(line string) CPUTimes {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return CPUTimes{}
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	busy := v[0] + v[1] + v[2] + v[5] + v[6]
	return CPUTimes{Busy: busy, Steal: v[7], Total: busy + v[3] + v[4] + v[7]}
}

func readCPUTimes() CPUTimes {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	return ParseCPULine(line)
}

// Load is how busy the machine was during a run, as fractions of all CPUs'
// time: busy with any process; busy with processes that are not the
// benchmark's (another tenant's build, say); stolen by the hypervisor.
type Load struct{ Busy, Others, Steal float64 }

func (l Load) String() string {
	return fmt.Sprintf("machine %.0f%% busy (others %.0f%%, steal %.0f%%)", l.Busy*100, l.Others*100, l.Steal*100)
}

// Meter measures one run: the CPU time of the server it ran against and the
// machine's load. Start it just before the run.
type Meter struct {
	server       func() time.Duration // nil without a server
	machine      CPUTimes
	srvCPU, self time.Duration
}

// StartMeter starts a meter; server reads a server's CPU time (may be nil).
func StartMeter(server func() time.Duration) Meter {
	m := Meter{server: server, machine: readCPUTimes(), self: PidCPU(os.Getpid())}
	if server != nil {
		m.srvCPU = server()
	}
	return m
}

// Stop returns the server's CPU time during the run and the machine's load,
// counting as the benchmark's own the server, this process and ours: the
// CPU time of the processes the run started.
func (m Meter) Stop(ours time.Duration) (server time.Duration, load Load) {
	now := readCPUTimes()
	if m.server != nil {
		server = m.server() - m.srvCPU
	}
	self := PidCPU(os.Getpid()) - m.self
	total := float64(now.Total - m.machine.Total)
	if total <= 0 {
		return server, load
	}
	busy := now.Busy - m.machine.Busy
	load.Busy = float64(busy) / total
	load.Steal = float64(now.Steal-m.machine.Steal) / total
	others := time.Duration(busy)*time.Second/UserHZ - server - self - ours
	load.Others = max(0, others.Seconds()*UserHZ/total)
	return server, load
}

// procSample is one reading of one process.
type procSample struct {
	at  time.Time
	cpu time.Duration
	hwm int64
}

// procSeries are the readings of one process, oldest first.
type procSeries struct {
	prog    string // the latest name: a forked child changes it at exec
	samples []procSample
}

// cpuAt is the CPU time of the last reading at or before t, 0 before the
// first.
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

// TreeSampler reads the CPU time and VmHWM of processes and all their
// descendants every interval, so that the part of a run between two log
// lines can be costed and each program's memory told apart. It is also
// the only true peak RSS of a child: Go starts children with vfork, and
// Linux carries the parent's high-water mark into the child's rusage
// maxrss at exec, so rusage reports at least this program's own RSS.
type TreeSampler struct {
	interval time.Duration
	// Programs are the program names reported on their own; any other
	// counts as "other".
	Programs []string

	mu     sync.Mutex
	roots  []int
	series map[int]*procSeries
}

// NewTreeSampler samples the trees of the processes added, every interval
// once Run is called.
func NewTreeSampler(interval time.Duration, programs ...string) *TreeSampler {
	return &TreeSampler{interval: interval, Programs: programs, series: map[int]*procSeries{}}
}

// Add samples pid's tree too, from now on.
func (s *TreeSampler) Add(pid int) {
	s.mu.Lock()
	s.roots = append(s.roots, pid)
	s.mu.Unlock()
	s.sample(time.Now())
}

// Run samples until ctx ends.
func (s *TreeSampler) Run(ctx context.Context) {
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

// Watch samples until stop is called, which returns the sampler.
func (s *TreeSampler) Watch() (stop func() *TreeSampler) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	return func() *TreeSampler { cancel(); wg.Wait(); return s }
}

func (s *TreeSampler) sample(now time.Time) {
	s.mu.Lock()
	roots := slices.Clone(s.roots)
	s.mu.Unlock()
	var pids []int
	for _, r := range roots {
		pids = append(pids, Descendants(r)...)
	}
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		cpu, err := ParseStatCPU(string(stat))
		if err != nil {
			continue
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		hwm, _ := ParseStatusKB(string(status), "VmHWM")
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		s.mu.Lock()
		ps := s.series[pid]
		if ps == nil {
			ps = &procSeries{}
			s.series[pid] = ps
		}
		// A server started by a root's wrapper later hides its command
		// line: the name it had stays.
		if prog := ProgramName(string(stat), cmdline); ps.prog == "" || !strings.HasPrefix(prog, "ld-linux") {
			ps.prog = prog
		}
		ps.samples = append(ps.samples, procSample{at: now, cpu: cpu, hwm: hwm})
		s.mu.Unlock()
	}
}

// Descendants lists root and every process below it, through
// /proc/PID/task/TID/children: a Go program forks from any of its threads.
func Descendants(root int) []int {
	pids := []int{root}
	for i := 0; i < len(pids); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pids[i]))
		for _, t := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pids[i], t.Name()))
			for f := range strings.FieldsSeq(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// ProgramName is the program a process runs: its command name from
// /proc/PID/stat, or for a program a server root's wrapper runs through
// the root's dynamic loader ("ld-linux-x86-64 --library-path L
// /root/usr/sbin/mysqld …"), the name of that program, from the
// NUL-separated /proc/PID/cmdline.
func ProgramName(stat string, cmdline []byte) string {
	i, j := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if i < 0 || j < i {
		return ""
	}
	comm := stat[i+1 : j]
	if !strings.HasPrefix(comm, "ld-linux") {
		return comm
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	for k := 1; k < len(args); k++ {
		switch a := string(args[k]); {
		case a == "--library-path" || a == "--preload" || a == "--argv0":
			k++
		case !strings.HasPrefix(a, "--"):
			return filepath.Base(a)
		}
	}
	return comm
}

func (s *TreeSampler) group(prog string) string {
	for _, p := range s.Programs {
		if p == prog {
			return p
		}
	}
	return "other"
}

// CPUBetween is the CPU time each program used between from and to.
func (s *TreeSampler) CPUBetween(from, to time.Time) map[string]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Duration{}
	for _, ps := range s.series {
		if d := ps.cpuAt(to) - ps.cpuAt(from); d > 0 {
			out[s.group(ps.prog)] += d
		}
	}
	return out
}

// MaxRSS is the largest VmHWM of any one process.
func (s *TreeSampler) MaxRSS() int64 {
	var m int64
	for _, v := range s.PeakRSS() {
		m = max(m, v)
	}
	return m
}

// PeakRSS is the largest VmHWM of any one process of each program.
func (s *TreeSampler) PeakRSS() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for _, ps := range s.series {
		p := s.group(ps.prog)
		for _, r := range ps.samples {
			out[p] = max(out[p], r.hwm)
		}
	}
	return out
}
