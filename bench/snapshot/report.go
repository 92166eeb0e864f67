package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Goals the snapshots are held to.
const (
	goalVsDump       = 2.0 // logical throughput ÷ mariadb-dump's
	goalVsMydumper   = 1.2 // logical throughput ÷ mydumper's
	goalBlocked      = 100 * time.Millisecond
	goalPhysOverhead = 0.10  // physical time ÷ mariabackup | zstd's, minus 1
	goalLoadVsSQL    = 3.0   // mariadb < dump.sql's load time ÷ ours
	goalLoadVsMyload = 1.2   // myloader's load time ÷ ours
	goalPeakRSS      = 300e6 // bytes, ours during a logical snapshot
)

// machine describes where the numbers come from.
type machine struct {
	CPUs     int
	CPUModel string
	Kernel   string
	MemTotal string
	Go       string
	MariaDB  string
	Tools    []string
}

func (m machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s, %s, MariaDB %s, %s",
		m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.Go, m.MariaDB, strings.Join(m.Tools, ", "))
}

// results is everything the benchmark measured.
type results struct {
	cfg       config
	machine   machine
	ds        dataset
	prepare   time.Duration
	dumpTools []string
	dumps     []toolRun
	blocked   []blockedRun
	physTools []string
	phys      []toolRun
	loadTools []string
	loads     []toolRun
	// dumpSQLBytes is mariadb-dump's output, uncompressed.
	dumpSQLBytes int64
	started      time.Time
	finished     time.Time
}

func mb(n float64) string { return fmt.Sprintf("%.1f MB", n/1e6) }

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// ms formats d in milliseconds, with decimals below 10 ms, where a
// snapshot's writes-blocked time usually is.
func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// cell escapes the pipes of tool names such as "mariadb-dump | zstd" for a
// Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// mbps is the dataset's MB (10⁶ bytes) per second of the run.
func mbps(dataset int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(dataset) / 1e6 / d.Seconds()
}

// printRun prints one raw run line.
func printRun(w io.Writer, r toolRun, dataset int64) {
	label := fmt.Sprintf("run %d.%d", r.Order, r.Run)
	if r.Err != nil {
		fmt.Fprintf(w, "  %s %-20s FAILED: %v\n", label, r.Tool, r.Err)
		return
	}
	line := fmt.Sprintf("  %s %-20s %8.2f s %7.1f MB/s  cpu %6.2f s (%5.1f cpu-s/GB)  peak rss %8s  server cpu %6.2f s  %s",
		label, r.Tool, r.Time.Seconds(), mbps(dataset, r.Time), r.Usage.CPU.Seconds(),
		r.Usage.CPU.Seconds()/(float64(dataset)/1e9), mb(float64(r.Usage.PeakRSS)), r.ServerCPU.Seconds(), r.Load)
	if r.Stored > 0 {
		line += "  stored " + mb(float64(r.Stored))
	}
	if r.Raw > 0 {
		line += " of " + mb(float64(r.Raw)) + " raw"
	}
	if r.Tool == toolOurs {
		line += "  writes blocked " + r.WritesBlocked.String()
	}
	fmt.Fprintln(w, line)
}

// printBlocked prints one writes-blocked run.
func printBlocked(w io.Writer, br blockedRun) {
	if br.Err != nil {
		fmt.Fprintf(w, "  blocked run %d FAILED: %v\n", br.Run.Run, br.Err)
	}
	if br.Run.Err != nil {
		fmt.Fprintf(w, "  blocked run %d snapshot FAILED: %v\n", br.Run.Run, br.Run.Err)
		return
	}
	fmt.Fprintf(w, "  blocked run %d: writes blocked %s (manifest); probe commits during the snapshot: %d, max %s, p99 %s (before it: max %s); load %.0f tps; snapshot %.2f s, peak rss %s, %s\n",
		br.Run.Run, br.Run.WritesBlocked, br.Probes, ms(br.ProbeMax), ms(br.ProbeP99), ms(br.BaseMax), br.TPS,
		br.Run.Time.Seconds(), mb(float64(br.Run.Usage.PeakRSS)), br.Run.Load)
}

// toolStats are the medians over one tool's successful runs.
type toolStats struct {
	Tool     string
	OK, Runs int
	Seconds  float64
	MBps     float64 // dataset MB per second
	CPU      float64 // CPU seconds
	CPUperGB float64 // CPU seconds per dataset GB
	PeakRSS  float64 // bytes, the largest over runs
	Stored   float64 // bytes
	Others   float64 // share of the machine other processes used
}

func summarize(tool string, runs []toolRun, dataset int64) toolStats {
	st := toolStats{Tool: tool}
	var secs, rate, cpu, stored, others []float64
	for _, r := range runs {
		if r.Tool != tool {
			continue
		}
		st.Runs++
		if r.Err != nil {
			continue
		}
		st.OK++
		secs = append(secs, r.Time.Seconds())
		rate = append(rate, mbps(dataset, r.Time))
		cpu = append(cpu, r.Usage.CPU.Seconds())
		stored = append(stored, float64(r.Stored))
		others = append(others, r.Load.Others)
		st.PeakRSS = max(st.PeakRSS, float64(r.Usage.PeakRSS))
	}
	st.Seconds, st.MBps, st.CPU, st.Stored, st.Others = benchkit.Median(secs), benchkit.Median(rate), benchkit.Median(cpu), benchkit.Median(stored), benchkit.Median(others)
	st.CPUperGB = st.CPU / (float64(dataset) / 1e9)
	return st
}

func (st toolStats) line() string {
	stored := ""
	if st.Stored > 0 {
		stored = "  stored " + mb(st.Stored)
	}
	return fmt.Sprintf("%-20s %8.2f s %7.1f MB/s  cpu %6.2f s (%5.1f cpu-s/GB)  peak rss %8s%s  others %.0f%%  (%d of %d runs ok)",
		st.Tool, st.Seconds, st.MBps, st.CPU, st.CPUperGB, mb(st.PeakRSS), stored, st.Others*100, st.OK, st.Runs)
}

// printSummary prints the readable summary and the Markdown table.
func printSummary(w io.Writer, res *results) {
	ds := res.ds.Bytes
	fmt.Fprintf(w, "\n==== summary ====\n")
	fmt.Fprintf(w, "machine: %s\n", res.machine)
	fmt.Fprintf(w, "dataset: %s (data_length + index_length of %s), %d rows, %d tables; prepared in %.0f s\n",
		mb(float64(ds)), sysbenchDB, res.ds.Rows, res.cfg.tables, res.prepare.Seconds())
	stats := map[string]toolStats{}
	for _, group := range []struct {
		name  string
		tools []string
		runs  []toolRun
	}{{"logical snapshots", res.dumpTools, res.dumps}, {"physical snapshots", res.physTools, res.phys}, {"loads", res.loadTools, res.loads}} {
		if len(group.tools) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s (order.run tool time throughput cpu rss):\n", group.name)
		for _, r := range group.runs {
			printRun(w, r, ds)
		}
		for _, t := range group.tools {
			st := summarize(t, group.runs, ds)
			stats[t] = st
			fmt.Fprintf(w, "median %s\n", st.line())
		}
	}
	if len(res.blocked) > 0 {
		fmt.Fprintf(w, "writes blocked under load:\n")
		for _, br := range res.blocked {
			printBlocked(w, br)
		}
	}
	fmt.Fprintf(w, "total wall time %s\n", res.finished.Sub(res.started).Round(time.Second))
	fmt.Fprintf(w, "\n==== markdown ====\n\n%s", markdown(res, stats))
}

// markdown is the results table for bench/README.md.
func markdown(res *results, stats map[string]toolStats) string {
	var b strings.Builder
	cfg := res.cfg
	fmt.Fprintf(&b, "Machine: %s.  \n", res.machine)
	fmt.Fprintf(&b, "Dataset: sysbench oltp_read_write prepare, %d tables × %d rows = %s (data_length + index_length); MB/s and CPU-s/GB are of that size for every tool. %d threads per tool; %d runs per tool, alternating; medians. MB = 10⁶ bytes.\n\n",
		cfg.tables, cfg.tableSize, mb(float64(res.ds.Bytes)), cfg.threads, cfg.runs)
	b.WriteString("| Measure | Result | Goal | Met |\n|---|---|---|---|\n")
	row := func(what string, st toolStats) {
		if st.OK == 0 {
			fmt.Fprintf(&b, "| %s, %s | every run failed | | |\n", what, cell(st.Tool))
			return
		}
		stored := ""
		if st.Stored > 0 {
			stored = "; stored " + mb(st.Stored)
		}
		fmt.Fprintf(&b, "| %s, %s | %.1f MB/s (%.2f s; CPU %.2f s = %.1f CPU-s/GB; peak RSS %s%s; others used %.0f%% of the machine) | | |\n",
			what, cell(st.Tool), st.MBps, st.Seconds, st.CPU, st.CPUperGB, mb(st.PeakRSS), stored, st.Others*100)
	}
	ratio := func(what string, r, goal float64) {
		if math.IsNaN(r) || math.IsInf(r, 0) {
			fmt.Fprintf(&b, "| %s | n/a | ≥ %.1f | **no** |\n", cell(what), goal)
			return
		}
		fmt.Fprintf(&b, "| %s | %.2f | ≥ %.1f | %s |\n", cell(what), r, goal, benchkit.Met(r >= goal))
	}
	if len(res.dumpTools) > 0 {
		for _, t := range res.dumpTools {
			row("Logical snapshot", stats[t])
		}
		ours := stats[toolOurs]
		ratio("Throughput mysql-pitr / mariadb-dump | zstd", ours.MBps/stats[toolDump].MBps, goalVsDump)
		ratio("Throughput mysql-pitr / mydumper", ours.MBps/stats[toolMydumper].MBps, goalVsMydumper)
		fmt.Fprintf(&b, "| CPU-s/GB, mysql-pitr / mariadb-dump \\| zstd and / mydumper | %.2f, %.2f | | |\n",
			ours.CPUperGB/stats[toolDump].CPUperGB, ours.CPUperGB/stats[toolMydumper].CPUperGB)
	}
	peakRSS := stats[toolOurs].PeakRSS
	if len(res.blocked) > 0 {
		var worst, worstProbe time.Duration
		var blocked []float64
		var tps []float64
		ok := 0
		for _, br := range res.blocked {
			if br.Run.Err != nil {
				continue
			}
			ok++
			worst = max(worst, br.Run.WritesBlocked)
			worstProbe = max(worstProbe, br.ProbeMax)
			blocked = append(blocked, float64(br.Run.WritesBlocked))
			tps = append(tps, br.TPS)
			peakRSS = max(peakRSS, float64(br.Run.Usage.PeakRSS))
		}
		if ok == 0 {
			fmt.Fprintf(&b, "| Writes blocked during a logical snapshot | every run failed | ≤ %s | **no** |\n", ms(goalBlocked))
		} else {
			fmt.Fprintf(&b, "| Writes blocked during a logical snapshot, under %.0f tps of oltp_write_only (manifest; max of %d runs, median %s) | %s | ≤ %s | %s |\n",
				benchkit.Median(tps), ok, ms(time.Duration(benchkit.Median(blocked))), ms(worst), ms(goalBlocked), benchkit.Met(worst <= goalBlocked && ok == len(res.blocked)))
			fmt.Fprintf(&b, "| Longest probe commit during those snapshots (an UPDATE every %s) | %s | | |\n", ms(probeInterval), ms(worstProbe))
		}
	}
	if peakRSS > 0 {
		fmt.Fprintf(&b, "| mysql-pitr peak RSS during logical snapshots (max) | %s | ≤ %s | %s |\n", mb(peakRSS), mb(goalPeakRSS), benchkit.Met(peakRSS <= goalPeakRSS))
	}
	if len(res.physTools) > 0 {
		for _, t := range res.physTools {
			row("Physical snapshot", stats[t])
		}
		over := stats[toolOursPhys].Seconds/stats[toolBackup].Seconds - 1
		fmt.Fprintf(&b, "| Physical overhead, mysql-pitr over mariabackup \\| zstd, wall time | %+.1f%% | ≤ +%.0f%% | %s |\n",
			over*100, goalPhysOverhead*100, benchkit.Met(over <= goalPhysOverhead))
		if c, ok := stats[toolComparePhys]; ok && c.Seconds > 0 {
			fmt.Fprintf(&b, "| Physical, mysql-pitr over the -compare build, wall time | %+.1f%% | | |\n", (stats[toolOursPhys].Seconds/c.Seconds-1)*100)
		}
	}
	if len(res.loadTools) > 0 {
		for _, t := range res.loadTools {
			row("Load into a fresh server", stats[t])
		}
		ours := stats[toolLoadOurs]
		ratio("Load speed-up, mysql-pitr over mariadb < dump.sql (time ratio)", stats[toolLoadMariaDB].Seconds/ours.Seconds, goalLoadVsSQL)
		ratio("Load speed-up, mysql-pitr over myloader (time ratio)", stats[toolMyloader].Seconds/ours.Seconds, goalLoadVsMyload)
	}
	return b.String()
}
