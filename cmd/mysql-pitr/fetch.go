package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
)

// fetchOptions are the settings of `mysql-pitr binlog fetch`.
type fetchOptions struct {
	storage  cli.StorageFlags
	log      cli.LogFlags
	out      string
	timeline string
	id       catalog.TimelineID // --timeline, parsed by validate
	output
}

func (o *fetchOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.log.Register(fs)
	fs.StringVar(&o.out, "out", "", "directory to write the binlog files to")
	fs.StringVar(&o.timeline, "timeline", "", "timeline to fetch (default: the newest)")
}

// validate names the first bad setting.
func (o *fetchOptions) validate() (err error) {
	if o.out == "" {
		return cli.Usage(errors.New("--out is required"))
	}
	if o.timeline != "" {
		if o.id, err = catalog.ParseTimelineID(o.timeline); err != nil {
			return cli.Usage(fmt.Errorf("--timeline: %w", err))
		}
	}
	return nil
}

// run writes the archived binlog of the timeline back out as files.
func (o *fetchOptions) run(ctx context.Context) error {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	st, err := o.storage.Open(ctx, cli.Read, logger)
	if err != nil {
		return err
	}
	arch, err := catalog.Load(ctx, st, catalog.LoadOptions{Timeline: o.id})
	if err != nil {
		return err
	}
	tl := arch.Last()
	if tl == nil {
		if o.id != 0 {
			return fmt.Errorf("timeline %s is not in the archive", o.id)
		}
		return errors.New("the archive holds no binlog yet")
	}
	if issues := arch.IssuesOn(tl.ID); len(issues) > 0 {
		return fmt.Errorf("timeline %s has objects that cannot be used (run mysql-pitr verify); the first: %s", tl.ID, issues[0])
	}
	files, err := binlog.Fetch(ctx, st, tl, o.out)
	if err != nil {
		return err
	}
	for _, f := range files {
		state := "complete"
		if f.Partial {
			state = "continues"
		}
		fmt.Fprintf(o.stdout, "%s\t%d bytes\t%s\n", f.Path, f.End, state)
	}
	return nil
}
