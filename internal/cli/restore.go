package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ToFlag is restore's --to: the moment to restore to.
type ToFlag struct{ to string }

// Register adds --to to fs.
func (t *ToFlag) Register(fs *flag.FlagSet) {
	fs.StringVar(&t.to, "to", "", "restore to this moment: an RFC 3339 time with a zone (2026-11-27T10:41:07Z), or latest")
}

// Target parses --to, and the binlog position --to-position gives (empty
// where the command takes none).
func (t *ToFlag) Target(position string) (restore.Target, error) {
	target, err := restore.ParseTarget(t.to, position)
	if err != nil {
		return target, Usage(err)
	}
	return target, nil
}

// PlanRestore plans the restore of the archive in st to target.
func PlanRestore(ctx context.Context, st storage.Storage, target restore.Target) (*restore.Plan, error) {
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{})
	if err != nil {
		return nil, err
	}
	snaps, err := catalog.LoadSnapshots(ctx, st)
	if err != nil {
		return nil, err
	}
	p, err := restore.Make(arch, snaps.Complete, target, time.Now())
	if err != nil {
		return nil, err
	}
	p.NoteSkipped(snaps)
	return p, nil
}

// PrintPlan shows a restore plan to a person.
func PrintPlan(w io.Writer, p *restore.Plan) {
	fmt.Fprintf(w, "target:    %s\n", p.Target)
	fmt.Fprintf(w, "snapshot:  %s (%s, consistent at %s, binlog %s)\n", p.Snapshot.ID, p.Snapshot.Method,
		FormatTime(p.Snapshot.ConsistentAt), p.Snapshot.Binlog)
	fmt.Fprintf(w, "replay:    timeline %s from %s, %d segments\n", p.Timeline, p.From, len(p.Segments))
	last := p
	for ; last.Then != nil; last = last.Then {
		n := last.Then
		fmt.Fprintf(w, "then:      timeline %s (after a failover), from its first transaction after %s, %d segments\n",
			n.Timeline, strings.Join(n.Held, ","), len(n.Segments))
	}
	fmt.Fprintf(w, "fetch:     %d bytes\n", p.FetchBytes)
	fmt.Fprintf(w, "archive:   ends at %s, last commit %s\n", last.ArchiveEnd, FormatTime(last.ArchiveEndTime))
	if !last.CompleteAt.IsZero() {
		fmt.Fprintf(w, "complete:  up to %s (the server committed nothing after the last commit)\n", FormatTime(last.CompleteAt))
	}
	for _, is := range p.Skipped {
		fmt.Fprintf(w, "skipped:   %s: %s: %s\n", is.Key, is.Kind, is.Detail)
	}
}

// FormatTime shows a moment as every command prints it: UTC to the
// microsecond, "-" for none.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}
