package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/drill"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

// drillOptions are the settings of `mysql-pitr drill`, which restores the
// archive into scratch space, checks it and records the outcome; a failed
// drill exits 1 with the reason.
type drillOptions struct {
	storage cli.StorageFlags
	log     cli.LogFlags
	to      string
	scratch string
	keep    bool
	record  bool
	threads int
	bin     binDirFlag
	output

	// Set by validate.
	target restore.Target
	finder programs.Finder
}

func (o *drillOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.log.Register(fs)
	fs.StringVar(&o.to, "to", "latest", "restore to this moment: latest, or an RFC 3339 time with a zone")
	fs.StringVar(&o.scratch, "scratch", os.TempDir(), "directory under which the drill restores a datadir (needs room for it; keep the path short)")
	fs.BoolVar(&o.keep, "keep-scratch", false, "leave the restored datadir in the scratch directory")
	fs.BoolVar(&o.record, "record", false, "record the drill's result in the archive (under drills/), where list and the agent's metrics show it; "+
		"without it the drill only reads the archive")
	fs.IntVar(&o.threads, "threads", runtime.NumCPU(), "parallel connections loading a logical snapshot, and parallel apply threads")
	o.bin.register(fs)
}

// validate names the first bad setting.
func (o *drillOptions) validate() (err error) {
	if o.finder, err = o.bin.finder(); err != nil {
		return err
	}
	if o.target, err = restore.ParseTarget(o.to, ""); err != nil {
		return cli.Usage(err)
	}
	if o.threads < 1 {
		return cli.Usage(fmt.Errorf("--threads %d: at least 1", o.threads))
	}
	return nil
}

// run runs the drill and prints its record.
func (o *drillOptions) run(ctx context.Context) error {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	// A drill reads the archive, and with --record records its outcome in it.
	access := cli.Read
	if o.record {
		access = cli.Amend
	}
	st, err := o.storage.Open(ctx, access, logger)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	rec, err := drill.Run(ctx, drill.Options{Store: st, Target: o.target, Scratch: o.scratch, KeepScratch: o.keep, Threads: o.threads,
		Host: host, Record: o.record, Programs: o.finder, Logger: logger})
	if rec != nil && ctx.Err() == nil {
		printDrill(o.stdout, rec)
	}
	return err
}

// printDrill prints a drill record for a person.
func printDrill(w io.Writer, d *catalog.Drill) {
	result := "PASSED"
	if !d.Success {
		result = "FAILED"
	}
	fmt.Fprintf(w, "drill:        %s at %s (target %s)\n", result, cli.FormatTime(d.Started), d.Target)
	if d.Snapshot != "" {
		fmt.Fprintf(w, "snapshot:     %s (%s), %d tables checked\n", d.Snapshot, d.Method, d.TablesChecked)
	}
	if d.Stop != nil {
		fmt.Fprintf(w, "replayed:     %d transactions to %s\n", d.Transactions, d.Stop)
	}
	if d.LastGTID != "" {
		fmt.Fprintf(w, "last GTID:    %s (server state %s)\n", d.LastGTID, d.GTIDState)
	}
	if d.RestoreDuration > 0 {
		fmt.Fprintf(w, "restore took: %s for %d bytes (%d fetched)\n", d.RestoreDuration.Round(time.Millisecond), d.RestoredBytes, d.FetchedBytes)
	}
	if d.Reason != "" {
		fmt.Fprintf(w, "reason:       %s\n", d.Reason)
	}
}
