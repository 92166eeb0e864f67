package restore

import (
	"context"
	"path/filepath"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// fetchStop is the fetch-and-verify step: it writes the binlog the plan
// replays into the work directory, verified against the archive, and reads
// it to find the stop. It runs before the snapshot is touched, so that a
// damaged archive, or one this restore holds no key for, changes nothing.
func (r *run) fetchStop(ctx context.Context) (*Stop, error) {
	files, err := fetch(ctx, r.opts.Store, r.plan, filepath.Join(r.work, "binlog"), r.progress)
	if err != nil {
		return nil, err
	}
	return findStop(r.plan, files)
}

// fetch writes the binlog the plan needs as local files, verified.
func fetch(ctx context.Context, st storage.Storage, p *Plan, dir string, progress reporter) ([]binlog.FetchResult, error) {
	segs := append(append([]*catalog.Segment{}, p.Head...), p.Segments...)
	if len(segs) == 0 {
		return nil, nil
	}
	var total int64
	for _, s := range segs {
		total += int64(s.End - s.Start)
	}
	tl := &catalog.TimelineState{Timeline: catalog.Timeline{ID: p.Timeline, Start: catalog.Position{File: segs[0].File, Pos: segs[0].Start}}, Segments: segs}
	return binlog.FetchProgress(ctx, st, tl, dir, func(done int64) { progress.report(PhaseDownload, done, total) })
}
