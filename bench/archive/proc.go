package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"fmt"
	"os"
	"time"
)

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
	if u.PeakRSS, err = benchkit.ParseStatusKB(string(status), "VmHWM"); err != nil {
		return u, fmt.Errorf("status of %d: %w", pid, err)
	}
	return u, nil
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
	return cpuMeter{srv: b.srv, machine: benchkit.ReadCPUTimes(), server: b.srv.CPU(), self: benchkit.SelfCPU()}
}

// stop returns the server's CPU time during the run and the machine's load,
// counting as the benchmark's own the server, this process and ours: the
// CPU time of the processes the run started.
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
	load.Steal = float64(now.Steal-m.machine.Steal) / total
	others := time.Duration(busy)*time.Second/benchkit.UserHZ - server - self - ours
	load.Others = max(0, others.Seconds()*benchkit.UserHZ/total)
	return server, load
}
