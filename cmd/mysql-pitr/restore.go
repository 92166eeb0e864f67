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

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var sf cli.StorageFlags
	var lf cli.LogFlags
	var to cli.ToFlag
	var toPos, datadir, replay string
	var dryRun, force, discard bool
	var threads int
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf.Register(fs)
	lf.Register(fs)
	to.Register(fs)
	fs.StringVar(&toPos, "to-position", "", "restore to the end of the transaction that ends at FILE:POS")
	fs.StringVar(&datadir, "datadir", "", "directory to restore into (must be empty unless --force)")
	var into mysqlFlags
	fs.Var(dsnFlag{&into.dsn, "--target-password-file", "MYSQL_PITR_TARGET_PASSWORD"}, "target-dsn",
		"restore into this running, empty server instead of a datadir (logical snapshots); password from --target-password-file or MYSQL_PITR_TARGET_PASSWORD")
	fs.StringVar(&into.passwordFile, "target-password-file", "", "file holding the target server's password")
	into.tls.register(fs)
	fs.BoolVar(&dryRun, "dry-run", false, "print the plan and stop")
	fs.BoolVar(&force, "force", false, "move the datadir's current contents aside (to DATADIR.before-restore-TIME)")
	fs.BoolVar(&discard, "discard-existing", false, "with --force: delete the datadir's current contents instead")
	fs.StringVar(&replay, "replay", restore.ReplayServer, "how to replay the binlog: server (the temporary server replicates, in parallel, from a binlog server the restore runs on a loopback port) or mysqlbinlog (mariadb-binlog | mariadb); both stop at an exact position")
	bufferPool := sizeFlag(restore.DefaultBufferPool)
	fs.Var(&bufferPool, "buffer-pool-size", "InnoDB buffer pool of the temporary server that loads and replays (a restore into --datadir); its redo log is sized with it")
	fs.IntVar(&threads, "threads", runtime.NumCPU(), "parallel connections loading a logical snapshot, and parallel apply threads with --replay server")
	var bin binDirFlag
	bin.register(fs)
	if kubeRequested(args) {
		return errKubeMoved
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	finder, err := bin.finder()
	if err != nil {
		return err
	}
	target, err := to.Target(toPos)
	if err != nil {
		return err
	}
	switch {
	case datadir == "" && into.dsn == "" && !dryRun:
		return cli.Usage(errors.New("say where to restore: --datadir DIR or --target-dsn DSN (or --dry-run); a pod of the chart: kubectl mysql-pitr restore --pod NAME"))
	case datadir != "" && into.dsn != "":
		return cli.Usage(errors.New("give either --datadir or --target-dsn, not both"))
	case discard && !force:
		return cli.Usage(errors.New("--discard-existing needs --force"))
	case replay != restore.ReplayServer && replay != restore.ReplayMysqlbinlog:
		return cli.Usage(fmt.Errorf("--replay %q: use %s or %s", replay, restore.ReplayServer, restore.ReplayMysqlbinlog))
	case threads < 1:
		return cli.Usage(fmt.Errorf("--threads %d: at least 1", threads))
	case bufferPool < 64<<20:
		return cli.Usage(fmt.Errorf("--buffer-pool-size %d: at least 64MiB", bufferPool))
	}
	if into.dsn != "" {
		if _, err := into.tls.settings(); err != nil {
			return err
		}
	}
	logger, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	st, err := sf.Open(ctx, cli.Read, logger)
	if err != nil {
		return err
	}
	p, err := cli.PlanRestore(ctx, st, target)
	if err != nil {
		return err
	}
	cli.PrintPlan(stdout, p)
	if dryRun {
		return nil
	}
	progress := newRestoreProgress(stderr, logger)
	opts := restore.Options{Store: st, Datadir: datadir, Force: force, DiscardExisting: discard,
		Replay: replay, Threads: threads, Logger: logger, Progress: progress.update, BufferPool: int64(bufferPool), Programs: finder}
	if into.dsn != "" {
		into.tls.notice.setLogger(logger)
		if opts.Target, err = into.configWithEnv("MYSQL_PITR_TARGET_PASSWORD"); err != nil {
			return err
		}
		opts.TargetTLS, _ = into.tls.settings() // checked by configWithEnv
		defer func(s mysqltls.Settings, cfg *mysql.Config) { err = explainTLS(err, s, cfg) }(opts.TargetTLS, opts.Target)
		logTLS(ctx, logger, opts.TargetTLS, opts.Target, true)
		datadir = "server " + opts.Target.Addr
		if err := preflightTarget(ctx, opts.Target); err != nil {
			return err
		}
	}
	res, err := restore.Apply(ctx, p, opts)
	progress.done()
	if err != nil {
		return err
	}
	if res.MovedAside != "" {
		fmt.Fprintf(stdout, "previous datadir contents moved to %s\n", res.MovedAside)
	}
	last := "-"
	if !res.Marker.LastCommit.IsZero() {
		last = res.Marker.LastCommit.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(stdout, "restored %s to %s: snapshot %s + %d transactions, last committed %s, stopped at %s, in %s (replay %s)\n",
		datadir, p.Target, p.Snapshot.ID, res.Marker.Transactions, last, res.Marker.Stop, res.Duration.Round(time.Millisecond),
		res.ReplayDuration.Round(time.Millisecond))
	return nil
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
