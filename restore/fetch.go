package restore

import (
	"context"
	"path/filepath"
	"strconv"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// fetchStops is the fetch-and-verify step: it writes the binlog the plan
// replays into the work directory, verified against the archive, and reads
// it to find each replay's stop: one per timeline replayed (see Plan.Then).
// It runs before the snapshot is touched, so that a damaged archive, or one
// this restore holds no key for, changes nothing.
func (r *run) fetchStops(ctx context.Context) ([]*Stop, error) {
	var stops []*Stop
	for leg, p := 0, r.plan; p != nil; leg, p = leg+1, p.Then {
		// Each timeline's files in a directory of their own: two servers'
		// binlogs may have the same names.
		dir := filepath.Join(r.work, "binlog")
		if leg > 0 {
			dir = filepath.Join(r.work, "binlog-"+strconv.Itoa(leg))
		}
		stop, err := r.fetchStop(ctx, p, dir)
		if err != nil {
			return nil, err
		}
		stops = append(stops, stop)
	}
	return stops, nil
}

// fetchStop fetches the binlog one replay reads into dir and finds its stop.
func (r *run) fetchStop(ctx context.Context, p *Plan, dir string) (*Stop, error) {
	var files []binlog.FetchResult
	if segs := append(append([]*catalog.Segment{}, p.Head...), p.Segments...); len(segs) > 0 {
		var total int64
		for _, s := range segs {
			total += int64(s.End - s.Start)
		}
		tl := &catalog.TimelineState{Timeline: catalog.Timeline{ID: p.Timeline, Start: catalog.Position{File: segs[0].File, Pos: segs[0].Start}}, Segments: segs}
		var err error
		files, err = binlog.FetchProgress(ctx, r.opts.Store, tl, dir, func(done int64) {
			r.progress.report(PhaseDownload, done, total)
		})
		if err != nil {
			return nil, err
		}
	}
	return findStop(p, files)
}
