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
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/preflight"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// snapshotOptions are the settings of `mysql-pitr snapshot`.
type snapshotOptions struct {
	mysql    mysqlFlags
	storage  cli.StorageFlags
	log      cli.LogFlags
	method   string
	threads  int
	agentID  string
	cloneDir string
	bin      binDirFlag
	output

	finder programs.Finder // set by validate
}

func (o *snapshotOptions) register(fs *flag.FlagSet) {
	o.mysql.register(fs)
	o.storage.Register(fs)
	o.log.Register(fs)
	host, _ := os.Hostname()
	fs.StringVar(&o.method, "method", catalog.MethodLogical, "logical (a parallel dump, needs only a connection) or physical (on the server's host: mariadb-backup on MariaDB, "+
		"the clone plugin on MySQL, or xtrabackup where it is installed)")
	fs.StringVar(&o.cloneDir, "clone-dir", "", "physical snapshots of MySQL: where the clone is staged, on the server's host, writable by the server's OS user, "+
		"with room for a copy of the data (default: beside the server's datadir)")
	fs.IntVar(&o.threads, "threads", runtime.NumCPU(), "parallel connections for a logical snapshot")
	fs.StringVar(&o.agentID, "agent-id", host, "who takes the snapshot, recorded in its manifest")
	o.bin.register(fs)
}

// validate names the first bad setting.
func (o *snapshotOptions) validate() (err error) {
	switch {
	case o.method != catalog.MethodLogical && o.method != catalog.MethodPhysical:
		return cli.Usage(fmt.Errorf("--method %q: want logical or physical", o.method))
	case o.threads < 1:
		return cli.Usage(fmt.Errorf("--threads %d: at least 1", o.threads))
	}
	o.finder, err = o.bin.finder()
	return err
}

// run takes a snapshot of the server into the archive.
func (o *snapshotOptions) run(ctx context.Context) (err error) {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	srv, err := o.mysql.server(ctx, logger, true)
	defer func() { err = srv.explain(err) }()
	if err != nil {
		return err
	}
	src, err := binlog.NewSource(srv.cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	// The login and the privileges before the archive is touched.
	info, err := src.Info(ctx)
	if err != nil {
		return err
	}
	physOpts := o.physicalOptions(info.Flavor)
	physOpts.Source, physOpts.TLS, physOpts.Logger = src, srv.tls, logger
	tool := physical.Tool(info.Flavor, physOpts.ToolPath)
	if err := preflight.Check(ctx, src.DB(), info.Flavor, preflight.SnapshotRole(o.method, tool)); err != nil {
		return err
	}
	if o.method == catalog.MethodPhysical {
		// The tool, the clone's needs and its room, before the archive.
		if err := physical.Check(ctx, physOpts); err != nil {
			return err
		}
	}
	st, err := o.storage.Open(ctx, cli.Write, logger)
	if err != nil {
		return err
	}
	m, err := o.take(ctx, st, srv, physOpts, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "snapshot %s (%s): consistent with %s, gtid %s; %d bytes stored in %s; writes blocked %s\n",
		m.ID, m.Method, m.Binlog, m.GTIDSet, m.StoredBytes, m.Finished.Sub(m.Started).Round(time.Millisecond), m.WritesBlocked)
	return nil
}

// physicalOptions are a physical snapshot's settings: the backup tool from
// --server-bindir when it holds one; otherwise the snapshot finds it (on
// PATH and in the sbin directories), or takes the clone plugin on MySQL,
// and says how to install what is missing. The mysqld that finishes a
// clone comes from --server-bindir alone.
func (o *snapshotOptions) physicalOptions(flavor binlog.Flavor) physical.Options {
	finder := o.finder
	p := physical.Options{CloneDir: o.cloneDir, Agent: o.agentID}
	if o.method != catalog.MethodPhysical || finder.Dir == "" {
		return p
	}
	p.ToolPath, _ = finder.Look(programs.Names(string(flavor), programs.Backup)...)
	names := programs.Names(string(flavor), programs.Server)
	var err error
	if p.ServerPath, err = finder.Look(names...); err != nil {
		p.ServerPath = filepath.Join(finder.Dir, names[0])
	}
	return p
}

// take takes the snapshot into st, showing its progress.
func (o *snapshotOptions) take(ctx context.Context, st storage.Storage, srv server, physOpts physical.Options,
	logger *slog.Logger) (*catalog.Manifest, error) {
	// The archive's keys name its newest timeline: a writer holding only
	// the public recipients of an encrypted archive needs to read nothing.
	tl, err := catalog.NewestTimeline(ctx, st)
	if err != nil {
		return nil, err
	}
	progress := newProgress(o.stderr, logger)
	defer progress.done()
	if o.method == catalog.MethodPhysical {
		physOpts.Storage, physOpts.Timeline = st, tl
		return physical.Take(ctx, physOpts)
	}
	return snapshot.TakeLogical(ctx, snapshot.LogicalOptions{Source: srv.cfg, Storage: st, Threads: o.threads,
		Timeline: tl, Agent: o.agentID, Logger: logger, Progress: progress.update})
}

// progress shows a snapshot's progress: a line redrawn on a terminal, a log
// line every 10 s otherwise.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	logger   interface{ Info(string, ...any) }
	last     time.Time
	start    time.Time
	finished bool
	drawn    bool
}

func newProgress(w io.Writer, logger interface{ Info(string, ...any) }) *progress {
	return &progress{w: w, tty: cli.IsTerminal(w), logger: logger, start: time.Now()}
}

func (p *progress) update(s snapshot.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	rate := float64(s.Bytes) / time.Since(p.start).Seconds() / (1 << 20)
	if p.tty {
		fmt.Fprintf(p.w, "\r%d/%d tables, %d/%d chunks, %d rows, %.1f MiB (%.1f MiB/s)   ",
			s.TablesDone, s.TablesTotal, s.ChunksDone, s.ChunksTotal, s.Rows, float64(s.Bytes)/(1<<20), rate)
		p.drawn = true
		return
	}
	if time.Since(p.last) >= 10*time.Second {
		p.last = time.Now()
		p.logger.Info("snapshot progress", "tables_done", s.TablesDone, "tables", s.TablesTotal, "chunks_done", s.ChunksDone,
			"chunks", s.ChunksTotal, "rows", s.Rows, "bytes", s.Bytes, "mib_per_s", fmt.Sprintf("%.1f", rate))
	}
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn && !p.finished {
		fmt.Fprintln(p.w)
	}
	p.finished = true
}
