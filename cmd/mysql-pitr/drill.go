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
	"github.com/mysql-pitr/mysql-pitr/restore"
)

// runDrill restores the archive into scratch space, checks it and records
// the outcome; a failed drill exits 1 with the reason.
func runDrill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var sf cli.StorageFlags
	var lf cli.LogFlags
	var to, scratch string
	var keep, record bool
	var threads int
	fs := flag.NewFlagSet("drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf.Register(fs)
	lf.Register(fs)
	fs.StringVar(&to, "to", "latest", "restore to this moment: latest, or an RFC 3339 time with a zone")
	fs.StringVar(&scratch, "scratch", os.TempDir(), "directory under which the drill restores a datadir (needs room for it; keep the path short)")
	fs.BoolVar(&keep, "keep-scratch", false, "leave the restored datadir in the scratch directory")
	fs.BoolVar(&record, "record", false, "record the drill's result in the archive (under drills/), where list and the agent's metrics show it; "+
		"without it the drill only reads the archive")
	fs.IntVar(&threads, "threads", runtime.NumCPU(), "parallel connections loading a logical snapshot, and parallel apply threads")
	var bin binDirFlag
	bin.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	finder, err := bin.finder()
	if err != nil {
		return err
	}
	target, err := restore.ParseTarget(to, "")
	if err != nil {
		return cli.Usage(err)
	}
	if threads < 1 {
		return cli.Usage(fmt.Errorf("--threads %d: at least 1", threads))
	}
	logger, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	// A drill reads the archive, and with --record records its outcome in it.
	access := cli.Read
	if record {
		access = cli.Amend
	}
	st, err := sf.Open(ctx, access, logger)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	rec, err := drill.Run(ctx, drill.Options{Store: st, Target: target, Scratch: scratch, KeepScratch: keep, Threads: threads,
		Host: host, Record: record, Programs: finder, Logger: logger})
	if rec != nil && ctx.Err() == nil {
		printDrill(stdout, rec)
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
