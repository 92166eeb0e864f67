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
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// listOutput is what `list --json` prints.
type listOutput struct {
	Snapshots []snapshotSummary  `json:"snapshots"`
	Binlogs   []catalog.Coverage `json:"binlogs"`
	Gaps      []catalog.Gap      `json:"gaps"`
	Windows   []catalog.Window   `json:"windows"`
	// Partial are snapshots without a manifest (unfinished or abandoned).
	Partial []catalog.SnapshotID `json:"partial_snapshots,omitempty"`
	// LastDrill is the latest restore drill; LastSuccessfulDrill the latest
	// that passed (the same one when the latest passed).
	LastDrill           *catalog.Drill `json:"last_drill,omitempty"`
	LastSuccessfulDrill *catalog.Drill `json:"last_successful_drill,omitempty"`
	// InvalidSnapshots are manifests that cannot be used, and why; Issues
	// the binlog archive's objects that cannot be used.
	InvalidSnapshots []catalog.Issue `json:"invalid_snapshots,omitempty"`
	Issues           []catalog.Issue `json:"issues,omitempty"`
}

// snapshotSummary is a snapshot as list shows it.
type snapshotSummary struct {
	ID            catalog.SnapshotID `json:"id"`
	Method        string             `json:"method"`
	ConsistentAt  time.Time          `json:"consistent_at,omitzero"`
	Finished      time.Time          `json:"finished"`
	Timeline      catalog.TimelineID `json:"timeline,omitempty"`
	Binlog        catalog.Position   `json:"binlog"`
	GTIDSet       string             `json:"gtid_set,omitempty"`
	Bytes         int64              `json:"bytes"`
	StoredBytes   int64              `json:"stored_bytes"`
	WritesBlocked string             `json:"writes_blocked"`
	Tables        int                `json:"tables"`
}

// listOptions are the settings of `mysql-pitr list`.
type listOptions struct {
	storage cli.StorageFlags
	log     cli.LogFlags
	asJSON  bool
	output
}

func (o *listOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.log.Register(fs)
	fs.BoolVar(&o.asJSON, "json", false, "print JSON")
}

func (o *listOptions) validate() error { return nil }

// run shows what the archive holds and the moments it can restore to.
func (o *listOptions) run(ctx context.Context) error {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	st, err := o.storage.Open(ctx, cli.Read, logger)
	if err != nil {
		return err
	}
	out, superseded, err := loadList(ctx, st)
	if err != nil {
		return err
	}
	if o.asJSON {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out.Binlogs) == 0 && len(out.Snapshots) == 0 && len(out.InvalidSnapshots) == 0 && len(out.Issues) == 0 {
		fmt.Fprintln(o.stdout, "the archive holds no binlog and no snapshot yet")
		if out.LastDrill != nil {
			printLastDrill(o.stdout, out.LastDrill, out.LastSuccessfulDrill)
		}
		return nil
	}
	printTables(o.stdout, out)
	printNotes(o.stdout, out, superseded)
	return nil
}

// loadList reads what list shows, and how many objects of a superseded
// writer the archive leaves out.
func loadList(ctx context.Context, st storage.Storage) (out listOutput, superseded int, err error) {
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return out, 0, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return out, 0, err
	}
	out = listOutput{Snapshots: []snapshotSummary{}, Binlogs: []catalog.Coverage{}, Gaps: arch.Gaps(),
		Windows: catalog.Windows(arch, snaps.Complete), Partial: snaps.Partial, InvalidSnapshots: snaps.Invalid, Issues: arch.Issues}
	if out.Gaps == nil {
		out.Gaps = []catalog.Gap{}
	}
	if out.Windows == nil {
		out.Windows = []catalog.Window{}
	}
	for _, m := range snaps.Complete {
		out.Snapshots = append(out.Snapshots, snapshotSummary{ID: m.ID, Method: m.Method, ConsistentAt: m.ConsistentAt,
			Finished: m.Finished, Timeline: m.Timeline, Binlog: m.Binlog, GTIDSet: m.GTIDSet, Bytes: m.Bytes,
			StoredBytes: m.StoredBytes, WritesBlocked: m.WritesBlocked.String(), Tables: len(m.Tables)})
	}
	for _, t := range arch.Timelines {
		out.Binlogs = append(out.Binlogs, t.Coverage())
	}
	out.LastDrill, out.LastSuccessfulDrill, err = catalog.LastDrills(ctx, st)
	return out, len(arch.Superseded), err
}

// printTables prints the recovery windows, the last drill, the snapshots
// and the binlog timelines.
func printTables(w io.Writer, out listOutput) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECOVERABLE FROM\tTO\tTIMELINE\tSNAPSHOTS")
	for _, win := range out.Windows {
		tl := win.Timeline.String()
		for _, t := range win.Through {
			tl += "→" + t.String() // on through failovers
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", cli.FormatTime(win.From), cli.FormatTime(win.To), tl, len(win.Snapshots))
	}
	if len(out.Windows) == 0 {
		fmt.Fprintln(tw, "(none: no snapshot yet)\t\t\t")
	}
	tw.Flush()
	printLastDrill(w, out.LastDrill, out.LastSuccessfulDrill)
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tMETHOD\tCONSISTENT AT\tBINLOG\tSTORED\tWRITES BLOCKED")
	for _, sn := range out.Snapshots {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", sn.ID, sn.Method, cli.FormatTime(sn.ConsistentAt), sn.Binlog, sn.StoredBytes, sn.WritesBlocked)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIMELINE\tFROM\tTO\tFIRST COMMIT\tLAST COMMIT\tSEGMENTS\tBINLOG BYTES\tSTORED\tSTARTED BECAUSE")
	for _, c := range out.Binlogs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", c.Timeline, c.From, c.To, cli.FormatTime(c.FromTime), cli.FormatTime(c.ToTime),
			c.Segments, c.Bytes, c.Stored, c.Reason)
	}
	tw.Flush()
}

// printNotes prints what is damaged, left out or missing.
func printNotes(w io.Writer, out listOutput, superseded int) {
	for _, c := range out.Binlogs {
		for _, h := range c.Holes {
			fmt.Fprintf(w, "DAMAGED: timeline %s is missing archive between %s and %s\n", c.Timeline, h.After, h.Before)
		}
		if c.Orphans > 0 {
			fmt.Fprintf(w, "note: timeline %s has %d data objects without an index record (interrupted uploads)\n", c.Timeline, c.Orphans)
		}
	}
	for _, is := range out.InvalidSnapshots {
		fmt.Fprintf(w, "DAMAGED: %s: %s: %s; restores skip this snapshot\n", is.Key, is.Kind, is.Detail)
	}
	for _, is := range out.Issues {
		fmt.Fprintf(w, "DAMAGED: %s (run mysql-pitr verify)\n", is)
	}
	if superseded > 0 {
		fmt.Fprintf(w, "note: %d objects stored by a writer after another had taken the archive over are left out (prune collects them)\n", superseded)
	}
	for _, id := range out.Partial {
		fmt.Fprintf(w, "note: snapshot %s has no manifest (unfinished or abandoned); restores ignore it\n", id)
	}
	for _, g := range out.Gaps {
		from := "(unknown)"
		if g.From != nil {
			from = g.From.String()
		}
		fmt.Fprintf(w, "GAP between timeline %s (ends %s) and %s (starts %s): %s: %s\n", g.After, from, g.Before, g.To, g.Reason, g.Detail)
	}
}

// printLastDrill says when the archive was last restored by a drill, and how it went.
func printLastDrill(w io.Writer, last, lastOK *catalog.Drill) {
	switch {
	case last == nil:
		fmt.Fprintln(w, "last drill: none recorded (run mysql-pitr drill)")
	case last.Success:
		fmt.Fprintf(w, "last drill: PASSED %s, snapshot %s + %d transactions restored in %s\n", cli.FormatTime(last.Finished), last.Snapshot,
			last.Transactions, last.RestoreDuration.Round(time.Millisecond))
	default:
		fmt.Fprintf(w, "last drill: FAILED %s: %s\n", cli.FormatTime(last.Finished), last.Reason)
		if lastOK != nil {
			fmt.Fprintf(w, "last passing drill: %s\n", cli.FormatTime(lastOK.Finished))
		} else {
			fmt.Fprintln(w, "last passing drill: none")
		}
	}
}
