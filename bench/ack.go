package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// ackBench measures what the agent's semi-synchronous acknowledgements
// cost a client that commits: sysbench oltp_write_only's throughput and
// latency on a source whose commits wait (AFTER_SYNC) for the agent, at
// each --ack level, against the same source with no semi-synchronous
// replica, and with a stock replica of the same release as its
// semi-synchronous replica: the reference.
type ackBench struct {
	common
	loadThreads, configs string
	loads                []int    // -load-threads, parsed
	cfgs                 []string // -configs, parsed, in ackConfigs' order
	duration, timeout    time.Duration
	syncRelayLog         int

	src, replica *kit.Server
	// semi reads the source's semi-synchronous state as the agent reads it.
	semi    *binlog.Source
	sb      kit.Sysbench
	details map[int]*ackRun // by run order
}

// goalAck bounds durable-spool's p50 and p99 latency over the stock
// replica's.
const goalAck = 1.2

// The configurations, as printed, in the order each round runs them.
const (
	cfgAsync   = "async"
	cfgStock   = "stock replica"
	cfgStockIO = "stock replica, IO thread only"
	cfgSpool   = "agent durable-spool"
	cfgStorage = "agent durable-storage"
)

var ackConfigs = []string{cfgAsync, cfgStock, cfgStockIO, cfgSpool, cfgStorage}

// ackConfigNames are the configurations' names in -configs.
var ackConfigNames = map[string]string{"async": cfgAsync, "stock": cfgStock, "stock-io": cfgStockIO, "spool": cfgSpool, "storage": cfgStorage}

// ackModes are the agent's --ack of each agent configuration.
var ackModes = map[string]binlog.AckMode{cfgSpool: binlog.AckSpool, cfgStorage: binlog.AckStorage}

// catchUpTimeout bounds how long a replica or an agent may take to catch
// up with what the source wrote while it was detached.
const catchUpTimeout = 10 * time.Minute

func (a *ackBench) flags(fs *flag.FlagSet) *common {
	a.register(fs, 25000, 512<<20)
	fs.StringVar(&a.loadThreads, "load-threads", "4,8", "sysbench --threads of the measured loads, comma-separated: each run measures each")
	fs.DurationVar(&a.duration, "duration", 15*time.Second, "how long each measured load runs")
	fs.DurationVar(&a.timeout, "semi-sync-timeout", 10*time.Second, "the source's rpl_semi_sync_*_timeout (the chart's default): how long a commit waits before the server falls back to asynchronous replication")
	fs.StringVar(&a.configs, "configs", "async,stock,stock-io,spool,storage", "the configurations each round runs: async, stock, stock-io (the stock replica's applier stopped), spool, storage (the agent's --ack)")
	fs.IntVar(&a.syncRelayLog, "sync-relay-log", -1, "the stock replica's sync_relay_log; -1 keeps the server's default (10000); 1 makes it fsync its relay log before it acknowledges, as durable-spool fsyncs its spool")
	return &a.common
}

func (a *ackBench) smoke() map[string]string {
	return map[string]string{"tables": "2", "table-size": "1000", "runs": "1", "duration": "5s", "load-threads": "4", "buffer-pool": "128MiB"}
}

func (a *ackBench) validate() error {
	a.loads = nil
	for f := range strings.SplitSeq(a.loadThreads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-load-threads %q: want positive numbers, comma-separated", a.loadThreads)
		}
		a.loads = append(a.loads, n)
	}
	chosen := map[string]bool{}
	for f := range strings.SplitSeq(a.configs, ",") {
		cfg, ok := ackConfigNames[strings.TrimSpace(f)]
		if !ok {
			return fmt.Errorf("-configs %q: unknown configuration %q (async, stock, stock-io, spool, storage)", a.configs, f)
		}
		chosen[cfg] = true
	}
	a.cfgs = nil
	for _, cfg := range ackConfigs {
		if chosen[cfg] {
			a.cfgs = append(a.cfgs, cfg)
		}
	}
	if a.duration < time.Second || a.timeout < time.Second {
		return errors.New("-duration and -semi-sync-timeout must be at least 1s")
	}
	return nil
}

// ackRun is one run of one configuration: a measured load per thread count.
type ackRun struct {
	catchUp time.Duration
	loads   []ackLoad
}

// ackLoad is one measured sysbench load.
type ackLoad struct {
	threads  int
	tps      float64
	p50, p99 float64 // ms
	txns     uint64  // from the source's GTID state
	waited   int64   // the source's acknowledged waits (Rpl_semi_sync_*_yes_tx)
	// subjectCPU is the replica's or the agent's CPU time during the load.
	subjectCPU time.Duration
	// ackP50, ackP99 are the agent's own account (/status), in ms: from
	// a transaction's last event's arrival to its acknowledgement.
	ackP50, ackP99 float64
	// invalid says why the load does not count: the server did not wait
	// for the replica for every commit.
	invalid string
	err     error
}

func (l ackLoad) ok() bool { return l.err == nil && l.invalid == "" }

func (l ackLoad) String() string {
	s := fmt.Sprintf("%d threads: %.0f tps, p50 %.2f ms, p99 %.2f ms", l.threads, l.tps, l.p50, l.p99)
	if l.txns > 0 && l.subjectCPU > 0 {
		s += fmt.Sprintf(", subject cpu %.0f µs/txn", float64(l.subjectCPU.Microseconds())/float64(l.txns))
	}
	if l.ackP50 > 0 {
		s += fmt.Sprintf(", agent ack p50 %.2f ms p99 %.2f ms", l.ackP50, l.ackP99)
	}
	if l.waited > 0 {
		s += fmt.Sprintf(", %d acknowledged waits for %d commits", l.waited, l.txns)
	}
	switch {
	case l.err != nil:
		s += fmt.Sprintf(" FAILED: %v", l.err)
	case l.invalid != "":
		s += " INVALID: " + l.invalid
	}
	return s
}

// serverOptions are the source's and the replica's settings alike:
// production durability, as the commit latency depends on it (the test
// bed's own defaults trade it for speed).
func (a *ackBench) serverOptions(id uint32) testbed.MariaDBOptions {
	return testbed.MariaDBOptions{ServerID: id, ExtraArgs: []string{"--innodb-buffer-pool-size=" + strconv.FormatInt(a.bufferPool, 10),
		"--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1", "--max-connections=200"}}
}

func (a *ackBench) run(ctx context.Context, b *bench) (err error) {
	a.details = map[int]*ackRun{}
	kit.Logf("starting the source %s (buffer pool %s, sync_binlog=1, innodb_flush_log_at_trx_commit=1)", a.flavor, kit.MB(a.bufferPool))
	if a.src, err = b.startServer(a.serverOptions(1)); err != nil {
		return err
	}
	defer a.src.Close()
	if err := a.setUpSource(ctx); err != nil {
		return err
	}
	defer a.semi.Close()
	if a.sb, err = kit.NewSysbench(a.src, a.tables, a.tableSize, a.loads[0]); err != nil {
		return err
	}
	kit.Logf("sysbench prepare: %d tables × %d rows", a.tables, a.tableSize)
	if err := a.sb.Prepare(ctx, a.src, filepath.Join(b.dir, "sysbench-prepare.log")); err != nil {
		return err
	}
	if slices.Contains(a.cfgs, cfgStock) || slices.Contains(a.cfgs, cfgStockIO) {
		kit.Logf("starting the stock replica")
		if a.replica, err = b.startServer(a.serverOptions(2)); err != nil {
			return err
		}
		defer a.replica.Close()
		if err := a.setUpReplica(ctx); err != nil {
			return err
		}
	}
	kit.Logf("%s per load at %s threads; %d rounds of %s", a.duration, a.loadThreads, a.runs, strings.Join(a.cfgs, ", "))
	runs, err := kit.Alternate(ctx, a.runs, a.cfgs, func(order int, cfg string) kit.Run {
		dir, done, err := b.mkdir("runs", fmt.Sprintf("%02d-%s", order, kit.Slug(cfg)))
		if err != nil {
			return kit.Run{Err: err}
		}
		defer done()
		d := &ackRun{}
		a.details[order] = d
		return a.runOnce(ctx, b, dir, cfg, d)
	})
	a.report(&b.rep, runs)
	return err
}

// runOnce attaches the configuration's replica, waits until it has
// caught up and the source waits for it, measures a load at each thread
// count, and detaches it. Every run starts from the same state: the
// source idle, its dirty pages flushed, no replica attached.
func (a *ackBench) runOnce(ctx context.Context, b *bench, dir, cfg string, d *ackRun) kit.Run {
	var r kit.Run
	begin := time.Now()
	sub, err := a.attach(ctx, b, cfg)
	if err != nil {
		return kit.Run{Err: err}
	}
	d.catchUp = time.Since(begin)
	err = a.src.WaitFlushed(ctx, time.Minute)
	if err == nil && (cfg == cfgStock || cfg == cfgStockIO) {
		err = a.replica.WaitFlushed(ctx, time.Minute)
	}
	if err != nil {
		return kit.Run{Err: errors.Join(err, sub.detach())}
	}
	logs0, err := a.src.BinaryLogs(ctx)
	if err != nil {
		return kit.Run{Err: errors.Join(err, sub.detach())}
	}
	meter, cpu0, start := kit.StartMeter(a.src.CPU), sub.cpu(), time.Now()
	var sysbenchCPU time.Duration
	for _, n := range a.loads {
		l := a.measure(ctx, dir, cfg, n, sub, &sysbenchCPU)
		d.loads = append(d.loads, l)
		if l.err != nil || ctx.Err() != nil {
			break
		}
	}
	r.Time = time.Since(start)
	r.Usage.CPU = sub.cpu() - cpu0
	if sub.agent != nil {
		if u, err := kit.ReadUsage(sub.agent.Pid()); err == nil {
			r.Usage.PeakRSS = u.PeakRSS
		}
	}
	r.ServerCPU, r.Load = meter.Stop(r.Usage.CPU + sysbenchCPU)
	logs1, err := a.src.BinaryLogs(ctx)
	r.Bytes = kit.TotalSize(logs1) - kit.TotalSize(logs0)
	var notes []string
	for _, l := range d.loads {
		notes = append(notes, l.String())
		if l.err != nil {
			err = errors.Join(err, l.err)
		}
	}
	r.Note = fmt.Sprintf("caught up in %.1f s; %s", d.catchUp.Seconds(), strings.Join(notes, "; "))
	r.Err = errors.Join(err, sub.detach())
	return r
}

// semiState is the source's semi-synchronous state and how many commits
// it has had acknowledged.
type semiState struct {
	binlog.SemiSyncState
	yes  int64
	txns uint64
}

func (a *ackBench) semiState(ctx context.Context) (semiState, error) {
	var s semiState
	var err error
	if s.SemiSyncState, err = a.semi.SemiSync(ctx); err != nil {
		return s, err
	}
	var name string
	q := "SHOW GLOBAL STATUS LIKE '" + a.sourceVar("yes_tx") + "'"
	if err := a.src.DB.QueryRowContext(ctx, q).Scan(&name, &s.yes); err != nil {
		return s, fmt.Errorf("%s: %w", q, err)
	}
	s.txns, err = a.src.Transactions(ctx)
	return s, err
}

// measure runs one unthrottled sysbench load and checks that the source
// waited for the replica for every commit in it; sysbench's CPU time is
// added to sysbenchCPU.
func (a *ackBench) measure(ctx context.Context, dir, cfg string, threads int, sub *subject, sysbenchCPU *time.Duration) (l ackLoad) {
	l.threads = threads
	before, err := a.semiState(ctx)
	if err != nil {
		l.err = err
		return l
	}
	sb := a.sb
	sb.Threads = threads
	log := filepath.Join(dir, fmt.Sprintf("sysbench-%d.log", threads))
	cpu0 := sub.cpu()
	c, err := kit.Start(sb.Args("--time="+strconv.Itoa(int(a.duration.Seconds())), "--percentile=99", "--histogram=on",
		"--report-interval=10", "run"), nil, log)
	if err != nil {
		l.err = err
		return l
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		c.Stop(time.Second)
	}
	if l.err = c.Wait(); l.err != nil {
		return l
	}
	l.subjectCPU = sub.cpu() - cpu0
	*sysbenchCPU += c.Usage().CPU
	after, err := a.semiState(ctx)
	if err != nil {
		l.err = err
		return l
	}
	l.tps, l.txns, l.waited = kit.SysbenchTPS(log), after.txns-before.txns, after.yes-before.yes
	lat, err := kit.SysbenchLatency(log)
	if err != nil {
		l.err = err
		return l
	}
	l.p50, l.p99 = lat.Percentile(50), lat.Percentile(99)
	l.invalid = fellBack(cfg == cfgAsync, before, after)
	if sub.agent != nil {
		st, err := sub.agent.ReadStatus(ctx)
		switch {
		case err != nil:
			l.err = err
		case st.Binlog.Ack == nil:
			l.err = errors.New("/status has no ack section")
		default:
			ack := st.Binlog.Ack
			l.ackP50, l.ackP99 = ack.LatencyP50*1e3, ack.LatencyP99*1e3
			if !ack.RPOZero && l.invalid == "" {
				l.invalid = "the agent says RPO 0 does not hold: " + ack.Problem
			}
		}
	}
	return l
}

// fellBack says why a load does not measure its configuration, or "":
// without a replica (async) the source must not have waited for one; with
// one, it must have waited for it at AFTER_SYNC, and never fallen back to
// asynchronous replication (no commit went unacknowledged). Waits are
// counted, not commits: MySQL waits once for a group commit's last
// transaction, MariaDB for each.
func fellBack(async bool, before, after semiState) string {
	waited := after.yes - before.yes
	switch {
	case async && (after.Enabled || waited > 0):
		return fmt.Sprintf("semi-synchronous replication was on (%d commits waited)", waited)
	case async:
		return ""
	case after.OffTimes > before.OffTimes:
		return fmt.Sprintf("the server fell back to asynchronous replication %d times", after.OffTimes-before.OffTimes)
	case after.NoTx > before.NoTx:
		return fmt.Sprintf("%d commits were not acknowledged", after.NoTx-before.NoTx)
	case !after.On || after.WaitPoint != "AFTER_SYNC":
		return fmt.Sprintf("semi-synchronous replication is not on at AFTER_SYNC at the end (%+v)", after.SemiSyncState)
	case waited == 0 && after.txns > before.txns:
		return "no commit waited for the replica"
	}
	return ""
}
