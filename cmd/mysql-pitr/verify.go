package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/verify"
)

// errDamaged makes verify exit 1 after printing its report.
var errDamaged = errors.New("the archive is damaged (see the report above)")

// verifyOptions are the settings of `mysql-pitr verify`.
type verifyOptions struct {
	storage cli.StorageFlags
	log     cli.LogFlags
	asJSON  bool
	threads int
	output
}

func (o *verifyOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.log.Register(fs)
	fs.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	fs.IntVar(&o.threads, "threads", 4, "objects read at once")
}

// validate names the first bad setting.
func (o *verifyOptions) validate() error {
	if o.threads < 1 {
		return cli.Usage(fmt.Errorf("--threads %d: at least 1", o.threads))
	}
	return nil
}

// run reads the whole archive and reports; a damaged archive is
// errDamaged, after the report.
func (o *verifyOptions) run(ctx context.Context) error {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	st, err := o.storage.Open(ctx, cli.Read, logger)
	if err != nil {
		return err
	}
	r, err := verify.Run(ctx, st, verify.Options{Concurrency: o.threads})
	if err != nil {
		return err
	}
	if o.asJSON {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printReport(o.stdout, r)
	}
	if r.Damaged {
		return errDamaged
	}
	return nil
}

// printReport prints verify's report for a person.
func printReport(w io.Writer, r *verify.Report) {
	printSnapshotReports(w, r)
	for _, tl := range r.Timelines {
		printTimelineReport(w, tl)
	}
	if len(r.Superseded) > 0 {
		fmt.Fprintf(w, "%d objects stored by a writer after another had taken the archive over: left out (not damage; prune collects them)\n",
			len(r.Superseded))
	}
	// Bad objects are named under their snapshot or timeline above.
	for _, o := range r.Objects {
		if o.Kind == catalog.IssueForeign {
			fmt.Fprintf(w, "foreign object %s: %s\n", o.Key, o.Detail)
		}
	}
	for _, g := range r.Gaps {
		fmt.Fprintf(w, "gap between timeline %d and %d: %s", uint32(g.After), uint32(g.Before), g.Reason)
		if len(g.MissingGTIDs) > 0 {
			fmt.Fprintf(w, "; GTIDs %s missing", strings.Join(g.MissingGTIDs, ", "))
		}
		fmt.Fprintln(w)
	}
	verdict := "the archive is whole"
	if r.Damaged {
		verdict = "the archive is DAMAGED"
	}
	fmt.Fprintf(w, "%s; read %d bytes in %s\n", verdict, r.Bytes, r.Duration.Round(1e6))
}

// printSnapshotReports prints each snapshot's verdict and problems.
func printSnapshotReports(w io.Writer, r *verify.Report) {
	for _, s := range r.Snapshots {
		verdict := "consistent, restorable"
		switch {
		case s.Foreign:
			verdict = "FOREIGN (belongs to another archive; not restorable)"
		case !s.Consistent:
			verdict = "DAMAGED (not restorable)"
		case !s.Restorable:
			verdict = "consistent, NOT restorable"
		}
		method := s.Method
		if method == "" {
			method = "unknown method"
		}
		fmt.Fprintf(w, "snapshot %s (%s): %s", s.ID, method, verdict)
		if s.Window != nil {
			fmt.Fprintf(w, "; recoverable from %s to %s (timeline %d, up to %s)", cli.FormatTime(s.Window.From), cli.FormatTime(s.Window.To),
				uint32(s.Window.Timeline), s.Window.EndsAt)
		}
		fmt.Fprintln(w)
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	for _, id := range r.Partial {
		fmt.Fprintf(w, "snapshot %s: partial, no manifest (unfinished or abandoned; not restorable)\n", id)
	}
}

// printTimelineReport prints a timeline's state and what is wrong with it.
func printTimelineReport(w io.Writer, tl verify.TimelineReport) {
	state := "whole"
	if len(tl.Bad) > 0 || len(tl.Breaks) > 0 {
		state = "DAMAGED"
	}
	judged := "continuity judged by GTID and position"
	if !tl.GTIDs {
		judged = "no GTIDs: continuity judged by position only"
	}
	fmt.Fprintf(w, "timeline %d: %d usable segments, %s (%s)\n", uint32(tl.ID), tl.Segments, state, judged)
	for _, b := range tl.Bad {
		fmt.Fprintf(w, "  - bad object %s\n", b)
	}
	for _, b := range tl.Breaks {
		fmt.Fprintf(w, "  - %s\n", b)
	}
	if tl.UnknownGTIDs > 0 {
		fmt.Fprintf(w, "  - note: %d GTID events in a form this version cannot read (archived as they are): around them, continuity judged by position only\n",
			tl.UnknownGTIDs)
	}
	for _, j := range tl.GTIDJumps {
		fmt.Fprintf(w, "  - note: %s holds %d GTIDs from %s to %s: the server skipped numbers inside it (not damage)\n",
			j.Key, j.Range.Count, j.Range.First, j.Range.Last)
	}
	if len(tl.Orphans) > 0 {
		fmt.Fprintf(w, "  - %d data objects without an index record (interrupted uploads; prune collects them)\n", len(tl.Orphans))
	}
	if !tl.CompleteAt.IsZero() {
		fmt.Fprintf(w, "  - recorded complete up to %s by its writer\n", cli.FormatTime(tl.CompleteAt))
	}
}
