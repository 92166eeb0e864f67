package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mysql-pitr/mysql-pitr/agent"
	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/drill"
	"github.com/mysql-pitr/mysql-pitr/preflight"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/retention"
	"github.com/mysql-pitr/mysql-pitr/schedule"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// agentOptions are the agent's settings.
type agentOptions struct {
	mysql          mysqlFlags
	storage        storageFlags
	log            logFlags
	serverID       uint
	flushInterval  time.Duration
	maxSegment     sizeFlag
	spoolDir       string
	spoolMax       sizeFlag
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
}

func (o *agentOptions) register(fs *flag.FlagSet) {
	o.mysql.register(fs)
	o.storage.register(fs)
	o.log.register(fs)
	host, _ := os.Hostname()
	o.maxSegment = binlog.DefaultMaxSegment
	o.spoolMax = 1 << 30
	fs.UintVar(&o.serverID, "server-id", binlog.DefaultServerID, "server_id the agent uses as a replica; must differ from every server and replica")
	fs.DurationVar(&o.flushInterval, "flush-interval", binlog.DefaultFlushInterval, "seal and upload the binlog at least this often when there is new data")
	fs.Var(&o.maxSegment, "max-segment", "seal a segment when it reaches this many binlog bytes")
	fs.StringVar(&o.spoolDir, "spool-dir", filepath.Join(os.TempDir(), "mysql-pitr-spool"), "local directory where segments wait for upload")
	fs.Var(&o.spoolMax, "spool-max", "largest spool; when full, the agent stops reading the binlog until uploads catch up")
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

// Validate names the first bad setting.
func (o *agentOptions) Validate() error {
	switch {
	case o.serverID == 0 || o.serverID > 1<<32-1:
		return usageError{fmt.Errorf("--server-id must be between 1 and 4294967295")}
	case o.flushInterval < 10*time.Millisecond:
		return usageError{fmt.Errorf("--flush-interval %s is too short (minimum 10ms)", o.flushInterval)}
	case o.maxSegment < 1<<10:
		return usageError{fmt.Errorf("--max-segment must be at least 1KiB")}
	case o.spoolDir == "":
		return usageError{fmt.Errorf("--spool-dir is required")}
	case o.agentID == "":
		return usageError{fmt.Errorf("--agent-id is required")}
	case o.leaseTTL < time.Second:
		return usageError{fmt.Errorf("--lease-ttl must be at least 1s")}
	case o.compact < 0:
		return usageError{fmt.Errorf("--compact-interval %s is negative", o.compact)}
	case o.connectTimeout < 0:
		return usageError{fmt.Errorf("--connect-timeout %s is negative", o.connectTimeout)}
	case o.completeEvery < 0:
		return usageError{fmt.Errorf("--complete-interval %s is negative", o.completeEvery)}
	case o.snapMethod != catalog.MethodLogical && o.snapMethod != catalog.MethodPhysical:
		return usageError{fmt.Errorf("--snapshot-method %q: want logical or physical", o.snapMethod)}
	case o.snapThreads < 1:
		return usageError{fmt.Errorf("--snapshot-threads %d: at least 1", o.snapThreads)}
	}
	if o.schedule != "" {
		if _, err := schedule.ParseSpec(o.schedule); err != nil {
			return usageError{fmt.Errorf("--schedule %q is not a valid schedule: %v", o.schedule, err)}
		}
	}
	if o.drillSchedule != "" {
		if _, err := schedule.ParseSpec(o.drillSchedule); err != nil {
			return usageError{fmt.Errorf("--drill-schedule %q is not a valid schedule: %v", o.drillSchedule, err)}
		}
		switch {
		case o.drillScratch == "":
			return usageError{fmt.Errorf("--drill-scratch is required with --drill-schedule")}
		case o.drillThreads < 1:
			return usageError{fmt.Errorf("--drill-threads %d: at least 1", o.drillThreads)}
		}
	}
	pol, err := o.retention.policy()
	if err != nil {
		return err
	}
	if pol.Enabled() && o.schedule == "" {
		return usageError{fmt.Errorf("--keep-snapshots and --keep-within apply after scheduled snapshots: add --schedule, or run mysql-pitr prune")}
	}
	return nil
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var o agentOptions
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return err
	}
	// The replication stream says when preferred falls back to plaintext.
	w, err := openWriter(ctx, &o.mysql, &o.log, stderr, false)
	defer func() { err = explainTLS(err, w.tls, w.mcfg) }()
	if err != nil {
		return err
	}
	logger, mcfg, tlsSettings := w.logger, w.mcfg, w.tls
	src, err := binlog.NewSource(mcfg)
	if err != nil {
		return err
	}
	defer src.Close()
	// The server (waited for), the login and the privileges before the
	// archive or the spool is touched.
	probe := &binlog.Streamer{Source: src, ConnectTimeout: o.connectTimeout, Logger: logger.With("agent", o.agentID, "component", "binlog")}
	if err := agentPreflight(probe, o.schedule != "", o.snapMethod)(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := w.openArchive(ctx, &o.storage); err != nil {
		return err
	}
	st := w.st
	// The spool is locked first, and opened only once the lease is held:
	// an agent refused either way leaves another's spool untouched.
	spoolLock, err := binlog.LockSpool(filepath.Join(o.spoolDir, o.storage.id()))
	if err != nil {
		return err
	}
	defer spoolLock.Release()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	logger = logger.With("agent", o.agentID)
	// The MySQL driver logs dropped idle connections on its own; route them to debug.
	mysql.SetLogger(driverLogger{logger.With("component", "mysql-driver")})
	s := &binlog.Streamer{
		Source: src, Store: st, ServerID: uint32(o.serverID), Agent: o.agentID,
		FlushInterval: o.flushInterval, MaxSegment: int64(o.maxSegment), ConnectTimeout: o.connectTimeout,
		CompleteInterval: completeInterval(o.completeEvery),
		RestoreMarker:    restoreMarkerPath(o.datadir),
		Logger:           logger.With("component", "binlog"), Metrics: binlog.NewMetrics(reg),
	}
	var compactor *binlog.Compactor
	// An agent given only the public recipients of an encrypted archive
	// cannot read anything back: compaction (merging segments) and retention
	// (reading manifests and records) are left to where the identity is.
	writeOnly := false
	if c, ok := st.(*crypt.Storage); ok && c.Encrypts() && !c.Decrypts() {
		writeOnly = true
	}
	if writeOnly && o.compact > 0 {
		logger.Info("compaction is off: the archive is encrypted and the agent holds no age identity to read segments back")
	} else if o.compact > 0 {
		compactor = &binlog.Compactor{Store: st, Interval: o.compact, Logger: logger.With("component", "compactor"), Metrics: s.Metrics,
			Gen: s.Uploader().Generation, Checkpoint: s.Uploader().Checkpoint}
	}
	// Snapshots and drills take turns.
	turns := &schedule.Turns{}
	var sched *schedule.Scheduler
	if o.schedule != "" {
		pol, _ := o.retention.policy() // validated
		if writeOnly && pol.Enabled() {
			logger.Warn("retention (--keep-snapshots, --keep-within) is off: it reads the encrypted archive's manifests and records, " +
				"and the agent holds no age identity; run mysql-pitr prune with the identity elsewhere, or give the agent --age-identity")
			pol = retention.Policy{}
		}
		sched = &schedule.Scheduler{Spec: o.schedule, Method: o.snapMethod, Source: mcfg, TLS: tlsSettings, Threads: o.snapThreads, Store: st,
			CloneDir: o.cloneDir, Datadir: o.datadir,
			Agent: o.agentID, Retention: pol, Grace: o.retention.grace, Turns: turns, Metrics: schedule.NewMetrics(reg),
			Logger: logger}
	}
	var drills *schedule.Drills
	if writeOnly && o.drillSchedule != "" {
		logger.Warn("drills (--drill-schedule) are off: a drill restores the encrypted archive, and the agent holds no age identity; " +
			"run mysql-pitr drill with the identity elsewhere, or give the agent --age-identity")
	} else if o.drillSchedule != "" {
		finder, err := o.bin.finder()
		if err != nil {
			return err
		}
		drills = &schedule.Drills{Spec: o.drillSchedule, Turns: turns, Metrics: schedule.NewDrillMetrics(reg), Logger: logger,
			Options: drill.Options{Store: st, Target: restore.Target{Kind: restore.Latest}, Scratch: o.drillScratch,
				Threads: o.drillThreads, Host: o.agentID, Record: true, Programs: finder}}
	}
	a := &agent.Agent{Streamer: s, Compactor: compactor, Scheduler: sched, Drills: drills, Store: st, Registry: reg, Listen: o.listen,
		Holder: o.agentID, LeaseTTL: o.leaseTTL, Logger: logger.With("component", "agent"), SnapshotNewTimelines: o.snapOnTimeline,
		SpoolLock: spoolLock, SpoolMax: int64(o.spoolMax)}
	if sched != nil {
		sched.Check = func(ctx context.Context) error {
			info, err := src.Info(ctx)
			if err != nil {
				return err
			}
			return preflight.Check(ctx, src.DB(), info.Flavor, preflight.SnapshotRole(o.snapMethod, physical.Tool(info.Flavor, "")))
		}
	}
	logger.Info("agent starting", "server", src.Address(), "storage", o.storage.url, "flush_interval", o.flushInterval.String(),
		"listen", o.listen, "spool", filepath.Join(o.spoolDir, o.storage.id()), "schedule", o.schedule, "drill_schedule", o.drillSchedule)
	err = a.Run(ctx)
	if err == nil {
		logger.Info("agent stopped")
	}
	return err
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
