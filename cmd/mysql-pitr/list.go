package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// listOutput is what `list --json` prints.
type listOutput struct {
	Binlogs []catalog.Coverage `json:"binlogs"`
	Gaps    []catalog.Gap      `json:"gaps"`
}

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var sf storageFlags
	var asJSON bool
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
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
	out := listOutput{Binlogs: []catalog.Coverage{}, Gaps: arch.Gaps()}
	if out.Gaps == nil {
		out.Gaps = []catalog.Gap{}
	}
	for _, t := range arch.Timelines {
		out.Binlogs = append(out.Binlogs, t.Coverage())
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out.Binlogs) == 0 {
		fmt.Fprintln(stdout, "the archive is empty")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIMELINE\tFROM\tTO\tFIRST COMMIT\tLAST COMMIT\tSEGMENTS\tBINLOG BYTES\tSTORED\tSTARTED BECAUSE")
	for _, c := range out.Binlogs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", c.Timeline, c.From, c.To, fmtTime(c.FromTime), fmtTime(c.ToTime),
			c.Segments, c.Bytes, c.Stored, c.Reason)
	}
	tw.Flush()
	for _, c := range out.Binlogs {
		for _, h := range c.Holes {
			fmt.Fprintf(stdout, "DAMAGED: timeline %s is missing archive between %s and %s\n", c.Timeline, h.After, h.Before)
		}
		if c.Orphans > 0 {
			fmt.Fprintf(stdout, "note: timeline %s has %d data objects without an index record (interrupted uploads)\n", c.Timeline, c.Orphans)
		}
	}
	for _, g := range out.Gaps {
		from := "(unknown)"
		if g.From != nil {
			from = g.From.String()
		}
		fmt.Fprintf(stdout, "GAP between timeline %s (ends %s) and %s (starts %s): %s: %s\n", g.After, from, g.Before, g.To, g.Reason, g.Detail)
	}
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}
