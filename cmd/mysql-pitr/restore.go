package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/restore/kube"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var sf storageFlags
	var lf logFlags
	var to, toPos, datadir, replay string
	var dryRun, force, discard bool
	var threads int
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf.register(fs)
	lf.register(fs)
	fs.StringVar(&to, "to", "", "restore to this moment: an RFC 3339 time with a zone (2026-11-27T10:41:07Z), or latest")
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
	var kf kubeFlags
	kf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	finder, err := bin.finder()
	if err != nil {
		return err
	}
	target, err := restore.ParseTarget(to, toPos)
	if err != nil {
		return usageError{err}
	}
	if kf.enabled {
		switch {
		case datadir != "" || into.dsn != "":
			return usageError{errors.New("--kube restores a pod of the chart in place: it excludes --datadir and --target-dsn")}
		case toPos != "":
			return usageError{errors.New("--kube restores to --to TIME or latest: the chart's restore.sh takes no binlog position")}
		case kf.pod == "":
			return usageError{errors.New("--kube needs --pod NAME")}
		case kf.newPVC != "" && (force || discard):
			return usageError{errors.New("--to-new-pvc restores into a new, empty volume: --force and --discard-existing do not apply")}
		case kf.timeout <= 0:
			return usageError{fmt.Errorf("--timeout %s: must be positive", kf.timeout)}
		}
	} else if kf.pod != "" || kf.release != "" || kf.newPVC != "" {
		return usageError{errors.New("--pod, --release and --to-new-pvc go with --kube")}
	}
	if kf.enabled && !dryRun {
		return runKubeRestore(ctx, kf, &sf, target, stdout)
	}
	switch {
	case datadir == "" && into.dsn == "" && !dryRun:
		return usageError{errors.New("say where to restore: --datadir DIR, --target-dsn DSN or --kube --pod NAME (or --dry-run)")}
	case datadir != "" && into.dsn != "":
		return usageError{errors.New("give either --datadir or --target-dsn, not both")}
	case discard && !force:
		return usageError{errors.New("--discard-existing needs --force")}
	case replay != restore.ReplayServer && replay != restore.ReplayMysqlbinlog:
		return usageError{fmt.Errorf("--replay %q: use %s or %s", replay, restore.ReplayServer, restore.ReplayMysqlbinlog)}
	case threads < 1:
		return usageError{fmt.Errorf("--threads %d: at least 1", threads)}
	case bufferPool < 64<<20:
		return usageError{fmt.Errorf("--buffer-pool-size %d: at least 64MiB", bufferPool)}
	}
	if into.dsn != "" {
		if _, err := into.tls.settings(); err != nil {
			return err
		}
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	sf.tlsLog.logger = logger
	st, p, err := planRestore(ctx, &sf, target)
	if err != nil {
		return err
	}
	printPlan(stdout, p)
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

func printPlan(w io.Writer, p *restore.Plan) {
	fmt.Fprintf(w, "target:    %s\n", p.Target)
	fmt.Fprintf(w, "snapshot:  %s (%s, consistent at %s, binlog %s)\n", p.Snapshot.ID, p.Snapshot.Method,
		fmtTime(p.Snapshot.ConsistentAt), p.Snapshot.Binlog)
	fmt.Fprintf(w, "replay:    timeline %s from %s, %d segments\n", p.Timeline, p.From, len(p.Segments))
	fmt.Fprintf(w, "fetch:     %d bytes\n", p.FetchBytes)
	fmt.Fprintf(w, "archive:   ends at %s, last commit %s\n", p.ArchiveEnd, fmtTime(p.ArchiveEndTime))
	if !p.CompleteAt.IsZero() {
		fmt.Fprintf(w, "complete:  up to %s (the server committed nothing after the last commit)\n", fmtTime(p.CompleteAt))
	}
	for _, is := range p.Skipped {
		fmt.Fprintf(w, "skipped:   %s: %s: %s\n", is.Key, is.Kind, is.Detail)
	}
}

// planRestore opens the archive and plans the restore to target.
func planRestore(ctx context.Context, sf *storageFlags, target restore.Target) (storage.Storage, *restore.Plan, error) {
	st, err := sf.openReader(ctx)
	if err != nil {
		return nil, nil, err
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return nil, nil, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	p, err := restore.Make(arch, snaps.Complete, target, time.Now())
	if err != nil {
		return nil, nil, err
	}
	p.NoteSkipped(snaps)
	return st, p, nil
}

// kubeFlags select a pod of the chart to restore in place.
type kubeFlags struct {
	enabled                        bool
	namespace, kubeconfig, release string
	pod                            string
	newPVC                         string
	yes                            bool
	timeout                        time.Duration
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.enabled, "kube", false, "restore a pod of the Helm chart in place: record a request in <release>-restore-requests, delete the pod, wait until it is Ready")
	fs.StringVar(&k.namespace, "namespace", "", "with --kube: the pod's namespace (default: the kubeconfig context's, or the service account's)")
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "with --kube: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	fs.StringVar(&k.pod, "pod", "", "with --kube: the pod to restore, e.g. db-mysql-pitr-0")
	fs.StringVar(&k.release, "release", "", "with --kube: the Helm release (default: the pod's app.kubernetes.io/instance label)")
	fs.StringVar(&k.newPVC, "to-new-pvc", "", "with --kube: leave the pod alone and restore its archive into a new PVC of this name (size and storage class cloned from the pod's), through a Job")
	fs.BoolVar(&k.yes, "yes", false, "with --kube: do not ask for confirmation")
	fs.DurationVar(&k.timeout, "timeout", kube.DefaultTimeout, "with --kube: how long to wait for the restored pod to become Ready, or for the Job with --to-new-pvc")
}

// runKubeRestore restores a pod of the chart in place; the plan is made
// against --storage (the pod's archive) before anything in the cluster is
// touched.
func runKubeRestore(ctx context.Context, kf kubeFlags, sf *storageFlags, target restore.Target, stdout io.Writer) error {
	client, ns, err := kube.NewClient(kf.kubeconfig, kf.namespace)
	if err != nil {
		return err
	}
	o := kube.Options{
		Client: client, Namespace: ns, Pod: kf.pod, Release: kf.release, Target: target,
		Plan: func(ctx context.Context) (*restore.Plan, error) {
			_, p, err := planRestore(ctx, sf, target)
			return p, err
		},
		PrintPlan: printPlan, Yes: kf.yes, Timeout: kf.timeout, Out: stdout,
		NewPVC: kf.newPVC, Storage: sf.url,
	}
	prompt := fmt.Sprintf("This replaces the datadir of pod %s/%s (the old contents are moved aside on its volume) and restarts it.", ns, kf.pod)
	if kf.newPVC != "" {
		prompt = fmt.Sprintf("This creates PVC %s/%s and restores pod %s's archive into it through a Job; the pod is not touched.", ns, kf.newPVC, kf.pod)
	}
	if !kf.yes && isTerminal(os.Stdin) {
		o.Confirm = func() (bool, error) {
			fmt.Fprintf(stdout, "%s\nType yes to go on: ", prompt)
			line, err := bufio.NewReader(os.Stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return false, err
			}
			return strings.TrimSpace(line) == "yes", nil
		}
	}
	_, err = kube.Run(ctx, o)
	return err
}
