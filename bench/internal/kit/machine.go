package kit

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procField returns the value of the first "name : value" line of a /proc
// file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// Machine describes where the numbers come from.
func Machine(server string, tools ...string) string {
	mem := procField("/proc/meminfo", "MemTotal")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(mem, " kB"), 10, 64); err == nil {
		mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	parts := []string{fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s, %s, %s", runtime.NumCPU(),
		procField("/proc/cpuinfo", "model name"), mem, strings.TrimSpace(string(kernel)), runtime.Version(), server)}
	for _, t := range tools {
		out, err := exec.Command(t, "--version").CombinedOutput()
		if err != nil {
			continue
		}
		// "mydumper 0.10.0, built against …", "*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***"
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		line, _, _ = strings.Cut(strings.Trim(line, "* "), ", ")
		parts = append(parts, line)
	}
	return strings.Join(parts, ", ")
}

// LoadAvg samples /proc/loadavg's one-minute average every interval while
// a benchmark runs: with the per-run share of "others", what says how
// quiet the machine was.
type LoadAvg struct {
	mu      sync.Mutex
	samples []float64
}

// Run samples until ctx ends.
func (l *LoadAvg) Run(ctx context.Context, interval time.Duration) {
	for {
		b, _ := os.ReadFile("/proc/loadavg")
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				l.mu.Lock()
				l.samples = append(l.samples, v)
				l.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func (l *LoadAvg) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) == 0 {
		return "load average not sampled"
	}
	s := slices.Sorted(slices.Values(l.samples))
	return fmt.Sprintf("load average (1 min) %.2f–%.2f, median %.2f, over %d samples", s[0], s[len(s)-1], Median(s), len(s))
}
