package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

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
		hwm, _ := benchkit.ParseStatusKB(string(status), "VmHWM")
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
