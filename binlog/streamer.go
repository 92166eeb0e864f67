package binlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/backoff"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Defaults of the streamer.
const (
	DefaultFlushInterval  = time.Second
	DefaultReadTimeout    = 20 * time.Second
	DefaultHeartbeat      = 2 * time.Second
	DefaultConnectTimeout = 2 * time.Minute
	DefaultDrainTimeout   = 15 * time.Second
	DefaultLagPoll        = 2 * time.Second
	DefaultServerID       = 0x7069 // "pi": far from the small ids replicas usually take
	// DefaultCompleteInterval bounds how stale the archive's record of
	// being complete gets while the server is quiet: one small object
	// rewritten that often, and only then.
	DefaultCompleteInterval = 10 * time.Second
)

var errSpoolFull = errors.New("spool is full")

// Streamer archives a server's binlog continuously: it connects as a
// replica, writes what it receives into segments (Writer), seals a segment
// at least every FlushInterval, and uploads sealed segments (Uploader). It
// resumes exactly where the archive ends, and records a new timeline — the
// archive's gap marker — when the server no longer has or no longer continues
// what the archive needs.
type Streamer struct {
	Source   *Source
	Store    storage.Storage
	Spool    *Spool
	ServerID uint32
	// Agent names this agent in timeline and generation records.
	Agent string
	// Session identifies this run of the agent in generation records.
	Session string
	// CompleteInterval is how often, while the server is quiet and the
	// archive has all of its binlog, the streamer records how far the
	// archive is known complete (catalog.Complete), so that moments after
	// the last commit can be restored. Zero: DefaultCompleteInterval;
	// negative: never.
	CompleteInterval time.Duration
	// RestoreMarker is the path of the marker a restore writes into the
	// server's datadir; a marker the archive has not seen starts a new
	// timeline (reason "restored"). Empty: not checked.
	RestoreMarker string

	// Follow are more servers the archive may follow, besides Source: on
	// losing its server the streamer looks among them all for the one
	// primary (see FindPrimary), and continues on it when it holds every
	// archived transaction (a timeline of reason failover), or records the
	// divergence when it does not.
	Follow []*Source
	// FollowResolve, when set, gives more candidates each time the
	// streamer looks for the primary: the addresses a name resolves to now
	// (a Kubernetes headless Service's pods, say).
	FollowResolve func(ctx context.Context) ([]*Source, error)

	// Ack makes the streamer a semi-synchronous replica that acknowledges
	// each transaction once it is durable at that level (see AckMode).
	Ack AckMode

	FlushInterval  time.Duration
	MaxSegment     int64
	ReadTimeout    time.Duration
	Heartbeat      time.Duration
	ConnectTimeout time.Duration
	RetryMax       time.Duration
	DrainTimeout   time.Duration
	LagPoll        time.Duration

	Logger  *slog.Logger
	Metrics *Metrics

	up      *Uploader
	started chan struct{}
	once    sync.Once
	// replan is poked when the writer or the spool failed: the session
	// ends and streaming starts again from what is durable.
	replan chan struct{}

	mu             sync.Mutex
	w              *Writer
	info           ServerInfo
	timeline       catalog.TimelineID
	lastTL         catalog.TimelineID
	connected      bool
	lastErr        string
	warnings       []string
	gaps           int
	timelinesBegun int // timelines begun by this streamer
	pauses         int
	restoreID      string
	plaintext      bool // the replication connection fell back to plaintext, and said so
	lagBytes       int64
	lagSeconds     float64
	completeAt     time.Time // the last completeness record stored
	ack            ackState
	// cur is the server streamed from: Source, until a failover;
	// streamedID its server_id.
	cur        *Source
	streamedID uint32
	// archived follows the last GTID of each source archived on the
	// current timeline, for judging a failover's new primary.
	archived catalog.GTIDSequence
}

// src returns the server streamed from.
func (s *Streamer) src() *Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return s.Source
	}
	return s.cur
}

func (s *Streamer) init() {
	s.once.Do(func() {
		if s.FlushInterval <= 0 {
			s.FlushInterval = DefaultFlushInterval
		}
		if s.ReadTimeout <= 0 {
			s.ReadTimeout = DefaultReadTimeout
		}
		if s.Heartbeat <= 0 {
			s.Heartbeat = DefaultHeartbeat
		}
		if s.ConnectTimeout <= 0 {
			s.ConnectTimeout = DefaultConnectTimeout
		}
		if s.RetryMax <= 0 {
			s.RetryMax = DefaultRetryMax
		}
		if s.DrainTimeout <= 0 {
			s.DrainTimeout = DefaultDrainTimeout
		}
		if s.LagPoll <= 0 {
			s.LagPoll = DefaultLagPoll
		}
		if s.ServerID == 0 {
			s.ServerID = DefaultServerID
		}
		if s.CompleteInterval == 0 {
			s.CompleteInterval = DefaultCompleteInterval
		}
		if s.Session == "" {
			s.Session = catalog.NewSession()
		}
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		s.started = make(chan struct{})
		s.replan = make(chan struct{}, 1)
		s.up = &Uploader{Spool: s.Spool, Store: s.Store, Logger: s.Logger, Metrics: s.Metrics, RetryMax: s.RetryMax,
			OnSpoolDamage: func(error) { s.pokeReplan() }}
	})
}

// Started is closed once the stream has connected for the first time.
func (s *Streamer) Started() <-chan struct{} {
	s.init()
	return s.started
}

// Uploader returns the streamer's uploader.
func (s *Streamer) Uploader() *Uploader {
	s.init()
	return s.up
}

// Status is a snapshot of the streamer's state, for /status.
type Status struct {
	Connected bool `json:"connected"`
	// Server is the server streamed from (with Follow, the primary found last).
	Server            string             `json:"server"`
	Flavor            Flavor             `json:"flavor,omitempty"`
	ServerVersion     string             `json:"server_version,omitempty"`
	Timeline          catalog.TimelineID `json:"timeline"`
	Received          catalog.Position   `json:"received"`
	DurableTimeline   catalog.TimelineID `json:"durable_timeline"`
	Durable           catalog.Position   `json:"durable"`
	LastDurableCommit time.Time          `json:"last_durable_commit,omitzero"`
	LagBytes          int64              `json:"lag_bytes"`
	LagSeconds        float64            `json:"lag_seconds"`
	SpoolBytes        int64              `json:"spool_bytes"`
	GapsRecorded      int                `json:"gaps_recorded"`
	// TimelinesStarted counts the timelines this streamer began (the first
	// of an empty archive, and every gap): each needs a snapshot on it
	// before restores can reach past its start.
	TimelinesStarted int `json:"timelines_started"`
	SpoolFullPauses  int `json:"spool_full_pauses"`
	// Generation is the writer generation this agent stores under.
	Generation catalog.Generation `json:"generation"`
	// CompleteAt is the server time up to which the archive was last
	// recorded complete (see Streamer.CompleteInterval).
	CompleteAt  time.Time `json:"complete_at,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	UploadError string    `json:"upload_error,omitempty"`
	Warnings    []string  `json:"warnings,omitempty"`
	// Ack is the semi-synchronous acknowledgements' state (with --ack).
	Ack *AckStatus `json:"ack,omitempty"`
}

// Status returns the current state.
func (s *Streamer) Status() Status {
	s.init()
	server := s.src().Address()
	s.mu.Lock()
	st := Status{Connected: s.connected, Flavor: s.info.Flavor, ServerVersion: s.info.Version, Timeline: s.timeline,
		LastError: s.lastErr, Warnings: s.warnings, GapsRecorded: s.gaps, TimelinesStarted: s.timelinesBegun, SpoolFullPauses: s.pauses, LagBytes: s.lagBytes}
	st.LagSeconds = s.lagSeconds
	st.CompleteAt = s.completeAt
	st.Server = server
	st.Ack = s.ackStatusLocked()
	w := s.w
	s.mu.Unlock()
	if w != nil {
		st.Received = w.Position()
	}
	st.DurableTimeline, st.Durable, st.LastDurableCommit = s.up.Durable()
	if err := s.up.LastError(); err != nil {
		st.UploadError = err.Error()
	}
	if s.Spool != nil {
		st.SpoolBytes = s.Spool.Used()
	}
	st.Generation = s.up.Generation()
	return st
}

func (s *Streamer) pokeReplan() {
	select {
	case s.replan <- struct{}{}:
	default:
	}
}

// Preflight connects to the server and checks that its binlog can be
// archived. It retries an unreachable server for ConnectTimeout; wrong
// credentials and disabled binary logging fail at once.
func (s *Streamer) Preflight(ctx context.Context) (ServerInfo, error) {
	s.init()
	deadline := time.Now().Add(s.ConnectTimeout)
	b := backoff.New(500*time.Millisecond, 10*time.Second)
	for {
		info, err := s.src().Info(ctx)
		if s.following() {
			var c Candidate
			if c, err = FindPrimary(ctx, s.candidates(ctx)); err == nil {
				info = c.Info
				s.mu.Lock()
				s.cur = c.Source
				s.mu.Unlock()
			} else if !errors.Is(err, ErrNoPrimary) {
				return info, err
			} else {
				err = fmt.Errorf("%w: %w", ErrUnreachable, err) // mid-failover: wait for one
			}
		}
		if err == nil {
			warnings, cerr := info.Check()
			if cerr != nil {
				return info, cerr
			}
			for _, w := range warnings {
				s.Logger.Warn(w)
			}
			s.mu.Lock()
			s.info, s.warnings = info, warnings
			s.mu.Unlock()
			return info, nil
		}
		wait := b.Next()
		if !errors.Is(err, ErrUnreachable) || time.Now().Add(wait).After(deadline) || ctx.Err() != nil {
			return info, err
		}
		s.Logger.Info("waiting for the server", "server", s.src().Address(), "err", err)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return info, err
		}
	}
}

// Run archives until ctx ends. It returns an error only for what retrying
// cannot fix (the server refuses the account, binary logging is off, the
// archive is inconsistent, another writer took the archive over: an error
// wrapping catalog.ErrFenced); it returns nil when ctx ends, after sealing
// the open segment and giving the uploader DrainTimeout to store it.
func (s *Streamer) Run(ctx context.Context) error {
	s.init()
	if s.Spool == nil {
		return errors.New("streamer: no spool")
	}
	s.up.Spool = s.Spool
	info, err := s.Preflight(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.up.Run(upCtx); err != nil {
			stop(err) // fenced: stop streaming
		}
	}()
	err = s.stream(sctx, info)
	upCancel()
	wg.Wait()
	if cause := context.Cause(sctx); err == nil && ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if errors.Is(err, catalog.ErrFenced) {
		s.Logger.Error("another writer has taken the archive over: stopping; what is left in the spool is not uploaded", "err", err)
		return err
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.DrainTimeout)
	defer cancel()
	if derr := s.up.UploadPending(dctx); derr != nil {
		s.Logger.Warn("segments left in the spool for the next start", "err", derr, "spool", s.Spool.Dir())
		if errors.Is(derr, catalog.ErrFenced) && err == nil {
			err = derr
		}
	}
	return err
}

func (s *Streamer) stream(ctx context.Context, info ServerInfo) error {
	if err := s.plan(ctx, info); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var wg sync.WaitGroup
	tickCtx, stopTicks := context.WithCancel(ctx)
	wg.Add(2)
	go func() { defer wg.Done(); s.flushLoop(tickCtx) }()
	go func() { defer wg.Done(); s.lagLoop(tickCtx) }()
	if s.Ack.Enabled() {
		wg.Add(1)
		go func() { defer wg.Done(); s.semiSyncLoop(tickCtx) }()
	}
	defer func() {
		stopTicks()
		wg.Wait()
		if w := s.writer(); w != nil {
			if err := w.Close(); err != nil {
				s.Logger.Error("seal last segment", "err", err)
			}
			s.up.Poke()
		}
	}()

	retryMax := s.RetryMax
	if s.following() {
		retryMax = min(retryMax, followRetry) // a failover is found within seconds
	}
	b := backoff.New(500*time.Millisecond, retryMax)
	for {
		progressed, err := s.session(ctx, info)
		if ctx.Err() != nil {
			return nil
		}
		s.setErr(err)
		if progressed {
			b.Reset()
		}
		switch {
		case errors.Is(err, errReplan), errors.Is(err, ErrSpool), s.writer().Broken() != nil:
			if err := s.restartAfterSpoolFailure(ctx, info, err); err != nil {
				return err
			}
		case errors.Is(err, errSpoolFull):
			s.pauseWhileSpoolFull(ctx)
		case errors.Is(err, ErrDiverged):
			if err := s.divergedTimeline(ctx, info, err); err != nil {
				return err
			}
		default:
			if !s.reconnect(ctx, b.Next(), err) {
				return nil
			}
		}
	}
}

// restartAfterSpoolFailure starts streaming again from what the spool
// holds, after the session ended with err because the writer or the spool
// failed: what the writer held is not in the spool, so the stream must
// never go on after it. It returns nil when ctx ends.
func (s *Streamer) restartAfterSpoolFailure(ctx context.Context, info ServerInfo, err error) error {
	s.Metrics.error("spool")
	s.Logger.Error("the spool failed: streaming again from the last segment it holds", "err", err)
	if err := s.restart(ctx, info); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return nil
}

// pauseWhileSpoolFull waits for uploads to make room in the spool before
// the stream resumes from the writer's last event.
func (s *Streamer) pauseWhileSpoolFull(ctx context.Context) {
	s.Logger.Warn("spool full: pausing the stream until uploads catch up", "spool_bytes", s.Spool.Used())
	s.Metrics.error("spool_full")
	s.mu.Lock()
	s.pauses++
	s.mu.Unlock()
	if err := s.writer().Rearm(); err != nil {
		return // broken: the next round restarts it
	}
	s.waitForSpace(ctx)
}

// divergedTimeline records the gap that err, a server binlog no longer
// continuing the archive, opens: a new timeline, from which streaming
// goes on.
func (s *Streamer) divergedTimeline(ctx context.Context, info ServerInfo, err error) error {
	s.Metrics.error("diverged")
	if err := s.startNewTimeline(ctx, info, catalog.ReasonDiverged, err.Error()); errors.Is(err, ErrSpool) {
		if err := s.restart(ctx, info); err != nil && ctx.Err() == nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return nil
}

// reconnect waits wait after a stream that ended with err, then checks
// that the server still has, and still continues, what the archive
// needs. It reports false when ctx ended meanwhile.
func (s *Streamer) reconnect(ctx context.Context, wait time.Duration, err error) bool {
	s.Metrics.error("stream")
	s.Logger.Warn("replication stream ended; reconnecting", "err", err, "retry_in", wait)
	if err := s.writer().Rearm(); err != nil {
		return true // broken: the next round restarts it
	}
	if backoff.Sleep(ctx, wait) != nil {
		return false
	}
	if s.Metrics != nil {
		s.Metrics.Reconnects.Inc()
	}
	// Another server may have become the primary; or the server may have
	// come back as something else: check that it still has, and still
	// continues, what the archive needs.
	moved, err := s.followPrimary(ctx)
	if err == nil && !moved {
		err = s.recheck(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		s.Logger.Warn("server check", "err", err)
		if errors.Is(err, ErrSpool) {
			s.pokeReplan()
		}
	}
	return true
}

// errReplan ends a session whose writer or spool failed.
var errReplan = errors.New("the spool failed")

// restart drops the writer and plans streaming again from what the spool
// and the archive hold, retrying while that fails (a spool that cannot be
// written to stays broken until it can).
func (s *Streamer) restart(ctx context.Context, info ServerInfo) error {
	select {
	case <-s.replan:
	default:
	}
	if w := s.writer(); w != nil {
		_ = w.Close() // a writer broken by the spool only drops what it holds
	}
	b := backoff.New(500*time.Millisecond, s.RetryMax)
	for {
		wait := b.Next()
		if err := s.Spool.sweep(false); err == nil {
			err = s.plan(ctx, info)
			if err == nil || errors.Is(err, catalog.ErrFenced) || ctx.Err() != nil {
				return err
			}
			s.Logger.Warn("cannot resume streaming; retrying", "err", err, "retry_in", wait)
		} else {
			s.Logger.Warn("cannot read the spool; retrying", "err", err, "retry_in", wait)
		}
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (s *Streamer) writer() *Writer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w
}

func (s *Streamer) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = err.Error()
	}
}

func (s *Streamer) waitForSpace(ctx context.Context) {
	for !s.Spool.Drained() {
		select {
		case <-ctx.Done():
			return
		case <-s.Spool.Space():
		case <-time.After(time.Second):
		}
	}
}

// idleFlush is how long the stream must be quiet before a segment younger
// than the flush interval is sealed early: a commit followed by silence is
// made durable at once instead of waiting out the interval. minSegmentAge
// bounds how often that happens (at most a few objects a second).
const (
	idleFlush     = 50 * time.Millisecond
	minSegmentAge = 250 * time.Millisecond
)

// flushLoop seals the open segment when it has been open for FlushInterval,
// or earlier when the stream has gone quiet (see idleFlush).
func (s *Streamer) flushLoop(ctx context.Context) {
	tick := min(s.FlushInterval/10, idleFlush)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastGauge := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w := s.writer(); w != nil {
			age, quiet, open := w.Pending()
			if open && (age >= s.FlushInterval-tick/2 || (quiet >= idleFlush && age >= min(minSegmentAge, s.FlushInterval))) {
				if err := w.Flush(); err != nil {
					s.pokeReplan() // the session ends and streaming starts again from the spool
				}
			}
		}
		if s.Metrics != nil && time.Since(lastGauge) >= time.Second {
			lastGauge = time.Now()
			s.Metrics.SpoolBytes.Set(float64(s.Spool.Used()))
		}
	}
}

func (s *Streamer) currentTimeline() catalog.TimelineID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timeline
}
