package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Goals the archive is held to.
const (
	goalRatio   = 1.0
	goalRPOp99  = 1500 * time.Millisecond
	goalPeakRSS = 150e6 // bytes
)

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// toolStats are the medians over one tool's successful capture runs.
type toolStats struct {
	Tool     string
	OK, Runs int
	MBps     float64
	Seconds  float64
	CPU      float64 // CPU seconds
	PeakRSS  float64 // bytes, the largest over runs
	Stored   float64 // stored/raw, agent only
	Others   float64 // share of the machine other processes used
	MBperCPU float64
}

func summarize(tool string, runs []captureRun) toolStats {
	st := toolStats{Tool: tool}
	var mbps, secs, cpu, eff, stored, others []float64
	for _, r := range runs {
		if r.Tool != tool {
			continue
		}
		st.Runs++
		if r.Err != nil {
			continue
		}
		st.OK++
		mbps = append(mbps, r.MBps())
		secs = append(secs, r.Time.Seconds())
		cpu = append(cpu, r.Usage.CPU.Seconds())
		others = append(others, r.Load.Others)
		eff = append(eff, r.MBperCPU())
		st.PeakRSS = max(st.PeakRSS, float64(r.Usage.PeakRSS))
		if r.Stored > 0 && r.Bytes > 0 {
			stored = append(stored, float64(r.Stored)/float64(r.Bytes))
		}
	}
	st.MBps, st.Seconds, st.CPU, st.Stored = benchkit.Median(mbps), benchkit.Median(secs), benchkit.Median(cpu), benchkit.Median(stored)
	st.Others, st.MBperCPU = benchkit.Median(others), benchkit.Median(eff)
	return st
}

func (g generateResult) String() string {
	s := fmt.Sprintf("generated %s in %d files: sysbench prepare %.0f s", mb(float64(g.Bytes)), g.Files, g.Prepare.Seconds())
	if g.Duration > 0 {
		s += fmt.Sprintf(", run %.0f s at %.0f tps", g.Duration.Seconds(), g.TPS)
	}
	return s
}

// machine describes where the numbers come from.
type machine struct {
	CPUs     int
	CPUModel string
	Kernel   string
	MemTotal string
	Go       string
	MariaDB  string
	Sysbench string
}

func (m machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s, %s, MariaDB %s, %s",
		m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.Go, m.MariaDB, m.Sysbench)
}

// results is everything the benchmark measured.
type results struct {
	cfg      config
	machine  machine
	gen      generateResult
	target   captureTarget
	files    int
	captures []captureRun
	tools    []string
	rpo      *rpoResult
	// perfReport is the agent's CPU profile, if one was taken.
	perfReport string
	started    time.Time
	finished   time.Time
}

func mb(n float64) string { return fmt.Sprintf("%.1f MB", n/1e6) }

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// printCaptureRun prints one raw run line.
func printCaptureRun(w io.Writer, r captureRun) {
	label := fmt.Sprintf("run %d.%d", r.Order, r.Run)
	if r.Order == 0 {
		label = "perf run"
	}
	if r.Err != nil {
		fmt.Fprintf(w, "  %s %-15s FAILED: %v\n", label, r.Tool, r.Err)
		return
	}
	line := fmt.Sprintf("  %s %-15s %8.2f s %8.1f MB/s  cpu %6.2f s (%4.0f MB/cpu-s)  peak rss %7s",
		label, r.Tool, r.Time.Seconds(), r.MBps(), r.Usage.CPU.Seconds(), r.MBperCPU(), mb(float64(r.Usage.PeakRSS)))
	line += fmt.Sprintf("  server cpu %5.2f s  %s", r.ServerCPU.Seconds(), r.Load)
	if r.Received > 0 {
		line += fmt.Sprintf("  received at %.2f s", r.Received.Seconds())
	}
	if r.Stored > 0 {
		line += fmt.Sprintf("  stored %s of %s (%.3f)", mb(float64(r.Stored)), mb(float64(r.Bytes)), float64(r.Stored)/float64(r.Bytes))
	}
	fmt.Fprintln(w, line)
}

// printRPO prints the RPO run's line.
func printRPO(w io.Writer, r *rpoResult) {
	if r.Err != nil {
		fmt.Fprintf(w, "  RPO run FAILED: %v\n", r.Err)
	}
	s := slices.Clone(r.Samples)
	slices.Sort(s)
	fmt.Fprintf(w, "  RPO: %d probes (%d durable, %d unresolved, %d probe errors) over %.1f s of load at %.0f tps, %s of binlog (%.2f MB/s), %s; agent catch-up %.1f s\n",
		r.Probes, len(r.Samples), r.Unresolved, r.ProbeErrs, r.Duration.Seconds(), r.TPS, mb(float64(r.Binlog)),
		float64(r.Binlog)/1e6/max(r.Duration.Seconds(), 1e-9), r.Load, r.CatchUp.Seconds())
	if len(s) > 0 {
		fmt.Fprintf(w, "  RPO: p50 %s  p90 %s  p99 %s  max %s  (min %s); max lag %s; agent cpu %.2f s, peak rss %s\n",
			ms(percentile(s, 50)), ms(percentile(s, 90)), ms(percentile(s, 99)), ms(s[len(s)-1]), ms(s[0]),
			mb(float64(r.MaxLag)), r.Usage.CPU.Seconds(), mb(float64(r.Usage.PeakRSS)))
	}
	if c := slices.Sorted(slices.Values(r.Commits)); len(c) > 0 {
		fmt.Fprintf(w, "  RPO: probe commit (INSERT) latency p50 %s  p99 %s  max %s\n",
			ms(percentile(c, 50)), ms(percentile(c, 99)), ms(c[len(c)-1]))
	}
	if len(r.Worst) > 0 {
		var parts []string
		for _, p := range r.Worst {
			parts = append(parts, fmt.Sprintf("%s at +%.1fs (commit %s)", ms(p.RPO), p.At.Seconds(), ms(p.Commit)))
		}
		fmt.Fprintf(w, "  RPO: worst probes: %s\n", strings.Join(parts, ", "))
	}
}

// printSummary prints the readable summary and the Markdown table.
func printSummary(w io.Writer, res *results) {
	fmt.Fprintf(w, "\n==== summary ====\n")
	fmt.Fprintf(w, "machine: %s\n", res.machine)
	fmt.Fprintf(w, "binlog: %s in %d files (max_binlog_size %s), ends at %s; %s\n",
		mb(float64(res.target.bytes)), res.files, mb(float64(res.cfg.maxBinlogSize)), res.target.end, res.gen)
	fmt.Fprintf(w, "capture runs (order.run tool time throughput cpu rss):\n")
	for _, r := range res.captures {
		printCaptureRun(w, r)
	}
	stats := map[string]toolStats{}
	for _, t := range res.tools {
		st := summarize(t, res.captures)
		stats[t] = st
		fmt.Fprintf(w, "median %-15s %8.2f s %8.1f MB/s  cpu %6.2f s (%4.0f MB/cpu-s)  others %.0f%%  (%d of %d runs ok)\n",
			t, st.Seconds, st.MBps, st.CPU, st.MBperCPU, st.Others*100, st.OK, st.Runs)
	}
	if res.rpo != nil {
		printRPO(w, res.rpo)
	}
	if res.perfReport != "" {
		fmt.Fprintf(w, "agent CPU profile: %s\n", res.perfReport)
	}
	fmt.Fprintf(w, "total wall time %s\n", res.finished.Sub(res.started).Round(time.Second))
	fmt.Fprintf(w, "\n==== markdown ====\n\n%s", markdown(res, stats))
}

// markdown is the results table for bench/README.md.
func markdown(res *results, stats map[string]toolStats) string {
	var b strings.Builder
	cfg := res.cfg
	fmt.Fprintf(&b, "Machine: %s.  \n", res.machine)
	fmt.Fprintf(&b, "Binlog: %s in %d files of ≤ %s, sysbench oltp_write_only (%d tables × %d rows); %d capture runs per tool, alternating; medians. MB = 10⁶ bytes.\n\n",
		mb(float64(res.target.bytes)), res.files, mb(float64(cfg.maxBinlogSize)), cfg.tables, cfg.tableSize, cfg.runs)
	b.WriteString("| Measure | Result | Goal | Met |\n|---|---|---|---|\n")
	ref := stats[toolMariaDBBinlog]
	var peakRSS float64
	for _, t := range res.tools {
		st := stats[t]
		fmt.Fprintf(&b, "| Capture throughput, %s | %.1f MB/s (%.2f s; CPU %.2f s = %.0f MB/CPU-s; others used %.0f%% of the machine) | | |\n",
			t, st.MBps, st.Seconds, st.CPU, st.MBperCPU, st.Others*100)
		if t == toolMariaDBBinlog {
			continue
		}
		peakRSS = max(peakRSS, st.PeakRSS)
		ratio := st.MBps / ref.MBps
		fmt.Fprintf(&b, "| Ratio %s / mariadb-binlog, throughput | %.2f | ≥ %.1f | %s |\n", t, ratio, goalRatio, benchkit.Met(ratio >= goalRatio))
		fmt.Fprintf(&b, "| Ratio %s / mariadb-binlog, MB per CPU-second | %.2f | | |\n", t, st.MBperCPU/ref.MBperCPU)
		fmt.Fprintf(&b, "| Stored / raw size, %s | %.3f (%s of %s) | | |\n", t, st.Stored, mb(st.Stored*float64(res.target.bytes)), mb(float64(res.target.bytes)))
	}
	if r := res.rpo; r != nil {
		s := slices.Clone(r.Samples)
		slices.Sort(s)
		if len(s) > 0 {
			p99 := percentile(s, 99)
			fmt.Fprintf(&b, "| RPO under load (%d probes, %.0f tps, %.2f MB/s binlog, flush %s; others used %.0f%% of the machine): p50 / p90 / p99 / max | %s / %s / %s / %s | p99 ≤ %s | %s |\n",
				len(s), r.TPS, float64(r.Binlog)/1e6/max(r.Duration.Seconds(), 1e-9), cfg.flushInterval, r.Load.Others*100,
				ms(percentile(s, 50)), ms(percentile(s, 90)), ms(p99), ms(s[len(s)-1]), ms(goalRPOp99),
				benchkit.Met(p99 <= goalRPOp99 && r.Unresolved == 0))
		} else {
			fmt.Fprintf(&b, "| RPO under load | no probe became durable (%v) | p99 ≤ %s | **no** |\n", r.Err, ms(goalRPOp99))
		}
		fmt.Fprintf(&b, "| Agent peak RSS, RPO run | %s | ≤ %s | %s |\n", mb(float64(r.Usage.PeakRSS)), mb(goalPeakRSS), benchkit.Met(r.Usage.PeakRSS > 0 && float64(r.Usage.PeakRSS) <= goalPeakRSS))
	}
	if peakRSS > 0 {
		fmt.Fprintf(&b, "| Agent peak RSS, capture runs (max) | %s | ≤ %s | %s |\n", mb(peakRSS), mb(goalPeakRSS), benchkit.Met(peakRSS <= goalPeakRSS))
	}
	return b.String()
}
