package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// SemiSyncState is the source side of a server's semi-synchronous
// replication, under either flavor's names (MariaDB's built-in
// rpl_semi_sync_master_*, MySQL's rpl_semi_sync_source plugin).
type SemiSyncState struct {
	// Available: the server can be a semi-synchronous source (MySQL: the
	// plugin is installed).
	Available bool
	// Enabled is the server's setting (rpl_semi_sync_*_enabled).
	Enabled bool
	// On: commits wait for an acknowledgement now (Rpl_semi_sync_*_status);
	// off while enabled means the server fell back to asynchronous
	// replication after its timeout.
	On bool
	// Clients counts the semi-synchronous replicas connected.
	Clients int
	// OffTimes counts the server's fallbacks since it started
	// (Rpl_semi_sync_*_no_times); NoTx the commits not acknowledged.
	OffTimes, NoTx int64
	// WaitPoint is AFTER_SYNC or AFTER_COMMIT.
	WaitPoint string
	// Timeout is how long a commit waits before the server falls back.
	Timeout time.Duration
}

// SemiSync reads the server's semi-synchronous source settings and state.
func (s *Source) SemiSync(ctx context.Context) (SemiSyncState, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var st SemiSyncState
	vars, err := s.nameValues(ctx, "SHOW GLOBAL VARIABLES LIKE 'rpl\\_semi\\_sync\\_%'")
	if err != nil {
		return st, err
	}
	status, err := s.nameValues(ctx, "SHOW GLOBAL STATUS LIKE 'rpl\\_semi\\_sync\\_%'")
	if err != nil {
		return st, err
	}
	_, st.Available = vars["enabled"]
	st.Enabled = vars["enabled"] == "ON"
	st.WaitPoint = vars["wait_point"]
	if ms, err := strconv.ParseInt(vars["timeout"], 10, 64); err == nil {
		st.Timeout = time.Duration(ms) * time.Millisecond
	}
	st.On = status["status"] == "ON"
	st.Clients, _ = strconv.Atoi(status["clients"])
	st.OffTimes, _ = strconv.ParseInt(status["no_times"], 10, 64)
	st.NoTx, _ = strconv.ParseInt(status["no_tx"], 10, 64)
	return st, nil
}

// nameValues runs a SHOW VARIABLES or SHOW STATUS query and returns the
// source side's values by their names without the flavor's prefix
// ("enabled" for rpl_semi_sync_master_enabled and
// rpl_semi_sync_source_enabled).
func (s *Source) nameValues(ctx context.Context, q string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, s.classify(err)
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var name string
		var v sql.NullString
		if err := rows.Scan(&name, &v); err != nil {
			return nil, err
		}
		name = strings.ToLower(name)
		for _, p := range []string{"rpl_semi_sync_master_", "rpl_semi_sync_source_"} {
			if rest, ok := strings.CutPrefix(name, p); ok {
				m[rest] = v.String
			}
		}
	}
	return m, rows.Err()
}

// AckStatus is the semi-synchronous side of the streamer, for /status.
type AckStatus struct {
	Mode AckMode `json:"mode"`
	// Replica: the replication connection is a semi-synchronous replica's.
	Replica bool `json:"replica"`
	// ServerWaits: the server's commits wait for an acknowledgement now.
	ServerWaits bool `json:"server_waits"`
	// ServerClients counts the server's semi-synchronous replicas.
	ServerClients int `json:"server_clients"`
	// RPOZero: both of the above; every commit the server acknowledges to
	// its client is durable at Mode's level first.
	RPOZero bool `json:"rpo_zero"`
	// Problem says why RPO 0 does not hold, when it does not.
	Problem string `json:"problem,omitempty"`
	// Acknowledged counts the transactions acknowledged; the latencies are
	// those of the latest ones, from their last event's arrival to the
	// acknowledgement.
	Acknowledged int64 `json:"acknowledged"`
	// Through is where the latest transaction acknowledged ends.
	Through    catalog.Position `json:"through,omitzero"`
	LatencyP50 float64          `json:"latency_p50_seconds"`
	LatencyP99 float64          `json:"latency_p99_seconds"`
	// ServerFallbacks counts the times the server fell back to asynchronous
	// replication since it started; LastFallback is when the agent last saw
	// it fall back.
	ServerFallbacks int64     `json:"server_fallbacks"`
	LastFallback    time.Time `json:"last_fallback,omitzero"`
	// UnacknowledgedCommits counts the server's commits that were not
	// acknowledged by a semi-synchronous replica since it started.
	UnacknowledgedCommits int64 `json:"unacknowledged_commits"`
}

// ackLatencies is how many of the latest acknowledgements the status's
// percentiles cover.
const ackLatencies = 1024

// ackState is what the streamer keeps of its acknowledgements and of the
// server's semi-synchronous state (under Streamer.mu).
type ackState struct {
	replica   bool
	server    SemiSyncState
	polled    bool
	acked     int64
	through   catalog.Position
	latencies []time.Duration // a ring of the latest
	next      int
	lastOff   time.Time
	problem   string
}

// observeAck records one acknowledged transaction's wait.
func (s *Streamer) observeAck(d time.Duration) {
	s.mu.Lock()
	a := &s.ack
	a.acked++
	if len(a.latencies) < ackLatencies {
		a.latencies = append(a.latencies, d)
	} else {
		a.latencies[a.next] = d
		a.next = (a.next + 1) % ackLatencies
	}
	s.mu.Unlock()
	if s.Metrics != nil {
		s.Metrics.AckSeconds.Observe(d.Seconds())
	}
}

// ackedThrough records the position last acknowledged.
func (s *Streamer) ackedThrough(p catalog.Position) {
	s.mu.Lock()
	s.ack.through = p
	s.mu.Unlock()
}

// setAckReplica records whether the session is a semi-synchronous
// replica's, and why not when it should be.
func (s *Streamer) setAckReplica(on bool, problem string) {
	s.mu.Lock()
	s.ack.replica = on
	if on || problem != "" {
		s.ack.problem = problem
	}
	s.mu.Unlock()
	s.updateAckGauges()
}

// pollSemiSync reads the server's semi-synchronous state and notes a
// fallback to asynchronous replication.
func (s *Streamer) pollSemiSync(ctx context.Context) {
	st, err := s.src().SemiSync(ctx)
	if err != nil {
		return
	}
	s.mu.Lock()
	prev, polled := s.ack.server, s.ack.polled
	s.ack.server, s.ack.polled = st, true
	fellBack := polled && (st.OffTimes > prev.OffTimes || (prev.On && !st.On))
	if fellBack {
		s.ack.lastOff = time.Now()
	}
	s.mu.Unlock()
	if fellBack {
		s.Logger.Warn("the server fell back to asynchronous replication: commits no longer wait for the archive until the agent has caught up",
			"server_fallbacks", st.OffTimes, "timeout", st.Timeout)
	}
	if s.Metrics != nil {
		s.Metrics.AckServerFallbacks.Set(float64(st.OffTimes))
	}
	s.updateAckGauges()
}

// ackStatus returns the acknowledgement status (s.mu held).
func (s *Streamer) ackStatusLocked() *AckStatus {
	if !s.Ack.Enabled() {
		return nil
	}
	a := &s.ack
	st := &AckStatus{Mode: s.Ack, Replica: a.replica && s.connected, ServerWaits: a.server.On, ServerClients: a.server.Clients,
		Acknowledged: a.acked, Through: a.through, ServerFallbacks: a.server.OffTimes, LastFallback: a.lastOff, UnacknowledgedCommits: a.server.NoTx}
	st.RPOZero = st.Replica && st.ServerWaits && a.server.WaitPoint != "AFTER_COMMIT"
	if !st.RPOZero {
		st.Problem = s.ackProblemLocked()
	}
	if n := len(a.latencies); n > 0 {
		l := slices.Clone(a.latencies)
		slices.Sort(l)
		st.LatencyP50 = l[n/2].Seconds()
		st.LatencyP99 = l[min(n-1, n*99/100)].Seconds()
	}
	return st
}

// ackProblemLocked says why RPO 0 does not hold.
func (s *Streamer) ackProblemLocked() string {
	a := &s.ack
	switch {
	case a.problem != "" && !a.replica:
		return a.problem
	case !s.connected:
		return "the replication connection is down"
	case !a.polled:
		return "the server's semi-synchronous state is not known yet"
	case !a.server.Enabled:
		return "semi-synchronous replication is not enabled on the server (rpl_semi_sync_master_enabled / rpl_semi_sync_source_enabled)"
	case a.server.WaitPoint == "AFTER_COMMIT":
		return "the server's wait point is AFTER_COMMIT: other sessions see a commit before the archive has it; set it to AFTER_SYNC"
	case !a.server.On:
		return fmt.Sprintf("the server fell back to asynchronous replication (timeout %s); it switches back once the agent has caught up", a.server.Timeout)
	}
	return "the connection is not a semi-synchronous replica's"
}

// updateAckGauges sets the acknowledgement gauges from the status.
func (s *Streamer) updateAckGauges() {
	if s.Metrics == nil || !s.Ack.Enabled() {
		return
	}
	s.mu.Lock()
	st := s.ackStatusLocked()
	s.mu.Unlock()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	s.Metrics.AckRequested.Set(1)
	s.Metrics.AckReplica.Set(b(st.Replica))
	s.Metrics.AckServerWaits.Set(b(st.ServerWaits))
	s.Metrics.AckRPOZero.Set(b(st.RPOZero))
}

// semiSyncLoop polls the server's semi-synchronous state every LagPoll.
func (s *Streamer) semiSyncLoop(ctx context.Context) {
	t := time.NewTicker(s.LagPoll)
	defer t.Stop()
	for {
		s.pollSemiSync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
