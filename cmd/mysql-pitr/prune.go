package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/retention"
)

// retentionFlags are the retention settings shared by `agent` and `prune`.
type retentionFlags struct {
	keepSnapshots optionalInt
	keepWithin    optionalDuration
	grace         time.Duration
}

func (r *retentionFlags) register(fs *flag.FlagSet) {
	fs.Var(&r.keepSnapshots, "keep-snapshots", "keep the newest N complete snapshots (at least 1); with --keep-within, a snapshot either keeps is kept")
	fs.Var(&r.keepWithin, "keep-within", "keep the snapshots taken within this long, e.g. 168h; with --keep-snapshots, a snapshot either keeps is kept")
	fs.DurationVar(&r.grace, "orphan-grace", retention.DefaultGrace,
		"collect partial snapshots and segment data without an index record only once they are this old")
}

// policy validates the flags and returns the policy (disabled when neither is given).
func (r *retentionFlags) policy() (retention.Policy, error) {
	var p retention.Policy
	if r.keepSnapshots.set {
		if r.keepSnapshots.v < 1 {
			return p, cli.Usage(fmt.Errorf("--keep-snapshots %d: keep at least 1 (the newest complete snapshot is never deleted)", r.keepSnapshots.v))
		}
		p.KeepSnapshots = r.keepSnapshots.v
	}
	if r.keepWithin.set {
		if r.keepWithin.v <= 0 {
			return p, cli.Usage(fmt.Errorf("--keep-within %s: want a positive duration such as 168h", r.keepWithin.v))
		}
		p.KeepWithin = r.keepWithin.v
	}
	if r.grace <= 0 {
		return p, cli.Usage(fmt.Errorf("--orphan-grace %s: want a positive duration", r.grace))
	}
	return p, nil
}

// optionalInt is an int flag that knows whether it was given.
type optionalInt struct {
	v   int
	set bool
}

func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.v)
}

func (o *optionalInt) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	o.v, o.set = n, true
	return nil
}

// optionalDuration is a duration flag that knows whether it was given.
type optionalDuration struct {
	v   time.Duration
	set bool
}

func (o *optionalDuration) String() string {
	if o == nil || !o.set {
		return ""
	}
	return o.v.String()
}

func (o *optionalDuration) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 168h or 30m", s)
	}
	o.v, o.set = d, true
	return nil
}

// pruneOptions are the settings of `mysql-pitr prune`.
type pruneOptions struct {
	storage   cli.StorageFlags
	log       cli.LogFlags
	retention retentionFlags
	dryRun    bool
	asJSON    bool
	output

	policy retention.Policy // set by validate
}

func (o *pruneOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.retention.register(fs)
	o.log.Register(fs)
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be deleted, delete nothing")
	fs.BoolVar(&o.asJSON, "json", false, "print the plan as JSON")
}

// validate names the first bad setting.
func (o *pruneOptions) validate() (err error) {
	if o.policy, err = o.retention.policy(); err != nil {
		return err
	}
	if !o.policy.Enabled() {
		return cli.Usage(errors.New("say what to keep: --keep-snapshots N and/or --keep-within DURATION"))
	}
	return nil
}

// run deletes expired snapshots and the binlog no kept snapshot needs, and
// reports what it deleted (or would delete).
func (o *pruneOptions) run(ctx context.Context) error {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	st, err := o.storage.Open(ctx, cli.Amend, logger)
	if err != nil {
		return err
	}
	p, err := retention.Prune(ctx, retention.Options{Store: st, Policy: o.policy, Grace: o.retention.grace, DryRun: o.dryRun,
		Logger: logger.With("component", "retention")})
	if p != nil && o.asJSON {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(struct {
			DryRun bool `json:"dry_run"`
			*retention.Plan
		}{o.dryRun, p}); jerr != nil && err == nil {
			err = jerr
		}
	} else if p != nil {
		printPrune(o.stdout, p, o.dryRun)
	}
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

// printPrune prints a prune's plan for a person.
func printPrune(w io.Writer, p *retention.Plan, dryRun bool) {
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	for _, s := range p.Steps {
		if s.Put != nil {
			if dryRun {
				fmt.Fprintf(w, "would write %s (timeline now starts at %s)\n", s.Key, s.Put.Start)
			}
			continue
		}
		fmt.Fprintf(w, "%s %s\t%s\n", verb, s.Key, s.What)
	}
	if p.BinlogKept != "" {
		fmt.Fprintf(w, "binlog kept: %s\n", p.BinlogKept)
	}
	fmt.Fprintf(w, "%d snapshots kept, %d expired, %d partial collected; %d segments, %d orphan objects, %d timelines; %d bytes%s\n",
		len(p.Keep), len(p.Expire), len(p.Partial), p.Segments, p.Orphans, len(p.Timelines), p.Bytes, map[bool]string{true: " (dry run: nothing deleted)"}[dryRun])
}
