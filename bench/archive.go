package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// archive measures the binlog archive against the flavor's binlog reader:
// how fast each captures an existing binlog, how that compares with the
// fastest the server writes one, how far behind a commit the archive is
// under load (the RPO), and the agent's memory.
type archive struct {
	common
	target, maxBinlogSize   int64
	loadThreads             int
	s3                      bool
	flush, rpoDuration      time.Duration
	rate, rpoThreads        int
	srv                     *kit.Server
	gw                      *testbed.S3
	binlogTool, zstd, first string
	end                     catalog.Position
	logs                    []kit.BinaryLog
	bytes                   int64
	serverID                uint32
}

// Goals the archive is held to.
const (
	goalCapture = 1.0 // agent MB/s ÷ the reference's
	goalRPOp99  = 1500 * time.Millisecond
	goalAgentMB = 150e6 // peak RSS, bytes
	// captureTimeout bounds one capture run.
	captureTimeout = 10 * time.Minute
)

func (a *archive) flags(fs *flag.FlagSet) *common {
	a.register(fs, 100000, 1<<30)
	kit.SizeVar(fs, &a.target, "target", 1<<30, "binlog to generate before the capture runs")
	kit.SizeVar(fs, &a.maxBinlogSize, "max-binlog-size", 256<<20, "the server's max_binlog_size")
	fs.IntVar(&a.loadThreads, "load-threads", 4, "sysbench --threads while generating the binlog (unthrottled)")
	fs.BoolVar(&a.s3, "s3", false, "also time the agent archiving to S3 (a local versitygw gateway)")
	fs.DurationVar(&a.flush, "flush-interval", time.Second, "the agent's --flush-interval")
	fs.DurationVar(&a.rpoDuration, "rpo-duration", time.Minute, "how long the RPO load runs (0 skips the RPO phase)")
	fs.IntVar(&a.rate, "rate", 1000, "sysbench --rate (tps) during the RPO load")
	fs.IntVar(&a.rpoThreads, "rpo-threads", 4, "sysbench --threads during the RPO load")
	return &a.common
}

func (a *archive) smoke() map[string]string {
	return map[string]string{"target": "100MiB", "table-size": "10000", "runs": "1", "rpo-duration": "10s"}
}

func (a *archive) validate() error {
	switch {
	case a.target < 1<<20 || a.maxBinlogSize < 4096:
		return errors.New("-target must be at least 1MiB and -max-binlog-size at least 4096")
	case a.loadThreads < 1 || a.rpoThreads < 1 || a.rate < 0:
		return errors.New("-load-threads and -rpo-threads must be positive, -rate not negative")
	case a.rpoDuration != 0 && a.rpoDuration < time.Second || a.flush < 10*time.Millisecond:
		return errors.New("-rpo-duration must be 0 or at least 1s, -flush-interval at least 10ms")
	}
	return nil
}

// Tool names, as printed; the references are named after the flavor's
// binlog reader.
const (
	toolAgentFile = "agent file://"
	toolAgentS3   = "agent s3://"
)

func (a *archive) refRaw() string  { return a.flavor.BinlogTool() + " --raw" }
func (a *archive) refZstd() string { return a.flavor.BinlogTool() + " | zstd -1" }

func (a *archive) run(ctx context.Context, b *bench) (err error) {
	if a.binlogTool, err = b.program(a.flavor.BinlogTool()); err != nil {
		return err
	}
	if a.zstd, err = testbed.LookBinary("zstd"); err != nil {
		return err
	}
	kit.Logf("starting %s (max_binlog_size %s)", a.flavor, kit.MB(a.maxBinlogSize))
	a.srv, err = b.startServer(testbed.MariaDBOptions{MaxBinlogSize: a.maxBinlogSize,
		ExtraArgs: []string{"--innodb-buffer-pool-size=" + strconv.FormatInt(a.bufferPool, 10), "--max-connections=200"}})
	if err != nil {
		return err
	}
	defer a.srv.Close()
	if a.s3 {
		if a.gw, err = testbed.NewS3(filepath.Join(b.dir, "s3"), testbed.S3Options{}); err != nil {
			return err
		}
		defer a.gw.Stop()
	}
	sb, err := kit.NewSysbench(a.srv, a.tables, a.tableSize, a.loadThreads)
	if err != nil {
		return err
	}
	kit.Logf("sysbench prepare: %d tables × %d rows", a.tables, a.tableSize)
	if err := sb.Prepare(ctx, a.srv, filepath.Join(b.dir, "sysbench-prepare.log")); err != nil {
		return err
	}
	// At least 20 s of unthrottled load, however much prepare wrote: its
	// binlog rate is what the capture's headroom is measured against.
	kit.Logf("sysbench oltp_write_only, %d threads, unthrottled, until the binlog holds %s", a.loadThreads, kit.MB(a.target))
	fill, err := sb.Fill(ctx, a.srv, filepath.Join(b.dir, "sysbench-fill.log"), 20*time.Second,
		func(logs []kit.BinaryLog) bool { return kit.TotalSize(logs) >= a.target })
	if err != nil {
		return err
	}
	kit.Logf("%s", fill)
	if a.end, err = a.srv.WaitIdle(ctx, 2*time.Second); err != nil {
		return err
	}
	if a.logs, err = a.srv.BinaryLogs(ctx); err != nil {
		return err
	}
	if last := a.logs[len(a.logs)-1]; last.Name != a.end.File || uint64(last.Size) != a.end.Pos {
		return fmt.Errorf("SHOW BINARY LOGS %v disagrees with the binlog end %s", a.logs, a.end)
	}
	a.first, a.bytes, a.serverID = a.logs[0].Name, kit.TotalSize(a.logs), 1000
	kit.Logf("server idle at %s: %s in %d files", a.end, kit.MB(a.bytes), len(a.logs))

	stats, err := a.captureAll(ctx, b)
	if err != nil {
		return err
	}
	var rpo *rpoResult
	if a.rpoDuration > 0 {
		dir, _, err := b.mkdir("rpo")
		if err != nil {
			return err
		}
		rpo = a.runRPO(ctx, b, dir, sb)
		fmt.Println("  " + rpo.String())
	}
	a.report(&b.rep, fill, stats, rpo)
	return ctx.Err()
}

// captureAll times every capture tool copying the server's whole binlog,
// alternating runs, and returns each tool's medians.
func (a *archive) captureAll(ctx context.Context, b *bench) (map[string]kit.Stats, error) {
	tools := []string{a.refRaw(), a.refZstd(), toolAgentFile}
	if a.s3 {
		tools = append(tools, toolAgentS3)
	}
	kit.Logf("capture: %d runs per tool, alternating", a.runs)
	runs, err := kit.Alternate(ctx, a.runs, tools, func(order int, tool string) kit.Run {
		dir, done, err := b.mkdir("capture", fmt.Sprintf("%02d-%s", order, kit.Slug(tool)))
		if err != nil {
			return kit.Run{Err: err}
		}
		defer done()
		a.serverID++
		var r kit.Run
		switch tool {
		case toolAgentFile, toolAgentS3:
			r = a.captureAgent(ctx, b, dir, tool)
		default:
			r = a.captureTool(ctx, dir, tool == a.refZstd())
		}
		// Each run starts from the same idle server.
		if _, err := a.srv.WaitIdle(ctx, time.Second); err != nil && r.Err == nil {
			r.Err = err
		}
		return r
	})
	if err != nil {
		return nil, err
	}
	return kit.SummarizeAll(runs, tools), nil
}

// captureTool times the binlog reader copying the server's whole binlog
// into dir/out, from the first file to the end of the last
// (--read-from-remote-server --raw --to-last-log), and exits. With
// compress, each file it writes is a FIFO that a `zstd -1` reads into
// FILE.zst, and the clock stops once those are fsynced: the work the
// agent does, but for its index and the parsing of every event.
func (a *archive) captureTool(ctx context.Context, dir string, compress bool) kit.Run {
	var r kit.Run
	out := filepath.Join(dir, "out")
	if r.Err = os.MkdirAll(out, 0o755); r.Err != nil {
		return r
	}
	if compress {
		for _, l := range a.logs {
			if r.Err = syscall.Mkfifo(filepath.Join(out, l.Name), 0o644); r.Err != nil {
				return r
			}
		}
	}
	argv := append([]string{a.binlogTool, "--read-from-remote-server", "--raw", "--to-last-log", "--result-file=" + out + "/"},
		a.srv.RootFlags()...)
	meter, begin := kit.StartMeter(a.srv.CPU), time.Now()
	var zstds []*kit.Child
	for i := range a.logs {
		if !compress {
			break
		}
		fifo := filepath.Join(out, a.logs[i].Name)
		z, err := kit.StartIO([]string{a.zstd, "-1", "-q", "-c", fifo}, nil, "", fifo+".zst", filepath.Join(dir, "zstd.log"))
		if err != nil {
			r.Err = err
			break
		}
		zstds = append(zstds, z)
	}
	rss := kit.NewTreeSampler(kit.RSSInterval)
	for _, z := range zstds {
		rss.Add(z.Pid())
	}
	stop := rss.Watch()
	if r.Err == nil {
		var c *kit.Child
		if c, r.Err = kit.Start(append(argv, a.first), nil, filepath.Join(dir, "binlog-tool.log")); r.Err == nil {
			rss.Add(c.Pid())
			r.Err = c.Wait()
			r.Usage.CPU = c.Usage().CPU
		}
	}
	for _, z := range zstds {
		if r.Err != nil {
			z.Stop(time.Second) // still waiting for a writer
		}
		r.Err = errors.Join(r.Err, z.Wait())
		r.Usage.CPU += z.Usage().CPU
	}
	r.Usage.PeakRSS = stop().MaxRSS()
	if compress && r.Err == nil {
		r.Err = kit.SyncTree(out)
	}
	r.Time = time.Since(begin)
	r.ServerCPU, r.Load = meter.Stop(r.Usage.CPU)
	r.Bytes = a.bytes
	if r.Err != nil {
		return r
	}
	// Not timed: the output must be the server's binlog, byte for byte in
	// size.
	var n int64
	n, r.Err = kit.DirSize(out)
	if compress {
		r.Stored = n
		n, r.Err = decompressedSize(out)
	}
	if r.Err == nil && n != a.bytes {
		r.Err = fmt.Errorf("wrote %d binlog bytes, the server has %d", n, a.bytes)
	}
	return r
}

// decompressedSize is the size of the zstd files under dir, decompressed.
func decompressedSize(dir string) (int64, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.zst"))
	var n int64
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return 0, err
		}
		d, err := zstd.NewReader(f)
		if err == nil {
			var m int64
			m, err = io.Copy(io.Discard, d)
			n += m
			d.Close()
		}
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	return n, nil
}

// storage is a fresh, empty archive under dir for the tool, and the
// environment that reaches it.
func (a *archive) storage(dir, tool string) (string, []string, error) {
	if tool == toolAgentS3 {
		// The machine's own AWS configuration is kept out of the way.
		return a.gw.URL(filepath.Base(dir)), append(a.gw.Env(), "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"), nil
	}
	d := filepath.Join(dir, "archive")
	return "file://" + d, nil, os.MkdirAll(d, 0o755)
}

// captureAgent times a fresh agent archiving the whole binlog: done when
// /status says the archive is durable up to the server's end (every byte
// compressed, stored with temp file, fsync and rename, and indexed).
func (a *archive) captureAgent(ctx context.Context, b *bench, dir, tool string) kit.Run {
	var r kit.Run
	url, env, err := a.storage(dir, tool)
	if err != nil {
		return kit.Run{Err: err}
	}
	meter, begin := kit.StartMeter(a.srv.CPU), time.Now()
	ag, err := kit.StartAgent(b.mp, a.srv, url, env, dir, a.serverID, a.flush)
	if err != nil {
		return kit.Run{Err: err}
	}
	defer ag.Stop(10 * time.Second)
	var received time.Duration
	r.Err = ag.WaitDurable(ctx, a.end, 20*time.Millisecond, captureTimeout, func(st kit.AgentStatus) {
		if received == 0 && kit.PosAtLeast(st.Binlog.Received, a.end) {
			received = time.Since(begin)
		}
	})
	r.Time = time.Since(begin)
	if r.Err != nil {
		r.Err = fmt.Errorf("%w:\n%s", r.Err, ag.LogTail(10))
		return r
	}
	r.Usage, r.Err = kit.ReadUsage(ag.Pid())
	r.ServerCPU, r.Load = meter.Stop(r.Usage.CPU)
	r.Bytes, r.Note = a.bytes, fmt.Sprintf("received at %.2f s", received.Seconds())
	ag.Stop(10 * time.Second)
	// Not timed: the archive's own account of itself must hold every event
	// byte, with no gap. Segments hold a file's events, not its 4-byte
	// magic number, which a restore writes back.
	cmd := exec.CommandContext(ctx, b.mp, "list", "--storage", url, "--json")
	cmd.Env = append(os.Environ(), ag.Env...)
	out, err := cmd.Output()
	var l struct {
		Binlogs []catalog.Coverage `json:"binlogs"`
		Gaps    []json.RawMessage  `json:"gaps"`
	}
	if err == nil {
		err = json.Unmarshal(out, &l)
	}
	if err != nil {
		r.Err = errors.Join(r.Err, fmt.Errorf("mysql-pitr list: %w", err))
		return r
	}
	var events uint64
	for _, t := range l.Binlogs {
		events += t.Bytes
		r.Stored += t.Stored
	}
	if want := uint64(a.bytes - 4*int64(len(a.logs))); events != want || len(l.Gaps) > 0 {
		r.Err = errors.Join(r.Err, fmt.Errorf("the archive holds %d event bytes with %d gaps, the server's files %d", events, len(l.Gaps), want))
	}
	return r
}

func (a *archive) report(rep *kit.Report, fill kit.Fill, stats map[string]kit.Stats, rpo *rpoResult) {
	rep.Line("Binlog: %s in %s of ≤ %s, sysbench oltp_write_only (%d tables × %d rows); %s per tool, alternating; medians. MB = 10⁶ bytes.",
		kit.MB(a.bytes), kit.Plural(len(a.logs), "file"), kit.MB(a.maxBinlogSize), a.tables, a.tableSize, kit.Plural(a.runs, "capture run"))
	rep.Line("The server's own binlog rate, unthrottled sysbench (%d threads) with nothing archiving: %s.", a.loadThreads, fill)
	raw, ref, agent := stats[a.refRaw()], stats[a.refZstd()], stats[toolAgentFile]
	for _, t := range []string{a.refRaw(), a.refZstd(), toolAgentFile, toolAgentS3} {
		if st, ok := stats[t]; ok {
			rep.Row("Capture, "+t, "%s", st.Result())
		}
	}
	rep.Ratio("Capture throughput, agent file:// / "+a.refZstd(), agent.MBps/ref.MBps, goalCapture, true)
	if s3, ok := stats[toolAgentS3]; ok {
		rep.Ratio("Capture throughput, agent s3:// / "+a.refZstd(), s3.MBps/ref.MBps, goalCapture, true)
	}
	rep.Row("Capture throughput, agent file:// / "+a.refRaw()+" (a copy into the page cache)", "%.2f", agent.MBps/raw.MBps)
	rep.Row("MB per CPU-second, agent file:// / "+a.refZstd(), "%.2f (%.0f / %.0f)", agent.MBperCPU()/ref.MBperCPU(), agent.MBperCPU(), ref.MBperCPU())
	rep.Row("Stored size of the binlog", "agent %s (%.3f of raw), %s %s (%.3f)",
		kit.MB(agent.Stored), agent.Stored/float64(a.bytes), a.refZstd(), kit.MB(ref.Stored), ref.Stored/float64(a.bytes))
	srvRate := kit.MBps(fill.Bytes, fill.Duration)
	rep.Row("Catch-up headroom: agent file:// capture rate / the server's binlog rate under unthrottled sysbench",
		"%.1f× (%.1f MB/s / %.2f MB/s): an hour of the server's fastest binlog archives in %.0f s", agent.MBps/srvRate, agent.MBps, srvRate, 3600*srvRate/agent.MBps)
	peak := 0.0
	for _, t := range []string{toolAgentFile, toolAgentS3} {
		peak = max(peak, stats[t].PeakRSS)
	}
	if rpo != nil {
		rpo.report(rep, a.flush)
	}
	rep.Goal("Agent peak RSS, capture runs (max)", kit.MB(peak), "≤ "+kit.MB(goalAgentMB), peak > 0 && peak <= goalAgentMB)
}
