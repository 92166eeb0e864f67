package main

import (
	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"

	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// goalSpeedup is the replay time of the pipeline over the built-in server's.
const goalSpeedup = 3.0

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

// describeMachine reads what the numbers depend on.
func describeMachine(mariadbVersion string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), MariaDB: mariadbVersion}
	m.CPUModel = benchkit.ProcField("/proc/cpuinfo", "model name")
	m.MemTotal = benchkit.ProcField("/proc/meminfo", "MemTotal")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(m.MemTotal, " kB"), 10, 64); err == nil {
		m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if bin, err := testbed.LookBinary("sysbench"); err == nil {
		if out, err := exec.Command(bin, "--version").Output(); err == nil {
			m.Sysbench = strings.TrimSpace(string(out))
		}
	}
	return m
}

// results is everything the benchmark measured.
type results struct {
	cfg            config
	machine        machine
	ds             dataset
	prepare        time.Duration
	snap, physSnap snapshotInfo
	gen            generated
	checksums      map[string]int64
	modes          []string
	restores       []restoreRun
	// tempServer are the settings of a server started as the restore
	// starts its temporary server (nil without -verify).
	tempServer []setting
	started    time.Time
	finished   time.Time
}

func mb(n float64) string { return fmt.Sprintf("%.1f MB", n/1e6) }

// gb formats a size in GB, or in MB below 1 GB.
func gb(n float64) string {
	if n < 1e9 {
		return mb(n)
	}
	return fmt.Sprintf("%.2f GB", n/1e9)
}

// plural is "1 file", "2 files".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// cell escapes pipes for a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// modeTitle names a mode for the reader.
func modeTitle(mode string) string {
	switch mode {
	case modeServer:
		return "built-in binlog server (--replay server)"
	case modeMysqlbinlog:
		return "mariadb-binlog | mariadb (--replay mysqlbinlog)"
	case modePhysical:
		return "physical snapshot, --replay server"
	}
	return mode
}

// programs lists the programs of a CPU or RSS breakdown, largest first.
func programs[V int64 | float64 | time.Duration](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case m[a] > m[b]:
			return -1
		case m[a] < m[b]:
			return 1
		}
		return strings.Compare(a, b)
	})
	return names
}

// cpuBreakdown formats CPU seconds by program: "mariadbd 80.1, mysql-pitr 9.9".
func cpuBreakdown(m map[string]float64) string {
	var parts []string
	for _, n := range programs(m) {
		if m[n] >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.1f", n, m[n]))
		}
	}
	return strings.Join(parts, ", ")
}

// rssBreakdown formats peak RSS by program: "mariadbd 260.1 MB, mysql-pitr 40.2 MB".
func rssBreakdown(m map[string]int64) string {
	var parts []string
	for _, n := range programs(m) {
		if n != "other" && m[n] > 0 {
			parts = append(parts, n+" "+mb(float64(m[n])))
		}
	}
	return strings.Join(parts, ", ")
}

func seconds(m map[string]time.Duration) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v.Seconds()
	}
	return out
}

// printRun prints one raw run line.
func printRun(w io.Writer, r restoreRun) {
	label := fmt.Sprintf("run %d.%d %-15s", r.Order, r.Run, r.Mode)
	if r.Err != nil {
		fmt.Fprintf(w, "  %s FAILED after %.1f s: %v\n", label, r.Total.Seconds(), r.Err)
		return
	}
	fmt.Fprintf(w, "  %s total %7.2f s  replay %7.2f s (%d transactions, %.0f tx/s)  [%s]  cpu %.1f s, replay cpu %.1f s (%s)  peak rss %s  %s\n",
		label, r.Total.Seconds(), r.Replay.Seconds(), r.Transactions, float64(r.Transactions)/r.Replay.Seconds(), r.Phases,
		r.CPU.Seconds(), r.replayCPU().Seconds(), cpuBreakdown(seconds(r.ReplayCPU)), rssBreakdown(r.PeakRSS), r.Load)
}

// modeStats are the medians over one mode's successful runs.
type modeStats struct {
	Mode     string
	OK, Runs int
	// Seconds, medians.
	Total, Replay                    float64
	Fetch, Snapshot, ReplayLog, Fin  float64
	CPU, ReplayCPU                   float64
	ReplayCPUBy                      map[string]float64
	Others                           float64
	PeakRSS                          map[string]int64 // the largest over runs
	Transactions                     int              // of every run, when they agree
	TransactionsAgree                bool
	transactionsMin, transactionsMax int
}

func summarize(mode string, runs []restoreRun) modeStats {
	st := modeStats{Mode: mode, ReplayCPUBy: map[string]float64{}, PeakRSS: map[string]int64{}}
	var total, replay, fetch, snap, rlog, fin, cpu, rcpu, others []float64
	by := map[string][]float64{}
	for _, r := range runs {
		if r.Mode != mode {
			continue
		}
		st.Runs++
		if r.Err != nil {
			continue
		}
		st.OK++
		total = append(total, r.Total.Seconds())
		replay = append(replay, r.Replay.Seconds())
		fetch = append(fetch, r.Phases.Fetch.Seconds())
		snap = append(snap, r.Phases.Snapshot.Seconds())
		rlog = append(rlog, r.Phases.Replay.Seconds())
		fin = append(fin, r.Phases.Finish.Seconds())
		cpu = append(cpu, r.CPU.Seconds())
		rcpu = append(rcpu, r.replayCPU().Seconds())
		others = append(others, r.Load.Others)
		for p, d := range r.ReplayCPU {
			by[p] = append(by[p], d.Seconds())
		}
		for p, n := range r.PeakRSS {
			st.PeakRSS[p] = max(st.PeakRSS[p], n)
		}
		if st.OK == 1 {
			st.transactionsMin, st.transactionsMax = r.Transactions, r.Transactions
		}
		st.transactionsMin, st.transactionsMax = min(st.transactionsMin, r.Transactions), max(st.transactionsMax, r.Transactions)
	}
	med := benchkit.Median
	st.Total, st.Replay, st.CPU, st.ReplayCPU, st.Others = med(total), med(replay), med(cpu), med(rcpu), med(others)
	st.Fetch, st.Snapshot, st.ReplayLog, st.Fin = med(fetch), med(snap), med(rlog), med(fin)
	for p, xs := range by {
		// A program missing from a run used no CPU in it.
		for len(xs) < st.OK {
			xs = append(xs, 0)
		}
		st.ReplayCPUBy[p] = med(xs)
	}
	st.Transactions, st.TransactionsAgree = st.transactionsMax, st.transactionsMin == st.transactionsMax
	return st
}

// transactions formats the count, or the range when runs disagree (which
// would mean they did not replay the same binlog).
func (st modeStats) transactions() string {
	if st.TransactionsAgree {
		return strconv.Itoa(st.Transactions)
	}
	return fmt.Sprintf("%d–%d (runs disagree)", st.transactionsMin, st.Transactions)
}

func (st modeStats) line(binlogBytes int64) string {
	return fmt.Sprintf("%-15s total %7.2f s  replay %7.2f s (%.1f MB/s, %.0f tx/s)  [fetch %.1f s, snapshot %.1f s, replay %.1f s, finish %.1f s]  cpu %.1f s, replay cpu %.1f s (%s)  peak rss %s  others %.0f%%  %s transactions  (%d of %d runs ok)",
		st.Mode, st.Total, st.Replay, float64(binlogBytes)/1e6/st.Replay, float64(st.Transactions)/st.Replay,
		st.Fetch, st.Snapshot, st.ReplayLog, st.Fin, st.CPU, st.ReplayCPU, cpuBreakdown(st.ReplayCPUBy),
		rssBreakdown(st.PeakRSS), st.Others*100, st.transactions(), st.OK, st.Runs)
}

// printSummary prints the readable summary and the Markdown table.
func printSummary(w io.Writer, res *results) {
	fmt.Fprintf(w, "\n==== summary ====\n")
	fmt.Fprintf(w, "machine: %s\n", res.machine)
	fmt.Fprintf(w, "dataset: %s (data_length + index_length of sbtest), %d rows, %d tables; prepared in %.0f s\n",
		mb(float64(res.ds.Bytes)), res.ds.Rows, res.cfg.tables, res.prepare.Seconds())
	fmt.Fprintf(w, "%s\n", res.snap)
	if res.physSnap.ID != "" {
		fmt.Fprintf(w, "%s\n", res.physSnap)
	}
	fmt.Fprintf(w, "%s\n", res.gen)
	if len(res.tempServer) > 0 {
		fmt.Fprintf(w, "temporary server: %s\n", settingsText(res.tempServer))
	}
	fmt.Fprintf(w, "restores (order.run mode ...):\n")
	for _, r := range res.restores {
		printRun(w, r)
	}
	stats := map[string]modeStats{}
	for _, m := range res.modes {
		st := summarize(m, res.restores)
		stats[m] = st
		fmt.Fprintf(w, "median %s\n", st.line(res.gen.Bytes))
	}
	fmt.Fprintf(w, "total wall time %s\n", res.finished.Sub(res.started).Round(time.Second))
	fmt.Fprintf(w, "\n==== markdown ====\n\n%s", markdown(res, stats))
}

func settingsText(s []setting) string {
	var parts []string
	for _, v := range s {
		val := v.Value
		if n, err := strconv.ParseInt(val, 10, 64); err == nil && n >= 1<<20 && n%(1<<20) == 0 {
			val = mib(n)
		}
		parts = append(parts, v.Name+"="+val)
	}
	return strings.Join(parts, ", ")
}

// markdown is the results table for bench/README.md.
func markdown(res *results, stats map[string]modeStats) string {
	var b strings.Builder
	cfg, g := res.cfg, res.gen
	others := 0.0
	for _, st := range stats {
		if !math.IsNaN(st.Others) {
			others = max(others, st.Others)
		}
	}
	fmt.Fprintf(&b, "Machine: %s; other processes used up to %.0f%% of it during the restores (the largest median of a mode).  \n", res.machine, others*100)
	fmt.Fprintf(&b, "Snapshot: logical, sysbench oltp_write_only prepare, %d tables × %d rows = %s of tables and indexes (%s uncompressed in the snapshot, %s stored).  \n",
		cfg.tables, cfg.tableSize, mb(float64(res.ds.Bytes)), mb(float64(res.snap.Bytes)), mb(float64(res.snap.Stored)))
	fmt.Fprintf(&b, "Binlog after it: %s in %s (%s stored), %d transactions of sysbench oltp_write_only (%d threads, unthrottled: %.0f tps on the source, %.0f s).  \n",
		mb(float64(g.Bytes)), plural(g.Files, "file"), mb(float64(g.Stored)), g.Transactions, cfg.loadThreads, g.TPS(), g.Duration.Seconds())
	if len(res.tempServer) > 0 {
		fmt.Fprintf(&b, "Temporary server (both modes): %s.  \n", settingsText(res.tempServer))
	}
	fmt.Fprintf(&b, "Each run: `mysql-pitr restore --to latest --datadir` into a fresh datadir, `--threads %d`; %s per mode, alternating; medians. MB = 10⁶ bytes.\n\n", cfg.threads, plural(cfg.runs, "run"))
	b.WriteString("| Measure | Result | Goal | Met |\n|---|---|---|---|\n")
	replayRow := func(mode string) {
		st := stats[mode]
		if st.OK == 0 {
			fmt.Fprintf(&b, "| Replay, %s | every run failed | | |\n", cell(modeTitle(mode)))
			return
		}
		fmt.Fprintf(&b, "| Replay, %s | %.1f s: %.1f MB/s, %.0f transactions/s; CPU %.1f s (%s); peak RSS %s; others used %.0f%% of the machine | | |\n",
			cell(modeTitle(mode)), st.Replay, float64(g.Bytes)/1e6/st.Replay, float64(st.Transactions)/st.Replay,
			st.ReplayCPU, cpuBreakdown(st.ReplayCPUBy), rssBreakdown(st.PeakRSS), st.Others*100)
	}
	replayRow(modeServer)
	replayRow(modeMysqlbinlog)
	srv, pipe := stats[modeServer], stats[modeMysqlbinlog]
	ratio := pipe.Replay / srv.Replay
	if srv.OK == 0 || pipe.OK == 0 || math.IsNaN(ratio) || math.IsInf(ratio, 0) {
		fmt.Fprintf(&b, "| Replay speed-up, server over mysqlbinlog (time ratio) | n/a | ≥ %.1f | **no** |\n", goalSpeedup)
	} else {
		fmt.Fprintf(&b, "| Replay speed-up, server over mysqlbinlog (time ratio) | %.2f | ≥ %.1f | %s |\n", ratio, goalSpeedup, benchkit.Met(ratio >= goalSpeedup))
		fmt.Fprintf(&b, "| Replay CPU-seconds, server / mysqlbinlog | %.2f | | |\n", srv.ReplayCPU/pipe.ReplayCPU)
	}
	fmt.Fprintf(&b, "| Transactions replayed per restore, server / mysqlbinlog | %s / %s | | |\n", srv.transactions(), pipe.transactions())
	if srv.OK > 0 && g.TPS() > 0 {
		rate := float64(srv.Transactions) / srv.Replay
		fmt.Fprintf(&b, "| Replay rate, built-in server, over the load's rate on the source | %.2f× (%.0f vs %.0f transactions/s): an hour of this load replays in about %s | | |\n",
			rate/g.TPS(), rate, g.TPS(), rto(3600*g.TPS()/rate))
	}
	for _, mode := range res.modes {
		st := stats[mode]
		if st.OK == 0 {
			fmt.Fprintf(&b, "| Whole restore, %s | every run failed | | |\n", cell(modeTitle(mode)))
			continue
		}
		fmt.Fprintf(&b, "| Whole restore, %s | %.1f s (fetch %.1f s, snapshot %.1f s, replay %.1f s, finish %.1f s); CPU %.1f s | | |\n",
			cell(modeTitle(mode)), st.Total, st.Fetch, st.Snapshot, st.ReplayLog, st.Fin, st.CPU)
	}
	// The RTO: the default replay mode, with the binlog stated as the hour
	// of load it would be at the rate that makes it one hour.
	hourTPS := float64(srv.Transactions) / 3600
	if srv.OK > 0 {
		fmt.Fprintf(&b, "| **RTO** for a logical snapshot of %s + %s binlog (= one hour of oltp_write_only at %.0f tps) | %s | | |\n",
			gb(float64(res.ds.Bytes)), gb(float64(g.Bytes)), hourTPS, rto(srv.Total))
	}
	if phys, ok := stats[modePhysical]; ok && phys.OK > 0 {
		fmt.Fprintf(&b, "| **RTO** for a physical snapshot of %s (%s stored) + %s binlog (= one hour at %.0f tps) | %s | | |\n",
			gb(float64(res.physSnap.Bytes)), mb(float64(res.physSnap.Stored)), gb(float64(g.Bytes)), hourTPS, rto(phys.Total))
	}
	return b.String()
}

// rto formats seconds as "754 s (12 min 34 s)".
func rto(secs float64) string {
	d := time.Duration(secs * float64(time.Second)).Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%.1f s", secs)
	}
	return fmt.Sprintf("%.0f s (%d min %02d s)", secs, int(d.Minutes()), int(d.Seconds())%60)
}
