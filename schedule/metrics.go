package schedule

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the scheduler's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	LastSuccess   prometheus.Gauge
	LastDuration  prometheus.Gauge
	NextRun       prometheus.Gauge
	Failures      prometheus.Counter
	Skipped       prometheus.Counter
	PrunedObjects prometheus.Counter
	PruneFailures prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_last_snapshot_success_timestamp_seconds",
			Help: "When the last scheduled snapshot completed (0 before the first)."}),
		LastDuration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_last_snapshot_duration_seconds",
			Help: "How long the last successful scheduled snapshot took."}),
		NextRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_next_snapshot_timestamp_seconds",
			Help: "When the next scheduled snapshot is due."}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_snapshot_failures_total",
			Help: "Scheduled snapshot attempts that failed (each retry counts)."}),
		Skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_snapshots_skipped_total",
			Help: "Scheduled snapshots skipped because another snapshot was still running."}),
		PrunedObjects: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_pruned_objects_total",
			Help: "Objects deleted by retention after scheduled snapshots."}),
		PruneFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_prune_failures_total",
			Help: "Retention runs after a scheduled snapshot that failed or were refused."}),
	}
	if reg != nil {
		reg.MustRegister(m.LastSuccess, m.LastDuration, m.NextRun, m.Failures, m.Skipped, m.PrunedObjects, m.PruneFailures)
	}
	return m
}
