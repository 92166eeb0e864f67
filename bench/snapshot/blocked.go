package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// blockedWarmup is how long the write load runs before the snapshot starts:
// its commits before then are the probe's baseline.
const blockedWarmup = 5 * time.Second

// blockedRun is one logical snapshot taken under a write load.
type blockedRun struct {
	Run toolRun
	// ProbeMax and ProbeP99 are the probe's commit latencies while the
	// snapshot ran, over Probes commits; BaseMax the worst before it.
	ProbeMax, ProbeP99, BaseMax time.Duration
	Probes                      int
	TPS                         float64 // sysbench's, mean of its 1 s reports
	Err                         error   // of the load or the probe
}

// runBlocked takes one of our logical snapshots while sysbench
// oltp_write_only runs at a fixed rate and a probe commits every
// probeInterval.
func (b *bench) runBlocked(ctx context.Context, dir string, sb sysbench) blockedRun {
	var br blockedRun
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := b.srv.startProbe(pctx)
	if err != nil {
		br.Err = err
		return br
	}
	logPath := filepath.Join(dir, "sysbench.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		br.Err = err
		return br
	}
	defer logFile.Close()
	a := sb.args("oltp_write_only", "--threads="+strconv.Itoa(b.cfg.rateThreads), "--rate="+strconv.Itoa(b.cfg.rate),
		"--time=0", "--report-interval=1", "run")
	load := exec.Command(a[0], a[1:]...)
	load.Stdout, load.Stderr = logFile, logFile
	load.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := load.Start(); err != nil {
		br.Err = fmt.Errorf("start sysbench: %w", err)
		return br
	}
	exited := make(chan error, 1)
	go func() { exited <- load.Wait() }()
	stopLoad := func() {
		load.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			load.Process.Kill()
			<-exited
		}
	}

	warm := time.Now()
	select {
	case err := <-exited:
		br.Err = fmt.Errorf("sysbench exited early (%v):\n%s", err, tail(logPath, 10))
		return br
	case <-ctx.Done():
		stopLoad()
		br.Err = ctx.Err()
		return br
	case <-time.After(blockedWarmup):
	}
	t0 := time.Now()
	br.Run = b.runOurs(ctx, dir, catalog.MethodLogical)
	t1 := time.Now()
	time.Sleep(time.Second) // a commit stalled at the end still counts
	stopLoad()
	cancel()
	<-p.done

	br.BaseMax, _ = p.maxBetween(warm.Add(time.Second), t0)
	br.ProbeMax, br.Probes = p.maxBetween(t0, t1)
	br.ProbeP99 = p.p99Between(t0, t1)
	br.TPS = sysbenchTPS(logPath)
	if p.err != nil {
		br.Err = fmt.Errorf("probe: %w", p.err)
	}
	return br
}

var intervalRE = regexp.MustCompile(`(?m)^\[ *\d+s \] thds: \d+ tps: ([0-9.]+)`)

// sysbenchTPS is the mean of a sysbench log's interval reports; 0 when it
// has none.
func sysbenchTPS(logPath string) float64 {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0
	}
	var sum float64
	ms := intervalRE.FindAllSubmatch(b, -1)
	for _, m := range ms {
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += tps
	}
	if len(ms) == 0 {
		return 0
	}
	return sum / float64(len(ms))
}
