package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Cadences of the RPO probe.
const (
	probeInterval  = 100 * time.Millisecond
	statusInterval = 10 * time.Millisecond
	// probeDrain is how long probes still pending when the load ends may
	// take to become durable before they count as unresolved.
	probeDrain = 30 * time.Second
)

// rpoResult is one RPO run: how long after a commit returned the archive
// held it, for every probe.
type rpoResult struct {
	Samples    []time.Duration // sorted
	Worst      []probe         // the largest samples, for spotting a pattern
	Commits    []time.Duration // how long each probe's INSERT took
	Probes     int
	Unresolved int
	ProbeErrs  int
	Duration   time.Duration
	TPS        float64 // sysbench's
	Binlog     int64   // binlog bytes the server wrote during the load
	MaxLag     int64   // largest lag_bytes seen in /status
	CatchUp    time.Duration
	Load       kit.Load
	Usage      kit.Usage // the agent's
	Err        error
}

// probe is one marker transaction: committed at t0 (at into the load),
// ending at or before pos; rpo is how long until the archive held it.
type probe struct {
	pos             catalog.Position
	t0              time.Time
	at, commit, rpo time.Duration
}

// runRPO measures the RPO under a sysbench load at a fixed rate, with one
// agent that has already caught up with the server.
func (a *archive) runRPO(ctx context.Context, b *bench, dir string, sb kit.Sysbench) *rpoResult {
	r := &rpoResult{}
	s := a.srv
	if r.Err = a.prepareRPO(ctx); r.Err != nil {
		return r
	}
	end, err := s.BinlogEnd(ctx)
	if r.Err = err; err != nil {
		return r
	}
	url, _, _ := a.storage(dir, toolAgentFile)
	begin := time.Now()
	ag, err := kit.StartAgent(b.mp, s, url, nil, dir, a.serverID+1, a.flush)
	if r.Err = err; err != nil {
		return r
	}
	defer ag.Stop(10 * time.Second)
	if r.Err = ag.WaitDurable(ctx, end, 20*time.Millisecond, captureTimeout, nil); r.Err != nil {
		return r
	}
	r.CatchUp = time.Since(begin)
	before, err := s.BinaryLogs(ctx)
	if r.Err = err; err != nil {
		return r
	}
	sb.Threads = a.rpoThreads
	kit.Logf("RPO: %s of sysbench oltp_write_only at %d tps (%d threads), a probe every %s, flush interval %s",
		a.rpoDuration, a.rate, a.rpoThreads, probeInterval, a.flush)
	load, err := kit.Start(sb.Args("--time="+strconv.Itoa(int(a.rpoDuration.Seconds())), "--rate="+strconv.Itoa(a.rate),
		"--report-interval=10", "run"), nil, filepath.Join(dir, "sysbench-rpo.log"))
	if r.Err = err; err != nil {
		return r
	}
	defer load.Stop(time.Second)
	loadBegin, meter := time.Now(), kit.StartMeter(s.CPU)
	agentBefore, _ := kit.ReadUsage(ag.Pid())

	probes := make(chan probe, 1<<16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var probeErr error
	wg.Go(func() {
		defer close(probes)
		probeErr = a.probeLoop(ctx, r, probes, stop)
	})
	var samples []probe
	wg.Go(func() { samples = watchDurable(ctx, ag, r, probes) })
	select {
	case <-load.Done():
	case <-ctx.Done():
	}
	r.Duration = time.Since(loadBegin)
	if after, err := kit.ReadUsage(ag.Pid()); err == nil {
		ours := after.CPU - agentBefore.CPU
		if done, _ := load.Exited(); done {
			ours += load.Usage().CPU
		}
		_, r.Load = meter.Stop(ours)
	}
	close(stop)
	wg.Wait()
	r.addSamples(samples, loadBegin)
	if done, err := ag.Exited(); done {
		r.Err = fmt.Errorf("agent exited during the load (%v):\n%s", err, ag.LogTail(10))
		return r
	}
	r.Usage, r.Err = kit.ReadUsage(ag.Pid())
	r.Err = errors.Join(r.Err, probeErr, load.Wait())
	r.TPS = kit.SysbenchTPS(load.LogPath())
	after, err := s.BinaryLogs(ctx)
	r.Err = errors.Join(r.Err, err)
	r.Binlog = kit.TotalSize(after) - kit.TotalSize(before)
	return r
}

// prepareRPO purges the binlog the capture phase left and creates the
// probe table. A fresh agent would otherwise first archive the capture
// phase's gigabyte, and its peak RSS would be the capture's, not the
// steady state's.
func (a *archive) prepareRPO(ctx context.Context) error {
	if err := a.srv.PurgeOld(ctx); err != nil {
		return err
	}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS pitr_bench",
		"CREATE TABLE IF NOT EXISTS pitr_bench.probe (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL)",
	} {
		if _, err := a.srv.DB.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// addSamples records the probes' RPOs, sorted, and keeps the five worst
// with when into the load (which began at loadBegin) each was committed.
func (r *rpoResult) addSamples(samples []probe, loadBegin time.Time) {
	slices.SortFunc(samples, func(x, y probe) int { return cmp.Compare(y.rpo, x.rpo) })
	for _, p := range samples {
		r.Samples = append(r.Samples, p.rpo)
	}
	slices.Sort(r.Samples)
	r.Worst = samples[:min(len(samples), 5)]
	for i := range r.Worst {
		r.Worst[i].at = r.Worst[i].t0.Sub(loadBegin)
	}
}

// probeLoop commits a marker row every probeInterval on its own connection
// and sends where the server's binlog ended right after the commit
// returned. A probe that fails is counted, not fatal: on a saturated
// machine a commit may time out, and that is worth reporting.
func (a *archive) probeLoop(ctx context.Context, r *rpoResult, out chan<- probe, stop <-chan struct{}) error {
	conn, err := a.srv.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("probe connection: %w", err)
	}
	defer conn.Close()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		start := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.ExecContext(qctx, "INSERT INTO pitr_bench.probe (at) VALUES (NOW(6))")
		// t0 is when the commit (autocommit) returned: from then on, the
		// application counts the transaction as done.
		t0 := time.Now()
		var pos catalog.Position
		if err == nil {
			pos, err = kit.BinlogEnd(qctx, conn, a.flavor)
		}
		cancel()
		if err != nil {
			r.ProbeErrs++
			continue
		}
		r.Commits = append(r.Commits, t0.Sub(start))
		out <- probe{pos: pos, t0: t0, commit: t0.Sub(start)}
		r.Probes++
	}
}

// watchDurable polls /status every statusInterval and, for each probe in
// order, takes the first poll whose durable position reaches it: t1 − t0
// is the probe's RPO. Probes come in commit order, so only the oldest
// pending one needs checking.
func watchDurable(ctx context.Context, ag *kit.Agent, r *rpoResult, probes <-chan probe) (done []probe) {
	var pending []probe
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	open, drainUntil := true, time.Time{}
	for {
	recv: // every probe sent so far, without blocking the cadence
		for open {
			select {
			case p, ok := <-probes:
				if !ok {
					open, drainUntil = false, time.Now().Add(probeDrain)
					break recv
				}
				pending = append(pending, p)
			default:
				break recv
			}
		}
		if !open && (len(pending) == 0 || time.Now().After(drainUntil)) {
			r.Unresolved = len(pending)
			return done
		}
		select {
		case <-ctx.Done():
			r.Unresolved = len(pending)
			return done
		case <-t.C:
		}
		if len(pending) == 0 {
			continue
		}
		st, err := ag.ReadStatus(ctx)
		t1 := time.Now()
		if err != nil {
			continue
		}
		r.MaxLag = max(r.MaxLag, st.Binlog.LagBytes)
		for len(pending) > 0 && kit.PosAtLeast(st.Binlog.Durable, pending[0].pos) {
			pending[0].rpo = t1.Sub(pending[0].t0)
			done, pending = append(done, pending[0]), pending[1:]
		}
	}
}

func (r *rpoResult) String() string {
	s := r.Samples
	var b strings.Builder
	if r.Err != nil {
		fmt.Fprintf(&b, "RPO run FAILED: %v\n  ", r.Err)
	}
	fmt.Fprintf(&b, "RPO: %d probes (%d durable, %d unresolved, %d probe errors) over %.1f s of load at %.0f tps, %s of binlog (%.2f MB/s), %s; agent catch-up %.1f s",
		r.Probes, len(s), r.Unresolved, r.ProbeErrs, r.Duration.Seconds(), r.TPS, kit.MB(r.Binlog), kit.MBps(r.Binlog, r.Duration), r.Load, r.CatchUp.Seconds())
	if len(s) > 0 {
		fmt.Fprintf(&b, "\n  RPO: p50 %s  p90 %s  p99 %s  max %s  (min %s); max lag %s; agent cpu %.2f s, peak rss %s",
			kit.Ms(kit.Percentile(s, 50)), kit.Ms(kit.Percentile(s, 90)), kit.Ms(kit.Percentile(s, 99)), kit.Ms(s[len(s)-1]), kit.Ms(s[0]),
			kit.MB(r.MaxLag), r.Usage.CPU.Seconds(), kit.MB(r.Usage.PeakRSS))
	}
	if c := slices.Sorted(slices.Values(r.Commits)); len(c) > 0 {
		fmt.Fprintf(&b, "\n  RPO: probe commit latency p50 %s  p99 %s  max %s", kit.Ms(kit.Percentile(c, 50)), kit.Ms(kit.Percentile(c, 99)), kit.Ms(c[len(c)-1]))
	}
	var worst []string
	for _, p := range r.Worst {
		worst = append(worst, fmt.Sprintf("%s at +%.1fs (commit %s)", kit.Ms(p.rpo), p.at.Seconds(), kit.Ms(p.commit)))
	}
	if len(worst) > 0 {
		fmt.Fprintf(&b, "\n  RPO: worst probes: %s", strings.Join(worst, ", "))
	}
	return b.String()
}

func (r *rpoResult) report(rep *kit.Report, flush time.Duration) {
	s := r.Samples
	goal := "p99 ≤ " + kit.Ms(goalRPOp99)
	if len(s) == 0 {
		rep.Goal("RPO under load", fmt.Sprintf("no probe became durable (%v)", r.Err), goal, false)
	} else {
		p99 := kit.Percentile(s, 99)
		rep.Goal(fmt.Sprintf("RPO under load (%d probes, %.0f tps, %.2f MB/s binlog, flush %s; others used %.0f%% of the machine): p50 / p90 / p99 / max",
			len(s), r.TPS, kit.MBps(r.Binlog, r.Duration), flush, r.Load.Others*100),
			fmt.Sprintf("%s / %s / %s / %s", kit.Ms(kit.Percentile(s, 50)), kit.Ms(kit.Percentile(s, 90)), kit.Ms(p99), kit.Ms(s[len(s)-1])),
			goal, p99 <= goalRPOp99 && r.Unresolved == 0 && r.Err == nil)
	}
	rss := float64(r.Usage.PeakRSS)
	rep.Goal("Agent peak RSS, RPO run", kit.MB(rss), "≤ "+kit.MB(goalAgentMB), rss > 0 && rss <= goalAgentMB)
}
