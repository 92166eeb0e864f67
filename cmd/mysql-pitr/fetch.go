package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
)

func runFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var sf cli.StorageFlags
	var lf cli.LogFlags
	var out, timeline string
	fs := flag.NewFlagSet("binlog fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf.Register(fs)
	lf.Register(fs)
	fs.StringVar(&out, "out", "", "directory to write the binlog files to")
	fs.StringVar(&timeline, "timeline", "", "timeline to fetch (default: the newest)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if out == "" {
		return cli.Usage(errors.New("--out is required"))
	}
	var id catalog.TimelineID
	if timeline != "" {
		var err error
		if id, err = catalog.ParseTimelineID(timeline); err != nil {
			return cli.Usage(fmt.Errorf("--timeline: %w", err))
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
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{Timeline: id})
	if err != nil {
		return err
	}
	tl := arch.Last()
	if tl == nil {
		if id != 0 {
			return fmt.Errorf("timeline %s is not in the archive", id)
		}
		return errors.New("the archive holds no binlog yet")
	}
	if issues := arch.IssuesOn(tl.ID); len(issues) > 0 {
		return fmt.Errorf("timeline %s has objects that cannot be used (run mysql-pitr verify); the first: %s", tl.ID, issues[0])
	}
	files, err := binlog.Fetch(ctx, st, tl, out)
	if err != nil {
		return err
	}
	for _, f := range files {
		state := "complete"
		if f.Partial {
			state = "continues"
		}
		fmt.Fprintf(stdout, "%s\t%d bytes\t%s\n", f.Path, f.End, state)
	}
	return nil
}
