package binlog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Metrics are the archive's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	ArchivedBytes    prometheus.Counter
	UploadedBytes    prometheus.Counter
	UploadedObjects  prometheus.Counter
	LastCommit       prometheus.Gauge
	LastUpload       prometheus.Gauge
	LagSeconds       prometheus.Gauge
	LagBytes         prometheus.Gauge
	SpoolBytes       prometheus.Gauge
	Connected        prometheus.Gauge
	Timeline         prometheus.Gauge
	Gaps             prometheus.Counter
	CompleteAt       prometheus.Gauge
	Errors           *prometheus.CounterVec
	DurableLatency   prometheus.Histogram
	Reconnects       prometheus.Counter
	TransactionsSeen prometheus.Counter

	// The semi-synchronous acknowledgements (see AckMode).
	AckRequested       prometheus.Gauge
	AckReplica         prometheus.Gauge
	AckServerWaits     prometheus.Gauge
	AckRPOZero         prometheus.Gauge
	AckSeconds         prometheus.Histogram
	AckServerFallbacks prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ArchivedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_binlog_archived_bytes_total",
			Help: "Binlog bytes made durable in storage (uncompressed)."}),
		UploadedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_binlog_uploaded_bytes_total",
			Help: "Compressed bytes of binlog segments uploaded."}),
		UploadedObjects: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_binlog_uploaded_objects_total",
			Help: "Binlog segments uploaded."}),
		LastCommit: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_last_archived_commit_timestamp_seconds",
			Help: "Commit time of the newest transaction durable in storage."}),
		LastUpload: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_last_upload_timestamp_seconds",
			Help: "When a segment was last made durable."}),
		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_archive_lag_seconds",
			Help: "How long the server's binlog has been ahead of the durable archive (0 when caught up)."}),
		LagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_archive_lag_bytes",
			Help: "Binlog bytes on the server not yet durable in storage."}),
		SpoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_spool_bytes",
			Help: "Bytes waiting in the local spool for upload."}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_stream_connected",
			Help: "1 while the replication stream is connected."}),
		Timeline: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_timeline",
			Help: "The timeline being archived."}),
		Gaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_binlog_gaps_total",
			Help: "Gaps recorded in the archive by this agent (purged or diverged binlog)."}),
		CompleteAt: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_binlog_complete_timestamp_seconds",
			Help: "Server time up to which the archive was last recorded complete while the server was quiet (0: never)."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mysqlpitr_errors_total",
			Help: "Errors by kind."}, []string{"kind"}),
		DurableLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mysqlpitr_binlog_seal_to_durable_seconds",
			Help:    "Time from sealing a segment to its index record being durable in storage.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_binlog_reconnects_total",
			Help: "Replication stream reconnects."}),
		TransactionsSeen: prometheus.NewCounter(prometheus.CounterOpts{Name: "mysqlpitr_binlog_archived_transactions_total",
			Help: "Transactions made durable in storage."}),
		AckRequested: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_semisync_requested",
			Help: "1 when the agent acknowledges transactions as a semi-synchronous replica (--ack)."}),
		AckReplica: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_semisync_replica",
			Help: "1 while the replication connection is a semi-synchronous replica's."}),
		AckServerWaits: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_semisync_server_waits",
			Help: "1 while the server's commits wait for a semi-synchronous acknowledgement (0: off, or fallen back to asynchronous)."}),
		AckRPOZero: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_semisync_rpo_zero",
			Help: "1 while every commit the server acknowledges is durable in the archive first."}),
		AckSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mysqlpitr_semisync_ack_seconds",
			Help:    "Time from a transaction's last event arriving to its acknowledgement.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}}),
		AckServerFallbacks: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mysqlpitr_semisync_server_fallbacks",
			Help: "Times the server fell back to asynchronous replication since it started (Rpl_semi_sync_*_no_times)."}),
	}
	if reg != nil {
		reg.MustRegister(m.AckRequested, m.AckReplica, m.AckServerWaits, m.AckRPOZero, m.AckSeconds, m.AckServerFallbacks)
		reg.MustRegister(m.ArchivedBytes, m.UploadedBytes, m.UploadedObjects, m.LastCommit, m.LastUpload,
			m.LagSeconds, m.LagBytes, m.SpoolBytes, m.Connected, m.Timeline, m.Gaps, m.CompleteAt, m.Errors,
			m.DurableLatency, m.Reconnects, m.TransactionsSeen)
	}
	return m
}

func (m *Metrics) error(kind string) {
	if m != nil {
		m.Errors.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) uploaded(seg *catalog.Segment, now time.Time) {
	if m == nil {
		return
	}
	m.ArchivedBytes.Add(float64(seg.Size()))
	m.UploadedBytes.Add(float64(seg.StoredSize))
	m.UploadedObjects.Inc()
	m.TransactionsSeen.Add(float64(seg.Transactions))
	if !seg.LastCommitTime.IsZero() {
		m.LastCommit.Set(float64(seg.LastCommitTime.UnixMicro()) / 1e6)
	}
	m.LastUpload.Set(float64(now.UnixMicro()) / 1e6)
	m.DurableLatency.Observe(now.Sub(seg.ArchivedAt).Seconds())
}

func (m *Metrics) connected(v float64) {
	if m != nil {
		m.Connected.Set(v)
	}
}
