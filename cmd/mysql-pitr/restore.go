package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

// restoreOptions are the settings of `mysql-pitr restore`: a datadir, or
// a running empty server (--target-dsn), restored to a moment.
type restoreOptions struct {
	storage    cli.StorageFlags
	log        cli.LogFlags
	to         cli.ToFlag
	toPosition string
	datadir    string
	into       mysqlFlags
	dryRun     bool
	force      bool
	discard    bool
	replay     string
	bufferPool sizeFlag
	threads    int
	bin        binDirFlag
	output

	// Set by validate.
	target restore.Target
	finder programs.Finder
}

func (o *restoreOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.log.Register(fs)
	o.to.Register(fs)
	fs.StringVar(&o.toPosition, "to-position", "", "restore to the end of the transaction that ends at FILE:POS")
	fs.StringVar(&o.datadir, "datadir", "", "directory to restore into (must be empty unless --force)")
	o.into.registerTarget(fs)
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the plan and stop")
	fs.BoolVar(&o.force, "force", false, "move the datadir's current contents aside (to DATADIR.before-restore-TIME)")
	fs.BoolVar(&o.discard, "discard-existing", false, "with --force: delete the datadir's current contents instead")
	fs.StringVar(&o.replay, "replay", restore.ReplayServer, "how to replay the binlog: server (the temporary server replicates, in parallel, from a binlog server the restore runs on a loopback port) or mysqlbinlog (mariadb-binlog | mariadb); both stop at an exact position")
	o.bufferPool = restore.DefaultBufferPool
	fs.Var(&o.bufferPool, "buffer-pool-size", "InnoDB buffer pool of the temporary server that loads and replays (a restore into --datadir); its redo log is sized with it")
	fs.IntVar(&o.threads, "threads", runtime.NumCPU(), "parallel connections loading a logical snapshot, and parallel apply threads with --replay server")
	o.bin.register(fs)
}

// validate names the first bad setting.
func (o *restoreOptions) validate() (err error) {
	if o.finder, err = o.bin.finder(); err != nil {
		return err
	}
	if o.target, err = o.to.Target(o.toPosition); err != nil {
		return err
	}
	switch {
	case o.datadir == "" && o.into.dsn == "" && !o.dryRun:
		return cli.Usage(errors.New("say where to restore: --datadir DIR or --target-dsn DSN (or --dry-run); a pod of the chart: kubectl mysql-pitr restore --pod NAME"))
	case o.datadir != "" && o.into.dsn != "":
		return cli.Usage(errors.New("give either --datadir or --target-dsn, not both"))
	case o.discard && !o.force:
		return cli.Usage(errors.New("--discard-existing needs --force"))
	case o.replay != restore.ReplayServer && o.replay != restore.ReplayMysqlbinlog:
		return cli.Usage(fmt.Errorf("--replay %q: use %s or %s", o.replay, restore.ReplayServer, restore.ReplayMysqlbinlog))
	case o.threads < 1:
		return cli.Usage(fmt.Errorf("--threads %d: at least 1", o.threads))
	case o.bufferPool < 64<<20:
		return cli.Usage(fmt.Errorf("--buffer-pool-size %d: at least 64MiB", o.bufferPool))
	}
	if o.into.dsn != "" {
		if _, err := o.into.tls.settings(); err != nil {
			return err
		}
	}
	return nil
}

// run plans the restore, prints the plan and, unless --dry-run, restores.
func (o *restoreOptions) run(ctx context.Context) (err error) {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	st, err := o.storage.Open(ctx, cli.Read, logger)
	if err != nil {
		return err
	}
	p, err := cli.PlanRestore(ctx, st, o.target)
	if err != nil {
		return err
	}
	cli.PrintPlan(o.stdout, p)
	if o.dryRun {
		return nil
	}
	progress := newRestoreProgress(o.stderr, logger)
	opts := restore.Options{Store: st, Datadir: o.datadir, Force: o.force, DiscardExisting: o.discard,
		Replay: o.replay, Threads: o.threads, Logger: logger, Progress: progress.update, BufferPool: int64(o.bufferPool), Programs: o.finder}
	dest := o.datadir
	if o.into.dsn != "" {
		var srv server
		if srv, err = o.into.server(ctx, logger, true); err != nil {
			return err
		}
		defer func() { err = srv.explain(err) }()
		opts.Target, opts.TargetTLS, dest = srv.cfg, srv.tls, "server "+srv.cfg.Addr
		if err := preflightTarget(ctx, opts.Target); err != nil {
			return err
		}
	}
	res, err := restore.Apply(ctx, p, opts)
	progress.done()
	if err != nil {
		return err
	}
	printRestored(o.stdout, dest, p, res)
	return nil
}

// printRestored reports a finished restore into dest.
func printRestored(w io.Writer, dest string, p *restore.Plan, res *restore.Result) {
	if res.MovedAside != "" {
		fmt.Fprintf(w, "previous datadir contents moved to %s\n", res.MovedAside)
	}
	last := "-"
	if !res.Marker.LastCommit.IsZero() {
		last = res.Marker.LastCommit.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "restored %s to %s: snapshot %s + %d transactions, last committed %s, stopped at %s, in %s (replay %s)\n",
		dest, p.Target, p.Snapshot.ID, res.Marker.Transactions, last, res.Marker.Stop, res.Duration.Round(time.Millisecond),
		res.ReplayDuration.Round(time.Millisecond))
}

// errKubeMoved answers restore --kube: restoring a pod of the chart is the
// kubectl plugin's, which carries the Kubernetes client this binary, the
// sidecar, does without.
var errKubeMoved = cli.Usage(errors.New("restore --kube is done by the kubectl plugin: run kubectl mysql-pitr restore --pod NAME … " +
	"with the same flags but --kube (the kubectl-mysql_pitr binary, on PATH)"))

// kubeRequested reports whether the flags in args ask for --kube.
func kubeRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "kube" && value != "false" {
			return true
		}
	}
	return false
}
