package restore

import (
	"context"
	"path/filepath"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// fetchStop is the fetch-and-verify step: it writes the binlog the plan
// replays into the work directory, verified against the archive, and reads
// it to find the stop. It runs before the snapshot is touched, so that a
// damaged archive, or one this restore holds no key for, changes nothing.
func (r *run) fetchStop(ctx context.Context) (*Stop, error) {
	p := r.plan
	var files []binlog.FetchResult
	if segs := append(append([]*catalog.Segment{}, p.Head...), p.Segments...); len(segs) > 0 {
		var total int64
		for _, s := range segs {
			total += int64(s.End - s.Start)
		}
		tl := &catalog.TimelineState{Timeline: catalog.Timeline{ID: p.Timeline, Start: catalog.Position{File: segs[0].File, Pos: segs[0].Start}}, Segments: segs}
		var err error
		files, err = binlog.FetchProgress(ctx, r.opts.Store, tl, filepath.Join(r.work, "binlog"), func(done int64) {
			r.progress.report(PhaseDownload, done, total)
		})
		if err != nil {
			return nil, err
		}
	}
	return findStop(p, files)
}
