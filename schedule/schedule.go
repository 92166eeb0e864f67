// Package schedule takes snapshots on a cron schedule, retries the ones
// that fail, and applies the retention policy after each one that succeeds.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/robfig/cron/v3"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/backoff"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/retention"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/snapshot/physical"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Defaults for Scheduler fields left at their zero value.
const (
	DefaultRetryInitial = time.Minute
	DefaultRetryMax     = 30 * time.Minute
	DefaultMaxAttempts  = 5
)

// ErrBusy is returned by TakeSnapshot while another snapshot is running.
var ErrBusy = errors.New("a snapshot is already running")

// Scheduler takes a snapshot whenever its schedule falls due. Snapshots
// never overlap: a run that falls due while one is running is skipped and
// logged. A failed snapshot is retried with exponential backoff, doubling
// from RetryInitial up to RetryMax, at most MaxAttempts times and never past
// the next scheduled run, which starts afresh.
type Scheduler struct {
	// Spec is the schedule, as ParseSpec reads it.
	Spec string
	// Method is catalog.MethodLogical or catalog.MethodPhysical.
	Method string
	// Source is the server to snapshot.
	Source *mysql.Config
	// TLS are the settings Source.TLS was made with, for the physical
	// snapshot tool (see physical.Options.TLS).
	TLS mysqltls.Settings
	// Threads is the logical snapshot's connections, or the physical tool's
	// --parallel; 0 means the method's default.
	Threads int
	// CloneDir and Datadir place a MySQL clone's staging directory (see
	// physical.Options): CloneDir, else beside Datadir, else
	// beside the server's datadir.
	CloneDir, Datadir string
	Store             storage.Storage
	// Timeline returns the archive timeline being written, recorded in the
	// manifest. Zero means the archive is not streaming yet: the snapshot
	// fails (and is retried) rather than record no timeline. A nil Timeline
	// reads the newest timeline from storage.
	Timeline func() catalog.TimelineID
	// Agent names who takes the snapshots, recorded in their manifests.
	Agent string
	// Retention is applied after each successful snapshot, if enabled.
	Retention retention.Policy
	// Grace protects unfinished objects from retention (0: retention.DefaultGrace).
	Grace time.Duration
	// Check, if set, runs before each snapshot (the account's privileges,
	// say); its error fails the attempt.
	Check func(ctx context.Context) error

	RetryInitial time.Duration
	RetryMax     time.Duration
	MaxAttempts  int

	// Turns, when shared with Drills, keeps snapshots (and the retention
	// after them) from running while a restore drill does, and the other
	// way round: a snapshot that falls due during a drill waits for it.
	Turns *Turns

	Metrics *Metrics
	// Logger is untagged: the scheduler, the snapshot and retention each add their component.
	Logger *slog.Logger

	running sync.Mutex // held while a snapshot (and its prune) runs
	mu      sync.Mutex
	status  Status
	pokes   chan string
}

// Status is the scheduler's state, as the agent's /status shows it.
type Status struct {
	Schedule string `json:"schedule"`
	Method   string `json:"method"`
	Running  bool   `json:"running"`
	// NextRun is when the next scheduled snapshot is due; NextRetry when a
	// failed one is tried again.
	NextRun   time.Time `json:"next_run,omitzero"`
	NextRetry time.Time `json:"next_retry,omitzero"`
	// LastSuccess is when the last snapshot completed; LastSnapshot its id.
	LastSuccess  time.Time          `json:"last_success,omitzero"`
	LastSnapshot catalog.SnapshotID `json:"last_snapshot,omitempty"`
	// LastDurationSeconds is how long the last successful snapshot took.
	LastDurationSeconds float64 `json:"last_duration_seconds,omitempty"`
	// LastFailure and LastError describe the last failed attempt.
	LastFailure time.Time `json:"last_failure,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int `json:"consecutive_failures"`
	Failures            int `json:"failures"`
	Skipped             int `json:"skipped"`
	// LastPrune is the outcome of the last retention run.
	LastPrune *PruneStatus `json:"last_prune,omitempty"`
	// Unscheduled counts snapshots taken out of schedule by Poke;
	// LastPokeReason says why the last was asked for.
	Unscheduled    int    `json:"unscheduled"`
	LastPokeReason string `json:"last_poke_reason,omitempty"`
}

// PruneStatus is the outcome of a retention run.
type PruneStatus struct {
	At       time.Time            `json:"at"`
	Kept     int                  `json:"snapshots_kept"`
	Expired  []catalog.SnapshotID `json:"snapshots_expired,omitempty"`
	Segments int                  `json:"segments_deleted"`
	Objects  int                  `json:"objects_deleted"`
	Error    string               `json:"error,omitempty"`
}

// Validate checks the settings, naming the bad one.
func (s *Scheduler) Validate() error {
	if _, err := ParseSpec(s.Spec); err != nil {
		return fmt.Errorf("schedule %q: %w", s.Spec, err)
	}
	switch {
	case s.Method != catalog.MethodLogical && s.Method != catalog.MethodPhysical:
		return fmt.Errorf("snapshot method %q: want logical or physical", s.Method)
	case s.Source == nil:
		return errors.New("scheduler: Source is not set")
	case s.Store == nil:
		return errors.New("scheduler: Store is not set")
	case s.Threads < 0:
		return fmt.Errorf("snapshot threads %d is negative", s.Threads)
	case s.RetryInitial < 0 || s.RetryMax < 0 || s.MaxAttempts < 0 || s.Grace < 0:
		return errors.New("scheduler: retry settings and grace must not be negative")
	}
	return s.Retention.Validate()
}

func (s *Scheduler) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger.With("component", "scheduler")
}

// Status returns the scheduler's state.
func (s *Scheduler) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Schedule, st.Method = s.Spec, s.Method
	if st.LastPrune != nil {
		p := *st.LastPrune
		st.LastPrune = &p
	}
	return st
}

func (s *Scheduler) update(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
}

// Poke asks Run for a snapshot now, outside the schedule, and says why
// (for the log). Pokes that arrive while one is pending are merged.
func (s *Scheduler) Poke(reason string) {
	select {
	case s.pokeChan() <- reason:
	default:
	}
}

func (s *Scheduler) pokeChan() chan string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pokes == nil {
		s.pokes = make(chan string, 1)
	}
	return s.pokes
}

// Run takes snapshots as the schedule falls due, and when poked, until ctx
// ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.Validate(); err != nil {
		return err
	}
	sched, _ := ParseSpec(s.Spec)
	next := sched.Next(time.Now())
	for {
		if next.IsZero() {
			s.log().Warn("the schedule never falls due again; no more snapshots", "schedule", s.Spec)
			<-ctx.Done()
			return nil
		}
		s.update(func(st *Status) { st.NextRun = next })
		if s.Metrics != nil {
			s.Metrics.NextRun.Set(float64(next.Unix()))
		}
		due, reason := s.wait(ctx, next)
		switch {
		case ctx.Err() != nil:
			return nil
		case !due:
			s.log().Info("taking a snapshot outside the schedule", "reason", reason)
			s.update(func(st *Status) { st.Unscheduled++; st.LastPokeReason = reason })
			s.runDue(ctx, sched)
			if ctx.Err() != nil {
				return nil
			}
			next = sched.Next(time.Now())
			continue
		}
		s.runDue(ctx, sched)
		if ctx.Err() != nil {
			return nil
		}
		// Runs that fell due while this one ran (or retried) are skipped.
		now := time.Now()
		n, skipped := sched.Next(next), 0
		for !n.IsZero() && !n.After(now) && skipped < 10000 {
			skipped++
			n = sched.Next(n)
		}
		if skipped > 0 {
			s.skipped(skipped, "the previous snapshot was still running")
		}
		next = n
	}
}

func (s *Scheduler) skipped(n int, why string) {
	s.log().Warn("scheduled snapshot skipped", "runs", n, "reason", why)
	s.update(func(st *Status) { st.Skipped += n })
	if s.Metrics != nil {
		s.Metrics.Skipped.Add(float64(n))
	}
}

// runDue takes the snapshot that fell due, retrying with backoff.
func (s *Scheduler) runDue(ctx context.Context, sched cron.Schedule) {
	initial, maxBackoff, attempts := s.RetryInitial, s.RetryMax, s.MaxAttempts
	if initial == 0 {
		initial = DefaultRetryInitial
	}
	if maxBackoff == 0 {
		maxBackoff = DefaultRetryMax
	}
	if attempts == 0 {
		attempts = DefaultMaxAttempts
	}
	b := backoff.New(initial, maxBackoff)
	for attempt := 1; ; attempt++ {
		_, err := s.TakeSnapshot(ctx)
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrBusy) {
			return
		}
		now, wait := time.Now(), b.Next()
		retryAt, nextRun := now.Add(wait), sched.Next(now)
		switch {
		case attempt >= attempts:
			s.log().Error("snapshot failed; giving up until the next scheduled run", "attempts", attempt, "next_run", nextRun)
			return
		case !nextRun.IsZero() && !retryAt.Before(nextRun):
			s.log().Warn("snapshot failed; the next scheduled run comes before a retry would", "attempts", attempt, "next_run", nextRun)
			return
		}
		s.log().Warn("snapshot failed; retrying", "attempt", attempt, "retry_in", wait.String())
		s.update(func(st *Status) { st.NextRetry = retryAt })
		ok := sleepUntil(ctx, retryAt)
		s.update(func(st *Status) { st.NextRetry = time.Time{} })
		if !ok {
			return
		}
	}
}

// wait sleeps until t (due) or a poke (not due, with its reason), or until
// ctx ends.
func (s *Scheduler) wait(ctx context.Context, t time.Time) (due bool, reason string) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false, ""
	case <-timer.C:
		return true, ""
	case reason := <-s.pokeChan():
		return false, reason
	}
}

// sleepUntil waits until t and reports whether ctx is still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// TakeSnapshot takes one snapshot now, records the outcome in the status
// and metrics, and applies the retention policy after a success. It
// returns ErrBusy, without waiting, while another snapshot is running. A
// failure of retention is reported but does not fail the snapshot.
func (s *Scheduler) TakeSnapshot(ctx context.Context) (*catalog.Manifest, error) {
	if !s.running.TryLock() {
		s.skipped(1, "another snapshot is running")
		return nil, ErrBusy
	}
	defer s.running.Unlock()
	release, err := s.Turns.take(ctx, s.log(), "snapshot")
	if err != nil {
		return nil, err
	}
	defer release()
	s.update(func(st *Status) { st.Running = true })
	defer s.update(func(st *Status) { st.Running = false })

	start := time.Now()
	m, err := s.take(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // stopping, not failing
		}
		s.update(func(st *Status) {
			st.LastFailure, st.LastError = time.Now().UTC(), err.Error()
			st.ConsecutiveFailures++
			st.Failures++
		})
		if s.Metrics != nil {
			s.Metrics.Failures.Inc()
		}
		s.log().Error("scheduled snapshot failed", "method", s.Method, "err", err)
		return nil, err
	}
	took := time.Since(start)
	s.update(func(st *Status) {
		st.LastSuccess, st.LastSnapshot, st.LastDurationSeconds = m.Finished, m.ID, took.Seconds()
		st.ConsecutiveFailures = 0
	})
	if s.Metrics != nil {
		s.Metrics.LastSuccess.Set(float64(m.Finished.UnixMilli()) / 1e3)
		s.Metrics.LastDuration.Set(took.Seconds())
	}
	s.log().Info("scheduled snapshot complete", "snapshot", string(m.ID), "method", m.Method, "binlog", m.Binlog.String(),
		"timeline", m.Timeline, "stored_bytes", m.StoredBytes, "duration", took.Round(time.Millisecond).String())
	if s.Retention.Enabled() {
		s.prune(ctx)
	}
	return m, nil
}

func (s *Scheduler) take(ctx context.Context) (*catalog.Manifest, error) {
	if s.Check != nil {
		if err := s.Check(ctx); err != nil {
			return nil, err
		}
	}
	var tl catalog.TimelineID
	if s.Timeline != nil {
		if tl = s.Timeline(); tl == 0 {
			return nil, errors.New("the binlog archive has no timeline yet (the streamer has not started); a snapshot now could not be placed in it")
		}
	} else {
		var err error
		if tl, err = catalog.NewestTimeline(ctx, s.Store); err != nil {
			return nil, fmt.Errorf("read the archive's timeline: %w", err)
		}
	}
	switch s.Method {
	case catalog.MethodPhysical:
		src, err := binlog.NewSource(s.Source)
		if err != nil {
			return nil, err
		}
		defer src.Close()
		return physical.Take(ctx, physical.Options{Source: src, TLS: s.TLS, Storage: s.Store, Timeline: tl, Agent: s.Agent,
			Parallel: s.Threads, CloneDir: s.CloneDir, Datadir: s.Datadir, Logger: s.Logger})
	default:
		return snapshot.TakeLogical(ctx, snapshot.LogicalOptions{Source: s.Source, Storage: s.Store, Threads: s.Threads,
			Timeline: tl, Agent: s.Agent, Logger: s.Logger})
	}
}

// prune applies retention and records the outcome.
func (s *Scheduler) prune(ctx context.Context) {
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p, err := retention.Prune(ctx, retention.Options{Store: s.Store, Policy: s.Retention, Grace: s.Grace,
		Logger: logger.With("component", "retention")})
	ps := &PruneStatus{At: time.Now().UTC()}
	if p != nil {
		ps.Kept, ps.Expired, ps.Segments = len(p.Keep), p.Expire, p.Segments
		for _, st := range p.Steps {
			if st.Put == nil {
				ps.Objects++
			}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		ps.Error = err.Error()
		s.log().Error("retention after snapshot", "err", err)
		if s.Metrics != nil {
			s.Metrics.PruneFailures.Inc()
		}
	} else if s.Metrics != nil {
		s.Metrics.PrunedObjects.Add(float64(ps.Objects))
	}
	s.update(func(st *Status) { st.LastPrune = ps })
}
