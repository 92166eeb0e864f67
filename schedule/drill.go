package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/drill"
)

// Turns keeps snapshots and restore drills from running at the same time:
// whoever comes second waits until the first is done. A nil *Turns keeps
// nothing apart.
type Turns struct {
	once sync.Once
	ch   chan struct{}
}

// take waits for the turn; what it returns gives the turn back.
func (t *Turns) take(ctx context.Context, log *slog.Logger, what string) (func(), error) {
	if t == nil {
		return func() {}, nil
	}
	t.once.Do(func() { t.ch = make(chan struct{}, 1) })
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch }, nil
	default:
	}
	log.Info("waiting for the running snapshot or drill to finish", "before", what)
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Drills runs restore drills on a schedule (drill.Run), never at the same
// time as a snapshot that shares its Turns. A drill that falls due while
// the previous one runs is skipped; a failed drill is recorded and not
// retried before the next scheduled one. Drills never fail the agent.
type Drills struct {
	// Spec is the schedule, as ParseSpec reads it.
	Spec string
	// Options are passed to drill.Run.
	Options drill.Options
	// Turns is shared with the snapshot Scheduler.
	Turns   *Turns
	Metrics *DrillMetrics
	// Logger is untagged: the scheduler and the drill add their component.
	Logger *slog.Logger

	mu     sync.Mutex
	status DrillStatus
}

// DrillStatus is the drills' state, as the agent's /status shows it.
type DrillStatus struct {
	Schedule string    `json:"schedule"`
	Running  bool      `json:"running"`
	NextRun  time.Time `json:"next_run,omitzero"`
	// Last is the latest drill's record; LastSuccess when one last passed.
	Last        *catalog.Drill `json:"last,omitempty"`
	LastSuccess time.Time      `json:"last_success,omitzero"`
	Failures    int            `json:"failures"`
}

// Status returns the drills' state.
func (d *Drills) Status() DrillStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.status
	st.Schedule = d.Spec
	if st.Last != nil {
		l := *st.Last
		st.Last = &l
	}
	return st
}

func (d *Drills) log() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger.With("component", "drill-scheduler")
}

// Run runs drills as the schedule falls due until ctx ends. It returns an
// error only for a schedule it cannot parse.
func (d *Drills) Run(ctx context.Context) error {
	sched, err := ParseSpec(d.Spec)
	if err != nil {
		return fmt.Errorf("drill schedule %q: %w", d.Spec, err)
	}
	next := sched.Next(time.Now())
	for {
		if next.IsZero() {
			d.log().Warn("the drill schedule never falls due again; no more drills", "schedule", d.Spec)
			<-ctx.Done()
			return nil
		}
		d.mu.Lock()
		d.status.NextRun = next
		d.mu.Unlock()
		if !sleepUntil(ctx, next) {
			return nil
		}
		d.RunDrill(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now, n, skipped := time.Now(), sched.Next(next), 0
		for !n.IsZero() && !n.After(now) && skipped < 10000 {
			skipped++
			n = sched.Next(n)
		}
		if skipped > 0 {
			d.log().Warn("scheduled drills skipped: the previous drill was still running", "runs", skipped)
		}
		next = n
	}
}

// RunDrill runs one drill now, once no snapshot is running, and records
// its outcome in the status and metrics. It returns the drill's record (nil
// when the drill did not run) and error.
func (d *Drills) RunDrill(ctx context.Context) (*catalog.Drill, error) {
	release, err := d.Turns.take(ctx, d.log(), "drill")
	if err != nil {
		return nil, err
	}
	defer release()
	d.mu.Lock()
	d.status.Running = true
	d.mu.Unlock()
	opts := d.Options
	if opts.Logger == nil {
		opts.Logger = d.Logger
	}
	rec, err := drill.Run(ctx, opts)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.Running = false
	if ctx.Err() != nil {
		return rec, ctx.Err()
	}
	if rec != nil {
		d.status.Last = rec
	}
	if err == nil && rec != nil && rec.Success {
		d.status.LastSuccess = rec.Finished
		if d.Metrics != nil {
			d.Metrics.LastSuccess.Set(float64(rec.Finished.UnixMilli()) / 1e3)
			d.Metrics.Duration.Set(rec.RestoreDuration.Seconds())
			d.Metrics.RestoredBytes.Set(float64(rec.RestoredBytes))
		}
		return rec, nil
	}
	d.status.Failures++
	if d.Metrics != nil {
		d.Metrics.Failures.Inc()
	}
	if !errors.Is(err, drill.ErrFailed) {
		d.log().Error("restore drill", "err", err)
	}
	return rec, err
}

// DrillMetrics are the drills' Prometheus metrics. A nil *DrillMetrics records nothing.
type DrillMetrics struct {
	LastSuccess   prometheus.Gauge
	Duration      prometheus.Gauge
	RestoredBytes prometheus.Gauge
	Failures      prometheus.Counter
}

// NewDrillMetrics creates the metrics and registers them with reg (if not nil).
func NewDrillMetrics(reg prometheus.Registerer) *DrillMetrics {
	m := &DrillMetrics{
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_last_drill_success_timestamp_seconds",
			Help: "When the last restore drill that passed finished (0 before the first)."}),
		Duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_drill_duration_seconds",
			Help: "How long the last passing restore drill's restore took (recovery time), checks excluded."}),
		RestoredBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_drill_restored_bytes",
			Help: "Snapshot data plus binlog replayed, uncompressed, by the last passing restore drill."}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_drill_failures_total",
			Help: "Restore drills that failed (a damaged or inconsistent archive, or an unrestorable one)."}),
	}
	if reg != nil {
		reg.MustRegister(m.LastSuccess, m.Duration, m.RestoredBytes, m.Failures)
	}
	return m
}
