package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/preflight"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
)

// snapshotOptions are the settings of `mysql-pitr snapshot`.
type snapshotOptions struct {
	mysql    mysqlFlags
	storage  storageFlags
	log      logFlags
	method   string
	threads  int
	agentID  string
	cloneDir string
	bin      binDirFlag
}

func (o *snapshotOptions) register(fs *flag.FlagSet) {
	o.mysql.register(fs)
	o.storage.register(fs)
	o.log.register(fs)
	host, _ := os.Hostname()
	fs.StringVar(&o.method, "method", catalog.MethodLogical, "logical (a parallel dump, needs only a connection) or physical (on the server's host: mariadb-backup on MariaDB, "+
		"the clone plugin on MySQL, or xtrabackup where it is installed)")
	fs.StringVar(&o.cloneDir, "clone-dir", "", "physical snapshots of MySQL: where the clone is staged, on the server's host, writable by the server's OS user, "+
		"with room for a copy of the data (default: beside the server's datadir)")
	fs.IntVar(&o.threads, "threads", runtime.NumCPU(), "parallel connections for a logical snapshot")
	fs.StringVar(&o.agentID, "agent-id", host, "who takes the snapshot, recorded in its manifest")
	o.bin.register(fs)
}

// Validate names the first bad setting.
func (o *snapshotOptions) Validate() error {
	switch {
	case o.method != catalog.MethodLogical && o.method != catalog.MethodPhysical:
		return usageError{fmt.Errorf("--method %q: want logical or physical", o.method)}
	case o.threads < 1:
		return usageError{fmt.Errorf("--threads %d: at least 1", o.threads)}
	}
	return nil
}

func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var o snapshotOptions
	fs := flag.NewFlagSet("snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return err
	}
	finder, err := o.bin.finder()
	if err != nil {
		return err
	}
	w, err := openWriter(ctx, &o.mysql, &o.log, stderr, true)
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
	// The login and the privileges before the archive is touched.
	info, err := src.Info(ctx)
	if err != nil {
		return err
	}
	// The backup tool from --server-bindir when it holds one; otherwise the
	// snapshot finds it (on PATH and in the sbin directories), or takes the
	// clone plugin on MySQL, and says how to install what is missing. The
	// mysqld that finishes a clone comes from --server-bindir alone.
	var toolPath, serverPath string
	if o.method == catalog.MethodPhysical && finder.Dir != "" {
		toolPath, _ = finder.Look(programs.Names(string(info.Flavor), programs.Backup)...)
		names := programs.Names(string(info.Flavor), programs.Server)
		if serverPath, err = finder.Look(names...); err != nil {
			serverPath = filepath.Join(finder.Dir, names[0])
		}
	}
	tool := physical.Tool(info.Flavor, toolPath)
	if err := preflight.Check(ctx, src.DB(), info.Flavor, preflight.SnapshotRole(o.method, tool)); err != nil {
		return err
	}
	physOpts := physical.Options{Source: src, TLS: tlsSettings, CloneDir: o.cloneDir, Agent: o.agentID, ToolPath: toolPath,
		ServerPath: serverPath, Logger: logger}
	if o.method == catalog.MethodPhysical {
		// The tool, the clone's needs and its room, before the archive.
		if err := physical.Check(ctx, physOpts); err != nil {
			return err
		}
	}
	if err := w.openArchive(ctx, &o.storage); err != nil {
		return err
	}
	st := w.st
	// The archive's keys name its newest timeline: a writer holding only
	// the public recipients of an encrypted archive needs to read nothing.
	tl, err := catalog.NewestTimeline(ctx, st)
	if err != nil {
		return err
	}
	progress := newProgress(stderr, logger)
	defer progress.done()
	var m *catalog.Manifest
	switch o.method {
	case catalog.MethodLogical:
		m, err = snapshot.TakeLogical(ctx, snapshot.LogicalOptions{Source: mcfg, Storage: st, Threads: o.threads,
			Timeline: tl, Agent: o.agentID, Logger: logger, Progress: progress.update})
	case catalog.MethodPhysical:
		physOpts.Storage, physOpts.Timeline = st, tl
		m, err = physical.Take(ctx, physOpts)
	}
	if err != nil {
		return err
	}
	progress.done()
	fmt.Fprintf(stdout, "snapshot %s (%s): consistent with %s, gtid %s; %d bytes stored in %s; writes blocked %s\n",
		m.ID, m.Method, m.Binlog, m.GTIDSet, m.StoredBytes, m.Finished.Sub(m.Started).Round(time.Millisecond), m.WritesBlocked)
	return nil
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
	return &progress{w: w, tty: isTerminal(w), logger: logger, start: time.Now()}
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
