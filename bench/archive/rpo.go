package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Cadences of the RPO probe, as the brief for this benchmark fixes them.
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
	Samples []time.Duration
	// Worst are the probes with the largest samples, for spotting a
	// pattern (all at start-up, all at one flush, spread out).
	Worst []probeSample
	// Commits are how long each probe's INSERT took to commit.
	Commits    []time.Duration
	Probes     int
	Unresolved int
	ProbeErrs  int
	Duration   time.Duration
	TPS        float64 // sysbench's transactions per second
	Binlog     int64   // binlog bytes the server wrote during the load
	MaxLag     int64   // largest lag_bytes seen in /status
	CatchUp    time.Duration
	Load       machineLoad
	Usage      procUsage
	Err        error
}

// probe is one marker transaction: committed at t0, ending at or before pos.
type probe struct {
	pos    catalog.Position
	t0     time.Time
	commit time.Duration // how long the INSERT took
}

// probeSample is one probe's result: when it committed, counted from the
// start of the load, and how long until the archive held it.
type probeSample struct {
	t0              time.Time
	At, RPO, Commit time.Duration
}

// runRPO measures the RPO under sysbench load with one agent that has
// already caught up with the server.
func (b *bench) runRPO(ctx context.Context, dir string, sb sysbench) rpoResult {
	var r rpoResult
	s := b.srv
	// A fresh agent would otherwise first archive the gigabyte of the
	// capture phase, and its peak RSS would be the capture's, not the
	// steady state's.
	if err := s.purgeOld(ctx); err != nil {
		r.Err = err
		return r
	}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS pitr_bench",
		"CREATE TABLE IF NOT EXISTS pitr_bench.probe (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL)",
	} {
		if _, err := s.DB.ExecContext(ctx, q); err != nil {
			r.Err = fmt.Errorf("%s: %w", q, err)
			return r
		}
	}
	end, err := benchkit.MasterStatus(ctx, s.DB)
	if err != nil {
		r.Err = err
		return r
	}
	begin := time.Now()
	a, err := b.startAgent(dir, toolAgentFile, b.cfg.flushInterval)
	if err != nil {
		r.Err = err
		return r
	}
	defer a.Stop(10 * time.Second)
	if err := waitDurable(ctx, a, end, b.cfg.captureTimeout); err != nil {
		r.Err = err
		return r
	}
	r.CatchUp = time.Since(begin)
	before, err := benchkit.BinaryLogs(ctx, s.DB)
	if err != nil {
		r.Err = err
		return r
	}

	load, err := benchkit.StartChild("sysbench", sb.args(
		"--time="+strconv.Itoa(int(b.cfg.rpoDuration.Seconds())),
		"--rate="+strconv.Itoa(b.cfg.rate),
		"--report-interval=10", "run"), nil, filepath.Join(dir, "sysbench-rpo.log"))
	if err != nil {
		r.Err = err
		return r
	}
	defer load.Stop(time.Second)
	loadBegin, meter := time.Now(), b.startMeter()
	agentBefore, err := readUsage(a.Pid())
	if err != nil {
		r.Err = err
		return r
	}

	probes := make(chan probe, 1<<16)
	stopProbe := make(chan struct{})
	var wg sync.WaitGroup
	var probeErr error
	wg.Go(func() {
		defer close(probes)
		r.Probes, r.ProbeErrs, r.Commits, probeErr = b.probeLoop(ctx, probes, stopProbe)
	})
	var samples []probeSample
	wg.Go(func() {
		samples, r.Unresolved, r.MaxLag = watchDurable(ctx, a, probes)
	})
	select {
	case <-load.Done():
	case <-ctx.Done():
	}
	r.Duration = time.Since(loadBegin)
	if agentAfter, err := readUsage(a.Pid()); err == nil {
		ours := agentAfter.CPU - agentBefore.CPU
		if done, _ := load.Exited(); done {
			ours += load.Usage().CPU
		}
		_, r.Load = meter.stop(ours)
	}
	close(stopProbe)
	wg.Wait()
	for _, p := range samples {
		r.Samples = append(r.Samples, p.RPO)
	}
	slices.SortFunc(samples, func(a, b probeSample) int { return cmp.Compare(b.RPO, a.RPO) })
	for i := range samples {
		samples[i].At = samples[i].t0.Sub(loadBegin)
	}
	r.Worst = samples[:min(len(samples), 5)]
	if done, err := a.Exited(); done {
		r.Err = fmt.Errorf("agent exited during the load (%v):\n%s", err, a.LogTail(10))
		return r
	}
	r.Usage, r.Err = readUsage(a.Pid())
	r.Err = errors.Join(r.Err, probeErr)
	if load.Err() != nil {
		r.Err = errors.Join(r.Err, fmt.Errorf("sysbench run: %w\n%s", load.Err(), load.LogTail(10)))
	}
	r.TPS = sysbenchTPS(load.LogPath())
	after, err := benchkit.BinaryLogs(ctx, s.DB)
	if err != nil {
		r.Err = errors.Join(r.Err, err)
		return r
	}
	r.Binlog = totalSize(after) - totalSize(before)
	return r
}

// waitDurable waits until the agent's archive is durable up to end.
func waitDurable(ctx context.Context, a *agentProc, end catalog.Position, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last agentStatus
	for {
		st, err := readStatus(ctx, a.status)
		if err == nil {
			last = st
			if benchkit.PosAtLeast(st.Binlog.Durable, end) {
				return nil
			}
		}
		if done, err := a.Exited(); done {
			return fmt.Errorf("agent exited (%v):\n%s", err, a.LogTail(10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent durable at %s, not %s, after %s", last.Binlog.Durable, end, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// probeLoop commits a marker row every probeInterval on its own connection
// and sends where the server's binlog ended right after the commit returned.
// A probe that fails is counted, not fatal: on a saturated machine a commit
// may time out, and that is worth reporting rather than aborting the run.
func (b *bench) probeLoop(ctx context.Context, out chan<- probe, stop <-chan struct{}) (sent, failed int, commits []time.Duration, err error) {
	conn, err := b.srv.DB.Conn(ctx)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("probe connection: %w", err)
	}
	defer conn.Close()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return sent, failed, commits, nil
		case <-ctx.Done():
			return sent, failed, commits, ctx.Err()
		case <-t.C:
		}
		start := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.ExecContext(qctx, "INSERT INTO pitr_bench.probe (at) VALUES (NOW(6))")
		// t0 is when the commit (autocommit) returned to the client: from
		// then on, the application counts the transaction as done.
		t0 := time.Now()
		var pos catalog.Position
		if err == nil {
			pos, err = benchkit.MasterStatus(qctx, conn)
		}
		cancel()
		if err != nil {
			failed++
			continue
		}
		commits = append(commits, t0.Sub(start))
		out <- probe{pos: pos, t0: t0, commit: t0.Sub(start)}
		sent++
	}
}

// watchDurable polls /status every statusInterval and, for each probe in
// order, takes the first poll whose durable position reaches it: t1 − t0 is
// the probe's sample. Probes are in commit order, so only the oldest pending
// one needs checking.
func watchDurable(ctx context.Context, a *agentProc, probes <-chan probe) (samples []probeSample, unresolved int, maxLag int64) {
	var pending []probe
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	open := true
	var drainUntil time.Time
	for {
		// Take every probe sent so far without blocking the cadence.
	recv:
		for open {
			select {
			case p, ok := <-probes:
				if !ok {
					open = false
					drainUntil = time.Now().Add(probeDrain)
					break recv
				}
				pending = append(pending, p)
			default:
				break recv
			}
		}
		if !open && (len(pending) == 0 || time.Now().After(drainUntil)) {
			return samples, len(pending), maxLag
		}
		select {
		case <-ctx.Done():
			return samples, len(pending), maxLag
		case <-t.C:
		}
		if len(pending) == 0 {
			continue
		}
		st, err := readStatus(ctx, a.status)
		t1 := time.Now()
		if err != nil {
			continue
		}
		maxLag = max(maxLag, st.Binlog.LagBytes)
		for len(pending) > 0 && benchkit.PosAtLeast(st.Binlog.Durable, pending[0].pos) {
			p := pending[0]
			samples = append(samples, probeSample{t0: p.t0, RPO: t1.Sub(p.t0), Commit: p.commit})
			pending = pending[1:]
		}
	}
}
