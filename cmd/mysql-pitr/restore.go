package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	fs.StringVar(&into.dsn, "target-dsn", "", "restore into this running, empty server instead of a datadir (logical snapshots); password from --target-password-file or MYSQL_PITR_TARGET_PASSWORD")
	fs.StringVar(&into.passwordFile, "target-password-file", "", "file holding the target server's password")
	fs.BoolVar(&dryRun, "dry-run", false, "print the plan and stop")
	fs.BoolVar(&force, "force", false, "move the datadir's current contents aside (to DATADIR.before-restore-TIME)")
	fs.BoolVar(&discard, "discard-existing", false, "with --force: delete the datadir's current contents instead")
	fs.StringVar(&replay, "replay", restore.ReplayServer, "how to replay the binlog: server (the temporary server replicates, in parallel, from a binlog server the restore runs on a loopback port) or mysqlbinlog (mariadb-binlog | mariadb); both stop at an exact position")
	fs.IntVar(&threads, "threads", runtime.NumCPU(), "parallel connections loading a logical snapshot, and parallel apply threads with --replay server")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	target, err := restore.ParseTarget(to, toPos)
	if err != nil {
		return usageError{err}
	}
	switch {
	case datadir == "" && into.dsn == "" && !dryRun:
		return usageError{errors.New("say where to restore: --datadir DIR or --target-dsn DSN (or --dry-run)")}
	case datadir != "" && into.dsn != "":
		return usageError{errors.New("give either --datadir or --target-dsn, not both")}
	case discard && !force:
		return usageError{errors.New("--discard-existing needs --force")}
	case replay != restore.ReplayServer && replay != restore.ReplayMysqlbinlog:
		return usageError{fmt.Errorf("--replay %q: use %s or %s", replay, restore.ReplayServer, restore.ReplayMysqlbinlog)}
	case threads < 1:
		return usageError{fmt.Errorf("--threads %d: at least 1", threads)}
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	st, err := sf.open(ctx)
	if err != nil {
		return err
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return err
	}
	p, err := restore.Make(arch, snaps.Complete, target, time.Now())
	if err != nil {
		return err
	}
	printPlan(stdout, p)
	if dryRun {
		return nil
	}
	opts := restore.Options{Store: st, Datadir: datadir, Force: force, DiscardExisting: discard,
		Replay: replay, Threads: threads, Logger: logger}
	if into.dsn != "" {
		if opts.Target, err = into.configWithEnv("MYSQL_PITR_TARGET_PASSWORD"); err != nil {
			return err
		}
		datadir = "server " + opts.Target.Addr
	}
	res, err := restore.Apply(ctx, p, opts)
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
	fmt.Fprintf(stdout, "restored %s to %s: snapshot %s + %d transactions, last committed %s, stopped at %s, in %s\n",
		datadir, p.Target, p.Snapshot.ID, res.Marker.Transactions, last, res.Marker.Stop, res.Duration.Round(time.Millisecond))
	return nil
}

func printPlan(w io.Writer, p *restore.Plan) {
	fmt.Fprintf(w, "target:    %s\n", p.Target)
	fmt.Fprintf(w, "snapshot:  %s (%s, consistent at %s, binlog %s)\n", p.Snapshot.ID, p.Snapshot.Method,
		fmtTime(p.Snapshot.ConsistentAt), p.Snapshot.Binlog)
	fmt.Fprintf(w, "replay:    timeline %s from %s, %d segments\n", p.Timeline, p.From, len(p.Segments))
	fmt.Fprintf(w, "fetch:     %d bytes\n", p.FetchBytes)
	fmt.Fprintf(w, "archive:   ends at %s, last commit %s\n", p.ArchiveEnd, fmtTime(p.ArchiveEndTime))
}
