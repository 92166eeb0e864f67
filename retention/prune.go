package retention

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Options configures Prune.
type Options struct {
	Store  storage.Storage
	Policy Policy
	// Grace protects objects without a manifest or index record younger
	// than it (0: DefaultGrace).
	Grace time.Duration
	// DryRun plans without changing storage.
	DryRun bool
	// Now is the current time (zero: time.Now()).
	Now    time.Time
	Logger *slog.Logger
}

// Prune applies the retention policy: it plans (see MakePlan) and, unless
// DryRun, carries the plan out step by step in order. It stops at the first
// failing step; what it has done by then is consistent, and running it again
// finishes the job. The returned plan is what was (or would be) done.
func Prune(ctx context.Context, o Options) (*Plan, error) {
	if o.Store == nil {
		return nil, fmt.Errorf("prune options: Store is not set")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	snaps, err := catalog.LoadSnapshots(ctx, o.Store)
	if err != nil {
		return nil, fmt.Errorf("load snapshots: %w", err)
	}
	snapObjs, err := o.Store.List(ctx, catalog.SnapshotPrefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", catalog.SnapshotPrefix, err)
	}
	// The binlog listing is taken before the archive is read, so that a
	// segment made durable in between is in the archive (and so kept) even
	// if the listing misses it.
	binObjs, err := o.Store.List(ctx, catalog.BinlogPrefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", catalog.BinlogPrefix, err)
	}
	arch, err := catalog.Load(ctx, o.Store, catalog.LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("load binlog archive: %w", err)
	}
	p, err := MakePlan(Input{Snapshots: snaps, Archive: arch, SnapshotObjects: snapObjs, BinlogObjects: binObjs,
		Policy: o.Policy, Grace: o.Grace, Now: now})
	if err != nil {
		return nil, err
	}
	if p.BinlogKept != "" {
		log.Info("binlog kept whole", "reason", p.BinlogKept)
	}
	if o.DryRun {
		return p, nil
	}
	for i, s := range p.Steps {
		if s.Put != nil {
			if err := catalog.PutJSON(ctx, o.Store, s.Key, s.Put, false); err != nil {
				return p, fmt.Errorf("prune step %d of %d (%s): %w", i+1, len(p.Steps), s.What, err)
			}
			continue
		}
		if err := o.Store.Delete(ctx, s.Key); err != nil {
			return p, fmt.Errorf("prune step %d of %d: delete %s (%s): %w", i+1, len(p.Steps), s.Key, s.What, err)
		}
		log.Debug("deleted", "key", s.Key, "what", s.What)
	}
	if len(p.Steps) > 0 {
		log.Info("pruned", "snapshots_expired", len(p.Expire), "partial_snapshots", len(p.Partial), "segments", p.Segments,
			"orphans", p.Orphans, "superseded", p.Superseded, "timelines", len(p.Timelines), "bytes", p.Bytes, "snapshots_kept", len(p.Keep))
	}
	return p, nil
}
