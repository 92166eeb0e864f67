package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

const (
	// blockedWarmup is how long the write load runs before the snapshot
	// starts: its commits before then are the probe's baseline.
	blockedWarmup = 5 * time.Second
	// commitEvery is the cadence of the probe that commits an UPDATE.
	commitEvery = 10 * time.Millisecond
)

// commitProbe commits a one-row UPDATE every commitEvery on its own
// connection, so that a stall of writes shows as the commit's latency,
// whatever the snapshot says about itself.
type commitProbe struct {
	at   []time.Time // when each commit started
	lat  []time.Duration
	err  error
	done chan struct{}
}

func startCommitProbe(ctx context.Context, srv *kit.Server) (*commitProbe, error) {
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS pitr_bench",
		"CREATE TABLE IF NOT EXISTS pitr_bench.counter (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
		"INSERT IGNORE INTO pitr_bench.counter VALUES (1, 0)",
	} {
		if _, err := srv.DB.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("probe table: %w", err)
		}
	}
	conn, err := srv.DB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("probe connection: %w", err)
	}
	p := &commitProbe{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer conn.Close()
		t := time.NewTicker(commitEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			_, err := conn.ExecContext(ctx, "UPDATE pitr_bench.counter SET n = n + 1 WHERE id = 1")
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.err = err
				return
			}
			p.at, p.lat = append(p.at, start), append(p.lat, time.Since(start))
		}
	}()
	return p, nil
}

// between are the latencies of the commits started in [from, to], sorted.
func (p *commitProbe) between(from, to time.Time) []time.Duration {
	var ds []time.Duration
	for i, at := range p.at {
		if !at.Before(from) && !at.After(to) {
			ds = append(ds, p.lat[i])
		}
	}
	slices.Sort(ds)
	return ds
}

// blockedPhase takes logical snapshots while sysbench oltp_write_only runs
// at a fixed rate and a probe commits every commitEvery; the manifest's
// writes_blocked_ns is held to the goal, the probe checks it from outside.
func (s *snapshotBench) blockedPhase(ctx context.Context, b *bench, sb kit.Sysbench) error {
	kit.Logf("writes blocked: %d logical snapshots under sysbench oltp_write_only at %d tps (%d threads), a commit every %s",
		s.runs, s.rate, s.rateThreads, commitEvery)
	var blocked, tps []float64
	var worst, worstProbe time.Duration
	var peak int64
	failed := 0
	sb.Threads = s.rateThreads
	for i := 1; i <= s.runs; i++ {
		dir, done, err := b.mkdir("blocked", strconv.Itoa(i))
		if err != nil {
			return err
		}
		r, wb, probeMax, line := s.blockedRun(ctx, b, dir, sb)
		rate := kit.SysbenchTPS(filepath.Join(dir, "sysbench.log"))
		done()
		fmt.Printf("  blocked run %d: %s\n", i, line)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.Err != nil {
			failed++
			continue
		}
		blocked, tps = append(blocked, float64(wb)), append(tps, rate)
		worst, worstProbe, peak = max(worst, wb), max(worstProbe, probeMax), max(peak, r.Usage.PeakRSS)
	}
	goal := "≤ " + kit.Ms(goalBlocked)
	if len(blocked) == 0 {
		b.rep.Goal("Writes blocked during a logical snapshot", "every run failed", goal, false)
		return nil
	}
	b.rep.Goal(fmt.Sprintf("Writes blocked during a logical snapshot, under %.0f tps of oltp_write_only (manifest; max of %d runs, median %s)",
		kit.Median(tps), len(blocked), kit.Ms(time.Duration(kit.Median(blocked)))), kit.Ms(worst), goal, worst <= goalBlocked && failed == 0)
	b.rep.Row(fmt.Sprintf("Longest probe commit during those snapshots (an UPDATE every %s)", kit.Ms(commitEvery)), "%s", kit.Ms(worstProbe))
	b.rep.Row("mysql-pitr peak RSS during those snapshots (max)", "%s", kit.MB(peak))
	return nil
}

// blockedRun is one snapshot of blockedPhase: its run, the manifest's
// writes blocked, the longest probe commit during it and a line to print.
func (s *snapshotBench) blockedRun(ctx context.Context, b *bench, dir string, sb kit.Sysbench) (r kit.Run, blocked, probeMax time.Duration, line string) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := startCommitProbe(pctx, s.srv)
	if err != nil {
		return kit.Run{Err: err}, 0, 0, err.Error()
	}
	load, err := kit.Start(sb.Args("--rate="+strconv.Itoa(s.rate), "--time=0", "--report-interval=1", "run"), nil,
		filepath.Join(dir, "sysbench.log"))
	if err != nil {
		return kit.Run{Err: err}, 0, 0, err.Error()
	}
	defer load.Stop(5 * time.Second)
	warm := time.Now()
	select {
	case <-load.Done():
		err := fmt.Errorf("sysbench exited early: %v", load.Wait())
		return kit.Run{Err: err}, 0, 0, err.Error()
	case <-ctx.Done():
		return kit.Run{Err: ctx.Err()}, 0, 0, "interrupted"
	case <-time.After(blockedWarmup):
	}
	t0 := time.Now()
	r = s.ours(ctx, b, dir, toolOurs, catalog.MethodLogical)
	t1 := time.Now()
	time.Sleep(time.Second) // a commit stalled at the end still counts
	load.Stop(5 * time.Second)
	cancel()
	<-p.done
	if r.Err == nil && p.err != nil {
		r.Err = fmt.Errorf("probe: %w", p.err)
	}
	if r.Err != nil {
		return r, 0, 0, "FAILED: " + r.Err.Error()
	}
	snaps, err := kit.Snapshots(ctx, filepath.Join(dir, "out"))
	if err != nil || len(snaps) != 1 {
		r.Err = fmt.Errorf("read the snapshot: %d, %v", len(snaps), err)
		return r, 0, 0, "FAILED: " + r.Err.Error()
	}
	during, base := p.between(t0, t1), p.between(warm.Add(time.Second), t0)
	if len(during) > 0 {
		probeMax = during[len(during)-1]
	}
	line = fmt.Sprintf("writes blocked %s (manifest); probe commits during the snapshot: %d, max %s, p99 %s (before it: max %s); snapshot %.2f s, peak rss %s, %s",
		kit.Ms(snaps[0].WritesBlocked), len(during), kit.Ms(probeMax), kit.Ms(kit.Percentile(during, 99)), kit.Ms(kit.Percentile(base, 100)),
		r.Time.Seconds(), kit.MB(r.Usage.PeakRSS), r.Load)
	return r, snaps[0].WritesBlocked, probeMax, line
}
