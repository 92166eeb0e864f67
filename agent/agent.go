// Package agent is the sidecar: it composes the long-running parts (the
// binlog streamer and its uploader, the archive lease, the snapshot
// scheduler, the restore drills) and serves
// /healthz, /readyz, /status and /metrics.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/backoff"
	"github.com/mysql-pitr/mysql-pitr/schedule"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Defaults of the agent.
const (
	DefaultLeaseTTL = 30 * time.Second
	DefaultListen   = ":9097"
)

// Agent runs the archive for one server.
type Agent struct {
	Streamer *binlog.Streamer
	// Compactor, if set, merges closed binlog files' segments in the background.
	Compactor *binlog.Compactor
	// Scheduler, if set, takes snapshots on a schedule and applies retention.
	// Its Timeline is set to the streamer's when left nil.
	Scheduler *schedule.Scheduler
	// SnapshotNewTimelines makes the Scheduler take a snapshot as soon as
	// the streamer begins a timeline (the first of an empty archive, or
	// after a gap): until one exists on it, no restore reaches past the
	// timeline's start, so waiting for the schedule would leave hours
	// unrecoverable.
	SnapshotNewTimelines bool
	// Drills, if set, runs restore drills on a schedule. A failing drill
	// shows in /status and /metrics, never in readiness.
	Drills *schedule.Drills
	Store  storage.Storage
	// Registry holds the metrics served on /metrics.
	Registry *prometheus.Registry
	// Listen is the HTTP address; empty disables the server.
	Listen string
	// Holder names this agent in the archive's lease (host or pod name).
	// It need not be unique: the lease belongs to Session.
	Holder string
	// Session identifies this run of the agent (default: a new random one).
	Session string
	// SpoolLock is the spool directory, locked by this process. Run opens
	// it for the Streamer only once it holds the archive's lease, so an
	// agent that is refused touches nothing in it; and the lease of the
	// spool's previous owner, provably dead since this process holds the
	// lock, is taken over at once.
	SpoolLock *binlog.SpoolLock
	// SpoolMax bounds the spool opened from SpoolLock.
	SpoolMax int64
	// Check, if set, runs before anything else starts (the account's
	// privileges, say); its error stops the agent.
	Check    func(ctx context.Context) error
	LeaseTTL time.Duration
	Logger   *slog.Logger

	ready atomic.Bool
	lease atomic.Pointer[catalog.Lease]
	addr  atomic.Pointer[string]
}

// Addr returns the address the HTTP server listens on, once it does.
func (a *Agent) Addr() string {
	if p := a.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Run takes the archive's lease, then streams and serves until ctx ends.
// It refuses to start when another agent holds the lease.
func (a *Agent) Run(ctx context.Context) error {
	if a.LeaseTTL <= 0 {
		a.LeaseTTL = DefaultLeaseTTL
	}
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := a.listen()
	if err != nil {
		return err
	}
	closeListener := func() {
		if ln != nil {
			ln.Close()
		}
	}
	if a.Check != nil {
		if err := a.Check(ctx); err != nil {
			closeListener()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	lease, err := a.takeLease(ctx)
	if err != nil {
		closeListener()
		return err
	}
	if err := a.openArchive(ctx); err != nil {
		closeListener()
		a.releaseLease(ctx, lease)
		return err
	}
	defer a.releaseLease(ctx, lease)
	return a.runParts(ctx, ln, lease)
}

// listen opens the HTTP server's listener, or none when Listen is empty.
func (a *Agent) listen() (net.Listener, error) {
	if a.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a.Listen, err)
	}
	addr := ln.Addr().String()
	a.addr.Store(&addr)
	return ln, nil
}

// takeLease takes the archive's lease for this run of the agent.
func (a *Agent) takeLease(ctx context.Context) (*catalog.Lease, error) {
	if a.Session == "" {
		a.Session = catalog.NewSession()
	}
	a.Streamer.Session = a.Session
	lease, err := a.acquire(ctx)
	if err != nil {
		return nil, err
	}
	a.lease.Store(lease)
	a.Logger.Info("archive lease acquired", "holder", a.Holder, "session", a.Session)
	return lease, nil
}

// openArchive, run once the lease is held, opens the spool for the
// streamer and makes sure the archive exists.
func (a *Agent) openArchive(ctx context.Context) error {
	if a.SpoolLock != nil {
		spool, err := a.SpoolLock.Open(a.SpoolMax, a.Session)
		if err != nil {
			return err
		}
		a.Streamer.Spool = spool
	}
	return catalog.EnsureArchive(ctx, a.Store, "agent "+a.Holder)
}

// runParts runs the long-running parts, and the HTTP server on ln if any,
// until ctx ends or one of them fails.
func (a *Agent) runParts(ctx context.Context, ln net.Listener, lease *catalog.Lease) error {
	g, gctx := errgroup.WithContext(ctx)
	if ln != nil {
		srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	g.Go(func() error {
		select {
		case <-a.Streamer.Started():
			a.ready.Store(true)
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error { return a.renewLoop(gctx, lease) })
	g.Go(func() error { return a.Streamer.Run(gctx) })
	if a.Compactor != nil {
		g.Go(func() error { return a.Compactor.Run(gctx) })
	}
	if a.Scheduler != nil {
		if a.Scheduler.Timeline == nil {
			a.Scheduler.Timeline = func() catalog.TimelineID { return a.Streamer.Status().Timeline }
		}
		g.Go(func() error { return a.Scheduler.Run(gctx) })
		if a.SnapshotNewTimelines {
			g.Go(func() error { return a.watchTimelines(gctx) })
		}
	}
	if a.Drills != nil {
		g.Go(func() error { return a.Drills.Run(gctx) })
	}
	return g.Wait()
}

// timelinePoll is how often watchTimelines looks at the streamer.
const timelinePoll = time.Second

// watchTimelines pokes the scheduler for each timeline the streamer
// begins, once the timeline's record is in storage (a snapshot taken
// earlier could not be placed on it).
func (a *Agent) watchTimelines(ctx context.Context) error {
	t := time.NewTicker(timelinePoll)
	defer t.Stop()
	seen := 0
	for {
		st := a.Streamer.Status()
		if st.TimelinesStarted > seen && st.Timeline != 0 && st.DurableTimeline == st.Timeline {
			seen = st.TimelinesStarted
			a.Scheduler.Poke("the archive began timeline " + st.Timeline.String() + ", which has no snapshot yet")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) releaseLease(ctx context.Context, lease *catalog.Lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := lease.Release(rctx); err != nil {
		a.Logger.Warn("release lease", "err", err)
	}
}

// acquire takes the lease, retrying while storage is unreachable.
func (a *Agent) acquire(ctx context.Context) (*catalog.Lease, error) {
	opts := catalog.LeaseOptions{Session: a.Session}
	if a.SpoolLock != nil {
		opts.DeadSession = a.SpoolLock.Previous().Session
	}
	b := backoff.New(time.Second, 30*time.Second)
	for {
		l, err := catalog.AcquireLease(ctx, a.Store, a.Holder, a.LeaseTTL, opts)
		if err == nil || errors.Is(err, catalog.ErrLeaseHeld) {
			return l, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		wait := b.Next()
		a.Logger.Warn("cannot take the archive lease; retrying", "err", err, "retry_in", wait)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// renewLoop renews the lease every third of its TTL. Losing it to another
// agent stops this one; failing to reach storage does not (the spool holds
// the archive meanwhile) but is logged.
func (a *Agent) renewLoop(ctx context.Context, l *catalog.Lease) error {
	t := time.NewTicker(a.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, a.LeaseTTL/3)
		err := l.Renew(rctx)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, catalog.ErrLeaseLost):
			return err
		case ctx.Err() != nil:
			return nil
		default:
			a.Logger.Warn("renew lease", "err", err)
		}
	}
}

// Handler serves /healthz, /readyz, /status and /metrics.
//
// Readiness never reflects archive lag or storage health: in a pod, a
// failing sidecar would take the database out of its Service. Those are
// reported in /status and /metrics.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not streaming yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		st := struct {
			Ready     bool                  `json:"ready"`
			Binlog    binlog.Status         `json:"binlog"`
			Lease     *catalog.LeaseRecord  `json:"lease,omitempty"`
			Snapshots *schedule.Status      `json:"snapshots,omitempty"`
			Drills    *schedule.DrillStatus `json:"drills,omitempty"`
		}{Ready: a.ready.Load(), Binlog: a.Streamer.Status()}
		if a.Scheduler != nil {
			ss := a.Scheduler.Status()
			st.Snapshots = &ss
		}
		if a.Drills != nil {
			ds := a.Drills.Status()
			st.Drills = &ds
		}
		if l := a.lease.Load(); l != nil {
			rec := l.Record()
			st.Lease = &rec
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	})
	if a.Registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(a.Registry, promhttp.HandlerOpts{Registry: a.Registry}))
	}
	return mux
}
