package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/mysql-pitr/mysql-pitr/verify"
)

// errDamaged makes verify exit 1 after printing its report.
var errDamaged = errors.New("the archive is damaged (see the report above)")

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var sf storageFlags
	var asJSON bool
	var threads int
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.IntVar(&threads, "threads", 4, "objects read at once")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if threads < 1 {
		return usageError{fmt.Errorf("--threads %d: at least 1", threads)}
	}
	st, err := sf.open(ctx)
	if err != nil {
		return err
	}
	r, err := verify.Run(ctx, st, verify.Options{Concurrency: threads})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printReport(stdout, r)
	}
	if r.Damaged {
		return errDamaged
	}
	return nil
}

func printReport(w io.Writer, r *verify.Report) {
	for _, s := range r.Snapshots {
		verdict := "consistent, restorable"
		switch {
		case !s.Consistent:
			verdict = "DAMAGED"
		case !s.Restorable:
			verdict = "consistent, NOT restorable"
		}
		fmt.Fprintf(w, "snapshot %s (%s): %s", s.ID, s.Method, verdict)
		if s.Window != nil {
			fmt.Fprintf(w, "; recoverable from %s to %s", fmtTime(s.Window.From), fmtTime(s.Window.To))
		}
		fmt.Fprintln(w)
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	for _, id := range r.Partial {
		fmt.Fprintf(w, "snapshot %s: no manifest (unfinished or abandoned; not restorable)\n", id)
	}
	for _, tl := range r.Timelines {
		state := "whole"
		if len(tl.Bad) > 0 || len(tl.Holes) > 0 {
			state = "DAMAGED"
		}
		fmt.Fprintf(w, "timeline %s: %d segments, %s\n", tl.ID, tl.Segments, state)
		for _, b := range tl.Bad {
			fmt.Fprintf(w, "  - bad segment %s\n", b)
		}
		for _, h := range tl.Holes {
			fmt.Fprintf(w, "  - missing binlog between %s and %s\n", h.After, h.Before)
		}
		if len(tl.Orphans) > 0 {
			fmt.Fprintf(w, "  - %d data objects without an index record (interrupted uploads; prune collects them)\n", len(tl.Orphans))
		}
	}
	for _, g := range r.Gaps {
		fmt.Fprintf(w, "gap between timeline %s and %s: %s\n", g.After, g.Before, g.Reason)
	}
	fmt.Fprintf(w, "read %d bytes in %s\n", r.Bytes, r.Duration.Round(1e6))
}
