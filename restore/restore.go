// Package restore plans and applies point-in-time restores: the newest
// snapshot at or before the target, then the archived binlog from the
// snapshot's position up to the target, on one timeline, with no gap.
//
// Start reading at Apply, in this file: it runs a restore's steps in
// order, each in its own file. Planning (Make, plan.go) is pure: it reads
// only catalog records and refuses, with the nearest valid alternative,
// whatever it cannot restore exactly. Apply then checks the destination
// (datadir.go, target.go), fetches and verifies the binlog and finds the
// stop (fetch.go, stop.go), materialises the snapshot (materialise.go),
// replays the binlog to the stop in one of two modes behind the replayer
// interface (replay.go), and finishes: the GTID state set and the restore
// recorded (finish.go).
package restore

import (
	"context"
	"time"
)

// Apply carries out a plan into a datadir: restore the snapshot, replay the
// binlog to the stop on a temporary server listening only on a private
// socket, shut it down cleanly, and record the restore in the datadir.
// With ReplayServer the temporary server replicates the binlog from a
// binlog.Server on a loopback port that lives as long as the replay.
// With Options.Target it restores into that running server instead.
func Apply(ctx context.Context, p *Plan, opts Options) (*Result, error) {
	begin := time.Now()
	r, err := newRun(p, opts)
	if err != nil {
		return nil, err
	}
	defer r.close()
	var res *Result
	if opts.Target != nil {
		res, err = r.intoServer(ctx)
	} else {
		res, err = r.intoDatadir(ctx)
	}
	if err != nil {
		return nil, err
	}
	res.Duration = time.Since(begin)
	return res, nil
}

// intoDatadir restores into a new datadir, built out of place and moved in
// only when the restore has succeeded: until then, and after any failure,
// the datadir holds exactly what it held before.
func (r *run) intoDatadir(ctx context.Context) (*Result, error) {
	// Check: everything that could refuse the restore at its end, before
	// any work.
	d, err := r.checkDatadir(ctx)
	if err != nil {
		return nil, err
	}
	// Fetch and verify, before the datadir is created or its contents
	// moved aside.
	stops, err := r.fetchStops(ctx)
	if err != nil {
		return nil, err
	}
	stop := combined(stops)
	// Materialise the snapshot on a temporary server.
	stage, err := newStaging(d.path)
	if err != nil {
		return nil, err
	}
	defer stage.discard(r.log)
	r.log.Info("replay range", "from", r.plan.From.String(), "stop", stop.Position.String(), "transactions", stop.Transactions)
	srv, err := r.materialise(ctx, d.server, stage)
	if err != nil {
		return nil, err
	}
	defer srv.close(ctx)
	if err := r.afterSnapshot(ctx, srv.Config()); err != nil {
		return nil, err
	}
	// Replay.
	begin := time.Now()
	for _, leg := range stops {
		if err := r.replayerOn(srv).replay(ctx, leg); err != nil {
			return nil, err
		}
	}
	res := &Result{ReplayDuration: time.Since(begin)}
	if err := r.afterReplay(ctx, srv.Config(), stop); err != nil {
		return nil, err
	}
	// Finish and mark: the GTID state, a clean shutdown, the marker, and
	// the new datadir moved into place.
	gtid, err := r.setGTIDState(ctx, srv.DB(), stop)
	if err != nil {
		return nil, err
	}
	if err := srv.shutDown(ctx); err != nil {
		return nil, err
	}
	res.Marker = r.marker(stop, gtid)
	if err := writeMarker(stage.datadir(), res.Marker); err != nil {
		return nil, err
	}
	if res.MovedAside, err = r.moveIn(d, stage); err != nil {
		return nil, err
	}
	return res, nil
}

// intoServer restores a logical snapshot into a running, empty server and
// replays the binlog there. An error after the server was changed says
// what it holds and what to do before running the restore again.
func (r *run) intoServer(ctx context.Context) (*Result, error) {
	// Check the target, before anything is fetched or changed.
	t, err := r.openTarget(ctx)
	if err != nil {
		return nil, err
	}
	defer t.close()
	// Fetch and verify.
	stops, err := r.fetchStops(ctx)
	if err != nil {
		return nil, err
	}
	stop := combined(stops)
	// Materialise the snapshot: load it.
	if err := t.load(ctx); err != nil {
		return nil, err
	}
	mode, err := t.replayMode(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.afterSnapshot(ctx, r.opts.Target); err != nil {
		return nil, t.changed(ctx, err, loadedNothingReplayed, false)
	}
	// Replay.
	begin := time.Now()
	for _, leg := range stops {
		if err := t.replay(ctx, mode, leg); err != nil {
			return nil, err
		}
	}
	res := &Result{ReplayDuration: time.Since(begin)}
	if err := r.afterReplay(ctx, r.opts.Target, stop); err != nil {
		return nil, t.changed(ctx, err, replayedNoGTIDState, true)
	}
	// Finish and mark.
	gtid, err := r.setGTIDState(ctx, t.db, stop)
	if err != nil {
		return nil, t.changed(ctx, err, replayedNoGTIDState, true)
	}
	res.Marker = r.marker(stop, gtid)
	return res, nil
}
