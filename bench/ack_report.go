package main

import (
	"fmt"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
)

// ackStats are one configuration's medians at one thread count, over its
// valid loads.
type ackStats struct {
	valid, runs                              int
	tps, p50, p99, ackP50, ackP99, cpuPerTxn float64 // ms; µs per transaction
	invalid                                  []string
}

func (a *ackBench) summarize(runs []kit.Run, cfg string, threads int) ackStats {
	var st ackStats
	var tps, p50, p99, ack50, ack99, cpu []float64
	for _, r := range runs {
		if r.Tool != cfg {
			continue
		}
		st.runs++
		d := a.details[r.Order]
		if d == nil {
			continue
		}
		for _, l := range d.loads {
			switch {
			case l.threads != threads:
			case l.invalid != "":
				st.invalid = append(st.invalid, fmt.Sprintf("run %d: %s", r.Order, l.invalid))
			case l.ok():
				st.valid++
				tps, p50, p99 = append(tps, l.tps), append(p50, l.p50), append(p99, l.p99)
				ack50, ack99 = append(ack50, l.ackP50), append(ack99, l.ackP99)
				if l.txns > 0 {
					cpu = append(cpu, float64(l.subjectCPU.Microseconds())/float64(l.txns))
				}
			}
		}
	}
	m := kit.Median
	st.tps, st.p50, st.p99, st.ackP50, st.ackP99, st.cpuPerTxn = m(tps), m(p50), m(p99), m(ack50), m(ack99), m(cpu)
	return st
}

// result is the Markdown result cell of a configuration's medians.
func (st ackStats) result(cfg string) string {
	if st.valid == 0 {
		return fmt.Sprintf("no valid load (%d runs)", st.runs)
	}
	s := fmt.Sprintf("%.0f tps, p50 %.2f ms, p99 %.2f ms", st.tps, st.p50, st.p99)
	switch {
	case cfg == cfgStock || cfg == cfgStockIO:
		s += fmt.Sprintf("; replica CPU %.0f µs per transaction", st.cpuPerTxn)
	case ackModes[cfg] != "":
		s += fmt.Sprintf("; agent CPU %.0f µs per transaction; the agent's own ack latency p50 %.2f ms, p99 %.2f ms", st.cpuPerTxn, st.ackP50, st.ackP99)
	}
	return s + fmt.Sprintf(" (%d of %d runs valid)", st.valid, st.runs)
}

func (a *ackBench) report(rep *kit.Report, runs []kit.Run) {
	rep.Line("Source: %s with production durability (sync_binlog=1, innodb_flush_log_at_trx_commit=1); semi-synchronous at AFTER_SYNC with a %s timeout, on only while a replica is attached. "+
		"Stock replica: the same release and settings, GTID auto-position, its semi-synchronous side on, sync_relay_log %s; IO thread only: its applier stopped during the loads. Agents: file:// storage, each --ack level continuing its own archive.",
		a.src.Version(), a.timeout, a.relayLogSync())
	rep.Line("Load: sysbench oltp_write_only, %d tables × %d rows, unthrottled, %s per load at %s threads; %d rounds of %s, alternating; medians of the valid loads. "+
		"Latency per transaction from sysbench's histogram, p50 and p99 by sysbench's own percentile rule.",
		a.tables, a.tableSize, a.duration, a.loadThreads, a.runs, strings.Join(a.cfgs, ", "))
	var invalid []string
	for _, n := range a.loads {
		st := map[string]ackStats{}
		for _, cfg := range a.cfgs {
			st[cfg] = a.summarize(runs, cfg, n)
			invalid = append(invalid, st[cfg].invalid...)
			kit.Logf("median %s at %d threads: %s", cfg, n, st[cfg].result(cfg))
			rep.Row(fmt.Sprintf("%s, %d threads", cfg, n), "%s", st[cfg].result(cfg))
		}
		spool, storage := st[cfgSpool], st[cfgStorage]
		for _, ref := range []string{cfgStock, cfgStockIO} {
			stock, ok := st[ref]
			if !ok {
				continue
			}
			if _, ok := st[cfgSpool]; ok {
				rep.Ratio(fmt.Sprintf("p50 latency, agent durable-spool / %s, %d threads", ref, n), spool.p50/stock.p50, goalAck, false)
				rep.Ratio(fmt.Sprintf("p99 latency, agent durable-spool / %s, %d threads", ref, n), spool.p99/stock.p99, goalAck, false)
			}
			if _, ok := st[cfgStorage]; ok {
				rep.Row(fmt.Sprintf("p50 and p99 latency, agent durable-storage / %s, %d threads", ref, n), "%.2f, %.2f", storage.p50/stock.p50, storage.p99/stock.p99)
			}
		}
		a.ratios(rep, st, cfgStock, "tps over the stock replica's", n, func(x, base ackStats) float64 { return x.tps / base.tps })
		a.ratios(rep, st, cfgAsync, "p50 latency over async's", n, func(x, base ackStats) float64 { return x.p50 / base.p50 })
	}
	result := "none"
	if len(invalid) > 0 {
		result = fmt.Sprintf("%d: %s", len(invalid), strings.Join(invalid, "; "))
	}
	rep.Row("Loads not counted: the source fell back to asynchronous replication, or did not wait for every commit", "%s", result)
}

// ratios adds a row of f of every other configuration measured against
// base, when base was measured.
func (a *ackBench) ratios(rep *kit.Report, st map[string]ackStats, base, measure string, threads int, f func(x, base ackStats) float64) {
	b, ok := st[base]
	if !ok {
		return
	}
	var names, vals []string
	for _, cfg := range a.cfgs {
		if cfg != base {
			names, vals = append(names, cfg), append(vals, fmt.Sprintf("%.2f", f(st[cfg], b)))
		}
	}
	if len(names) > 0 {
		rep.Row(fmt.Sprintf("%s: %s; %d threads", measure, strings.Join(names, ", "), threads), "%s", strings.Join(vals, ", "))
	}
}
