package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mysql-pitr/mysql-pitr/agent"
	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/drill"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/preflight"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/retention"
	"github.com/mysql-pitr/mysql-pitr/schedule"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// agentOptions are the agent's settings.
type agentOptions struct {
	mysql          mysqlFlags
	storage        cli.StorageFlags
	log            cli.LogFlags
	serverID       uint
	flushInterval  time.Duration
	maxSegment     sizeFlag
	spoolDir       string
	spoolMax       sizeFlag
	ack            string
	follow         string
	listen         string
	agentID        string
	leaseTTL       time.Duration
	connectTimeout time.Duration
	completeEvery  time.Duration
	datadir        string
	compact        time.Duration
	schedule       string
	snapOnTimeline bool
	snapMethod     string
	snapThreads    int
	cloneDir       string
	retention      retentionFlags
	drillSchedule  string
	drillScratch   string
	drillThreads   int
	bin            binDirFlag
	output

	// Set by validate.
	policy retention.Policy
	finder programs.Finder
}

func (o *agentOptions) register(fs *flag.FlagSet) {
	o.mysql.register(fs)
	o.storage.Register(fs)
	o.log.Register(fs)
	host, _ := os.Hostname()
	o.maxSegment = binlog.DefaultMaxSegment
	o.spoolMax = 1 << 30
	fs.UintVar(&o.serverID, "server-id", binlog.DefaultServerID, "server_id the agent uses as a replica; must differ from every server and replica")
	fs.DurationVar(&o.flushInterval, "flush-interval", binlog.DefaultFlushInterval, "seal and upload the binlog at least this often when there is new data")
	fs.Var(&o.maxSegment, "max-segment", "seal a segment when it reaches this many binlog bytes")
	fs.StringVar(&o.spoolDir, "spool-dir", filepath.Join(os.TempDir(), "mysql-pitr-spool"), "local directory where segments wait for upload")
	fs.Var(&o.spoolMax, "spool-max", "largest spool; when full, the agent stops reading the binlog until uploads catch up")
	fs.StringVar(&o.ack, "ack", string(binlog.AckOff), "off, durable-spool or durable-storage: as the server's semi-synchronous replica, acknowledge each "+
		"transaction once it is fsynced in the spool, or stored with its index record; with the server waiting AFTER_SYNC, no commit its client saw "+
		"is missing from the archive (RPO 0)")
	fs.StringVar(&o.follow, "follow", "", "more servers the archive may follow, as host:port[,host:port…] (e.g. every pod of a StatefulSet by its "+
		"stable name), with --dsn's account and TLS settings: when the stream breaks, the agent goes on from the one writable server among them and "+
		"--dsn's, continuing the archive when it holds every archived transaction, recording the divergence when it does not")
	fs.StringVar(&o.listen, "listen", agent.DefaultListen, "HTTP address for /healthz /readyz /status /metrics (empty disables)")
	fs.StringVar(&o.agentID, "agent-id", host, "this agent's identity in the archive lease (the pod or host name)")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", agent.DefaultLeaseTTL, "how long the archive lease outlives an agent that stops renewing it")
	fs.DurationVar(&o.compact, "compact-interval", binlog.DefaultCompactInterval, "merge the segments of closed binlog files this often (0 disables)")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", binlog.DefaultConnectTimeout, "how long to wait for the server at start")
	fs.DurationVar(&o.completeEvery, "complete-interval", binlog.DefaultCompleteInterval, "while the server is quiet and the archive holds all of its binlog, "+
		"record this often that the archive is complete up to now, so that moments after the last commit can be restored (0 disables; one small object rewritten)")
	fs.StringVar(&o.datadir, "datadir", "", "the server's datadir as this agent sees it (optional): a restore marker there starts a new archive timeline")
	fs.StringVar(&o.schedule, "schedule", "", `take snapshots on this schedule: a 5-field cron expression ("0 3 * * *") or "@every 6h", `+
		"in UTC unless prefixed with CRON_TZ=Zone (empty: no scheduled snapshots)")
	fs.BoolVar(&o.snapOnTimeline, "snapshot-new-timelines", true, "with --schedule, take a snapshot at once when the archive begins a timeline (the first, or after a gap), "+
		"instead of leaving the time until the next scheduled one unrecoverable")
	fs.StringVar(&o.snapMethod, "snapshot-method", catalog.MethodLogical, "method of scheduled snapshots: logical or physical")
	fs.IntVar(&o.snapThreads, "snapshot-threads", runtime.NumCPU(), "parallel connections of a scheduled logical snapshot (the tool's --parallel for physical)")
	fs.StringVar(&o.cloneDir, "clone-dir", "", "physical snapshots of MySQL: where the clone is staged, on the server's host, writable by the server's OS user, "+
		"with room for a copy of the data (default: beside --datadir, else beside the server's datadir)")
	o.retention.register(fs)
	fs.StringVar(&o.drillSchedule, "drill-schedule", "", "run restore drills on this schedule (cron or @every, as --schedule): restore the newest snapshot and the archive "+
		"into a scratch datadir on a temporary server, check it, record the result (empty: no drills)")
	fs.StringVar(&o.drillScratch, "drill-scratch", filepath.Join(os.TempDir(), "mysql-pitr-drill"), "directory under which drills restore (needs room for a restored datadir)")
	fs.IntVar(&o.drillThreads, "drill-threads", 2, "parallel connections loading a drill's snapshot and its parallel apply threads")
	o.bin.register(fs)
}

// validate names the first bad setting.
func (o *agentOptions) validate() (err error) {
	switch {
	case o.serverID == 0 || o.serverID > 1<<32-1:
		return cli.Usage(fmt.Errorf("--server-id must be between 1 and 4294967295"))
	case o.flushInterval < 10*time.Millisecond:
		return cli.Usage(fmt.Errorf("--flush-interval %s is too short (minimum 10ms)", o.flushInterval))
	case o.maxSegment < 1<<10:
		return cli.Usage(fmt.Errorf("--max-segment must be at least 1KiB"))
	case o.spoolDir == "":
		return cli.Usage(fmt.Errorf("--spool-dir is required"))
	case o.agentID == "":
		return cli.Usage(fmt.Errorf("--agent-id is required"))
	case o.leaseTTL < time.Second:
		return cli.Usage(fmt.Errorf("--lease-ttl must be at least 1s"))
	case o.compact < 0:
		return cli.Usage(fmt.Errorf("--compact-interval %s is negative", o.compact))
	case o.connectTimeout < 0:
		return cli.Usage(fmt.Errorf("--connect-timeout %s is negative", o.connectTimeout))
	case o.completeEvery < 0:
		return cli.Usage(fmt.Errorf("--complete-interval %s is negative", o.completeEvery))
	case o.snapMethod != catalog.MethodLogical && o.snapMethod != catalog.MethodPhysical:
		return cli.Usage(fmt.Errorf("--snapshot-method %q: want logical or physical", o.snapMethod))
	case o.snapThreads < 1:
		return cli.Usage(fmt.Errorf("--snapshot-threads %d: at least 1", o.snapThreads))
	}
	if _, err := binlog.ParseAckMode(o.ack); err != nil {
		return cli.Usage(fmt.Errorf("--ack: %v", err))
	}
	for _, addr := range o.followAddrs() {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return cli.Usage(fmt.Errorf("--follow: %q is not host:port", addr))
		}
	}
	if o.schedule != "" {
		if _, err := schedule.ParseSpec(o.schedule); err != nil {
			return cli.Usage(fmt.Errorf("--schedule %q is not a valid schedule: %v", o.schedule, err))
		}
	}
	if o.drillSchedule != "" {
		if _, err := schedule.ParseSpec(o.drillSchedule); err != nil {
			return cli.Usage(fmt.Errorf("--drill-schedule %q is not a valid schedule: %v", o.drillSchedule, err))
		}
		switch {
		case o.drillScratch == "":
			return cli.Usage(fmt.Errorf("--drill-scratch is required with --drill-schedule"))
		case o.drillThreads < 1:
			return cli.Usage(fmt.Errorf("--drill-threads %d: at least 1", o.drillThreads))
		}
		if o.finder, err = o.bin.finder(); err != nil {
			return err
		}
	}
	if o.policy, err = o.retention.policy(); err != nil {
		return err
	}
	if o.policy.Enabled() && o.schedule == "" {
		return cli.Usage(fmt.Errorf("--keep-snapshots and --keep-within apply after scheduled snapshots: add --schedule, or run mysql-pitr prune"))
	}
	return nil
}

// run streams the server's binlog to the archive, with the parts the flags
// turn on, until ctx ends.
func (o *agentOptions) run(ctx context.Context) (err error) {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	// The replication stream says when preferred falls back to plaintext.
	srv, err := o.mysql.server(ctx, logger, false)
	defer func() { err = srv.explain(err) }()
	if err != nil {
		return err
	}
	src, err := binlog.NewSource(srv.cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	follow, err := o.followSources(logger)
	if err != nil {
		return err
	}
	for _, f := range follow {
		defer f.Close()
	}
	var resolve func(context.Context) ([]*binlog.Source, error)
	if len(follow) > 0 {
		resolver := &followResolver{o: o, logger: logger, sources: map[string]*binlog.Source{}}
		defer resolver.close()
		resolve = resolver.resolve
	}
	// The server (waited for), the login and the privileges before the
	// archive or the spool is touched.
	probe := &binlog.Streamer{Source: src, ConnectTimeout: o.connectTimeout, Logger: logger.With("agent", o.agentID, "component", "binlog")}
	if err := agentPreflight(probe, o.schedule != "", o.snapMethod)(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	st, err := o.storage.Open(ctx, cli.Write, logger)
	if err != nil {
		return err
	}
	// The spool is locked first, and opened only once the lease is held:
	// an agent refused either way leaves another's spool untouched.
	spoolLock, err := binlog.LockSpool(filepath.Join(o.spoolDir, o.storage.ID()))
	if err != nil {
		return err
	}
	defer spoolLock.Release()
	logger = logger.With("agent", o.agentID)
	// The MySQL driver logs dropped idle connections on its own; route them to debug.
	mysql.SetLogger(driverLogger{logger.With("component", "mysql-driver")})
	a, err := o.build(src, follow, resolve, srv, st, logger)
	if err != nil {
		return err
	}
	a.SpoolLock = spoolLock
	logger.Info("agent starting", "server", src.Address(), "storage", o.storage.URL(), "flush_interval", o.flushInterval.String(),
		"listen", o.listen, "spool", filepath.Join(o.spoolDir, o.storage.ID()), "schedule", o.schedule, "drill_schedule", o.drillSchedule, "ack", o.ack)
	if err = a.Run(ctx); err == nil {
		logger.Info("agent stopped")
	}
	return err
}

// build composes the agent: the streamer, and the compactor, snapshot
// scheduler and drills the flags turn on.
func (o *agentOptions) build(src *binlog.Source, follow []*binlog.Source, resolve func(context.Context) ([]*binlog.Source, error), srv server, st storage.Storage, logger *slog.Logger) (*agent.Agent, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &binlog.Streamer{
		Source: src, Follow: follow, FollowResolve: resolve, Store: st, ServerID: uint32(o.serverID), Agent: o.agentID, Ack: binlog.AckMode(o.ack),
		FlushInterval: o.flushInterval, MaxSegment: int64(o.maxSegment), ConnectTimeout: o.connectTimeout,
		CompleteInterval: completeInterval(o.completeEvery),
		RestoreMarker:    restoreMarkerPath(o.datadir),
		Logger:           logger.With("component", "binlog"), Metrics: binlog.NewMetrics(reg),
	}
	// An agent given only the public recipients of an encrypted archive
	// cannot read anything back: compaction (merging segments), retention
	// (reading manifests and records) and drills are left to where the
	// identity is.
	writeOnly := false
	if c, ok := st.(*crypt.Storage); ok && c.Encrypts() && !c.Decrypts() {
		writeOnly = true
	}
	compactor := o.compactor(s, st, writeOnly, logger)
	// Snapshots and drills take turns.
	turns := &schedule.Turns{}
	sched := o.scheduler(src, s, srv, st, writeOnly, turns, reg, logger)
	drills, err := o.drills(st, writeOnly, turns, reg, logger)
	if err != nil {
		return nil, err
	}
	return &agent.Agent{Streamer: s, Compactor: compactor, Scheduler: sched, Drills: drills, Store: st, Registry: reg, Listen: o.listen,
		Holder: o.agentID, LeaseTTL: o.leaseTTL, Logger: logger.With("component", "agent"), SnapshotNewTimelines: o.snapOnTimeline,
		SpoolMax: int64(o.spoolMax)}, nil
}

// compactor merges the segments of closed binlog files, unless turned off
// or the agent cannot read the archive back.
func (o *agentOptions) compactor(s *binlog.Streamer, st storage.Storage, writeOnly bool, logger *slog.Logger) *binlog.Compactor {
	switch {
	case o.compact <= 0:
		return nil
	case writeOnly:
		logger.Info("compaction is off: the archive is encrypted and the agent holds no age identity to read segments back")
		return nil
	}
	return &binlog.Compactor{Store: st, Interval: o.compact, Logger: logger.With("component", "compactor"), Metrics: s.Metrics,
		Gen: s.Uploader().Generation, Checkpoint: s.Uploader().Checkpoint}
}

// scheduler takes snapshots on --schedule and applies retention after them.
func (o *agentOptions) scheduler(src *binlog.Source, streamer *binlog.Streamer, srv server, st storage.Storage, writeOnly bool, turns *schedule.Turns,
	reg *prometheus.Registry, logger *slog.Logger) *schedule.Scheduler {
	if o.schedule == "" {
		return nil
	}
	pol := o.policy
	if writeOnly && pol.Enabled() {
		logger.Warn("retention (--keep-snapshots, --keep-within) is off: it reads the encrypted archive's manifests and records, " +
			"and the agent holds no age identity; run mysql-pitr prune with the identity elsewhere, or give the agent --age-identity")
		pol = retention.Policy{}
	}
	return &schedule.Scheduler{Spec: o.schedule, Method: o.snapMethod, Source: srv.cfg, TLS: srv.tls, Threads: o.snapThreads, Store: st,
		CloneDir: o.cloneDir, Datadir: o.datadir,
		Agent: o.agentID, Retention: pol, Grace: o.retention.grace, Turns: turns, Metrics: schedule.NewMetrics(reg),
		Logger: logger,
		Check: func(ctx context.Context) error {
			info, err := src.Info(ctx)
			if err != nil {
				return err
			}
			if cur := streamer.Streaming(); o.follow != "" && cur.ServerID != 0 && (cur.ServerID != info.ServerID || cur.UUID != info.UUID) {
				// Its positions would be another server's binlog's.
				return fmt.Errorf("the archive follows server_id %d since a failover; a snapshot of --dsn's server (server_id %d) would not fit it: "+
					"take snapshots on the primary's pod", cur.ServerID, info.ServerID)
			}
			return preflight.Check(ctx, src.DB(), info.Flavor, preflight.SnapshotRole(o.snapMethod, physical.Tool(info.Flavor, "")))
		}}
}

// drills runs restore drills on --drill-schedule, unless the agent cannot
// read the archive back.
func (o *agentOptions) drills(st storage.Storage, writeOnly bool, turns *schedule.Turns, reg *prometheus.Registry,
	logger *slog.Logger) (*schedule.Drills, error) {
	switch {
	case o.drillSchedule == "":
		return nil, nil
	case writeOnly:
		logger.Warn("drills (--drill-schedule) are off: a drill restores the encrypted archive, and the agent holds no age identity; " +
			"run mysql-pitr drill with the identity elsewhere, or give the agent --age-identity")
		return nil, nil
	}
	return &schedule.Drills{Spec: o.drillSchedule, Turns: turns, Metrics: schedule.NewDrillMetrics(reg), Logger: logger,
		Options: drill.Options{Store: st, Target: restore.Target{Kind: restore.Latest}, Scratch: o.drillScratch,
			Threads: o.drillThreads, Host: o.agentID, Record: true, Programs: o.finder}}, nil
}

// completeInterval maps the flag (0 disables) onto Streamer.CompleteInterval
// (negative disables).
func completeInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// agentPreflight waits for the server as the streamer does, then checks
// the account's privileges for streaming and, with a schedule, for the
// snapshot method.
func agentPreflight(s *binlog.Streamer, scheduled bool, method string) func(context.Context) error {
	roles := []preflight.Role{preflight.Streamer}
	if scheduled {
		roles = append(roles, preflight.SnapshotRole(method, ""))
	}
	return func(ctx context.Context) error {
		info, err := s.Preflight(ctx)
		if err != nil {
			return err
		}
		if scheduled {
			roles[1] = preflight.SnapshotRole(method, physical.Tool(info.Flavor, ""))
		}
		return preflight.Check(ctx, s.Source.DB(), info.Flavor, roles...)
	}
}

// driverLogger adapts the MySQL driver's logger to slog at debug level.
type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Print(v ...any) { d.l.Debug(strings.TrimSpace(fmt.Sprint(v...))) }

// restoreMarkerPath is where a restore leaves its marker in datadir.
func restoreMarkerPath(datadir string) string {
	if datadir == "" {
		return ""
	}
	return filepath.Join(datadir, restore.MarkerFile)
}

// followAddrs are the --follow addresses.
func (o *agentOptions) followAddrs() []string {
	var out []string
	for _, a := range strings.Split(o.follow, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// followSources are the servers of --follow, with --dsn's account and TLS.
func (o *agentOptions) followSources(logger *slog.Logger) ([]*binlog.Source, error) {
	var out []*binlog.Source
	for _, addr := range o.followAddrs() {
		cfg, err := o.mysql.configAt(logger, addr)
		if err == nil {
			var src *binlog.Source
			if src, err = binlog.NewSource(cfg); err == nil {
				out = append(out, src)
				continue
			}
		}
		for _, s := range out {
			s.Close()
		}
		return nil, fmt.Errorf("--follow %s: %w", addr, err)
	}
	return out, nil
}

// followResolver gives the servers of the --follow names that resolve to
// several addresses (a headless Service), resolved anew at each call, one
// pool per address kept across calls. A name that resolves to one address
// is a candidate by its name already.
type followResolver struct {
	o       *agentOptions
	logger  *slog.Logger
	mu      sync.Mutex
	sources map[string]*binlog.Source
}

func (r *followResolver) resolve(ctx context.Context) ([]*binlog.Source, error) {
	var out []*binlog.Source
	var errs []error
	for _, entry := range r.o.followAddrs() {
		host, port, _ := net.SplitHostPort(entry)
		if net.ParseIP(host) != nil {
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(ips) < 2 {
			continue
		}
		for _, ip := range ips {
			src, err := r.source(net.JoinHostPort(ip, port))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, src)
		}
	}
	return out, errors.Join(errs...)
}

// source is the pool of the server at addr.
func (r *followResolver) source(addr string) (*binlog.Source, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if src, ok := r.sources[addr]; ok {
		return src, nil
	}
	cfg, err := r.o.mysql.configAt(r.logger, addr)
	if err != nil {
		return nil, err
	}
	src, err := binlog.NewSource(cfg)
	if err != nil {
		return nil, err
	}
	r.sources[addr] = src
	return src, nil
}

func (r *followResolver) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, src := range r.sources {
		src.Close()
	}
}
