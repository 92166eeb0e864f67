package main

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// breakdown formats CPU seconds or bytes by program, largest first:
// "mariadbd 80.1, mysql-pitr 0.9" or "mariadbd 250.0 MB, mysql-pitr 40.0 MB".
func breakdown[V int64 | time.Duration](m map[string]V) string {
	names := make([]string, 0, len(m))
	for n := range m {
		if n != "other" || len(m) == 1 {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b)) })
	var parts []string
	for _, n := range names {
		switch v := any(m[n]).(type) {
		case time.Duration:
			if v >= 50*time.Millisecond {
				parts = append(parts, fmt.Sprintf("%s %.1f", n, v.Seconds()))
			}
		case int64:
			parts = append(parts, n+" "+kit.MB(v))
		}
	}
	return strings.Join(parts, ", ")
}

// modeStats are the medians over one mode's successful restores.
type modeStats struct {
	ok                                int
	total, replay, fetch, snap, phase float64
	fin, cpu, replayCPU, others       float64
	cpuBy                             map[string]time.Duration
	rss                               map[string]int64 // the largest over runs
	txMin, txMax                      int
}

func (r *restoreBench) summarize(mode string, runs []kit.Run) modeStats {
	st := modeStats{cpuBy: map[string]time.Duration{}, rss: map[string]int64{}}
	var total, replay, fetch, snap, phase, fin, cpu, rcpu, others []float64
	by := map[string][]float64{}
	for _, run := range runs {
		d := r.details[run.Order]
		if run.Tool != mode || run.Err != nil || d == nil {
			continue
		}
		if st.ok++; st.ok == 1 {
			st.txMin, st.txMax = d.transactions, d.transactions
		}
		st.txMin, st.txMax = min(st.txMin, d.transactions), max(st.txMax, d.transactions)
		total, replay, cpu = append(total, run.Time.Seconds()), append(replay, d.replay.Seconds()), append(cpu, run.Usage.CPU.Seconds())
		fetch, snap, phase, fin = append(fetch, d.fetch.Seconds()), append(snap, d.snap.Seconds()), append(phase, d.phase.Seconds()), append(fin, d.fin.Seconds())
		rcpu, others = append(rcpu, d.cpu().Seconds()), append(others, run.Load.Others)
		for p, c := range d.replayCPU {
			by[p] = append(by[p], c.Seconds())
		}
		for p, n := range d.peakRSS {
			st.rss[p] = max(st.rss[p], n)
		}
	}
	m := kit.Median
	st.total, st.replay, st.fetch, st.snap, st.phase, st.fin = m(total), m(replay), m(fetch), m(snap), m(phase), m(fin)
	st.cpu, st.replayCPU, st.others = m(cpu), m(rcpu), m(others)
	for p, xs := range by {
		for len(xs) < st.ok { // a program missing from a run used no CPU in it
			xs = append(xs, 0)
		}
		st.cpuBy[p] = time.Duration(m(xs) * float64(time.Second))
	}
	return st
}

// transactions is the count every run replayed, or the range when they
// disagree (which would mean they did not replay the same binlog).
func (st modeStats) transactions() string {
	if st.txMin == st.txMax {
		return strconv.Itoa(st.txMax)
	}
	return fmt.Sprintf("%d–%d (runs disagree)", st.txMin, st.txMax)
}

func (r *restoreBench) report(rep *kit.Report, ds kit.Dataset, logical, phys *catalog.Manifest, fill kit.Fill, g replayed, modes []string, runs []kit.Run) {
	st := map[string]modeStats{}
	for _, mode := range modes {
		st[mode] = r.summarize(mode, runs)
		s := st[mode]
		fmt.Printf("  median %-15s total %.2f s  replay %.2f s  [fetch %.1f s, snapshot %.1f s, replay %.1f s, finish %.1f s]  cpu %.1f s, replay cpu %.1f s (%s)  peak rss %s  %s transactions  (%d of %d runs ok)\n",
			mode, s.total, s.replay, s.fetch, s.snap, s.phase, s.fin, s.cpu, s.replayCPU, breakdown(s.cpuBy), breakdown(s.rss), s.transactions(), s.ok, r.runs)
	}
	rep.Line("Snapshot: logical, sysbench prepare, %d tables × %d rows = %s of tables and indexes (%s uncompressed in the snapshot, %s stored).",
		r.tables, r.tableSize, kit.MB(ds.Bytes), kit.MB(logical.Bytes), kit.MB(logical.StoredBytes))
	rep.Line("Binlog after it: %s in %s (%s stored), written by sysbench oltp_write_only (%d threads, unthrottled): %s.",
		kit.MB(g.bytes), kit.Plural(g.files, "file"), kit.MB(g.stored), r.loadThreads, fill)
	rep.Line("Temporary server (every mode): %s.", tempServer)
	rep.Line("Each run: `mysql-pitr restore --to latest --datadir` into a fresh datadir, `--threads %d`; %s per mode, alternating; medians. MB = 10⁶ bytes.",
		r.threads, kit.Plural(r.runs, "run"))
	for _, mode := range []string{modeServer, modeMysqlbinlog} {
		s := st[mode]
		if s.ok == 0 {
			rep.Row("Replay, "+r.title(mode), "every run failed")
			continue
		}
		rep.Row("Replay, "+r.title(mode), "%.1f s: %.1f MB/s, %.0f transactions/s; CPU %.1f s (%s); peak RSS %s; others used %.0f%% of the machine",
			s.replay, float64(g.bytes)/1e6/s.replay, float64(s.txMax)/s.replay, s.replayCPU, breakdown(s.cpuBy), breakdown(s.rss), s.others*100)
	}
	srv, pipe := st[modeServer], st[modeMysqlbinlog]
	rep.Ratio("Replay speed-up, server over mysqlbinlog (time ratio)", pipe.replay/srv.replay, goalReplay, true)
	rep.Row("Replay CPU-seconds, server / mysqlbinlog", "%.2f", srv.replayCPU/pipe.replayCPU)
	rep.Row("Transactions replayed per restore, server / mysqlbinlog", "%s / %s", srv.transactions(), pipe.transactions())
	if rate := float64(srv.txMax) / srv.replay; srv.ok > 0 && fill.TPS() > 0 {
		rep.Row("Replay rate, built-in server, over the load's rate on the source", "%.2f× (%.0f vs %.0f transactions/s): an hour of this load replays in about %s",
			rate/fill.TPS(), rate, fill.TPS(), rto(3600*fill.TPS()/rate))
	}
	for _, mode := range modes {
		if s := st[mode]; s.ok > 0 {
			rep.Row("Whole restore, "+r.title(mode), "%.1f s (fetch %.1f s, snapshot %.1f s, replay %.1f s, finish %.1f s); CPU %.1f s",
				s.total, s.fetch, s.snap, s.phase, s.fin, s.cpu)
		}
	}
	hourTPS := float64(srv.txMax) / 3600
	if srv.ok > 0 {
		rep.Row(fmt.Sprintf("**RTO** for a logical snapshot of %s + %s binlog (= one hour of oltp_write_only at %.0f tps)", kit.MB(ds.Bytes), kit.MB(g.bytes), hourTPS),
			"%s", rto(srv.total))
	}
	if s := st[modePhysical]; phys != nil && s.ok > 0 {
		rep.Row(fmt.Sprintf("**RTO** for a physical snapshot of %s (%s stored) + %s binlog (= one hour at %.0f tps)", kit.MB(phys.Bytes), kit.MB(phys.StoredBytes), kit.MB(g.bytes), hourTPS),
			"%s", rto(s.total))
	}
}

// rto formats seconds as "42.3 s" or "754 s (12 min 34 s)".
func rto(secs float64) string {
	if secs < 60 {
		return fmt.Sprintf("%.1f s", secs)
	}
	d := time.Duration(secs * float64(time.Second)).Round(time.Second)
	return fmt.Sprintf("%.0f s (%d min %02d s)", secs, int(d.Minutes()), int(d.Seconds())%60)
}
