package binlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// notePlaintext warns when the replication connection goes without TLS
// although TLS is configured (the server offers none, and the mode allows
// plaintext then), once per change, and not for a server on this host.
func (s *Streamer) notePlaintext(plain bool) {
	fellBack := plain && s.Source.Config.TLS != nil && !mysqltls.Local(s.Source.Config)
	s.mu.Lock()
	changed := fellBack != s.plaintext
	s.plaintext = fellBack
	s.mu.Unlock()
	if changed && fellBack {
		s.Logger.Warn("the server offers no TLS: the replication connection is not encrypted", "server", s.Source.Address())
	}
}

// session runs one replication connection until it breaks. progressed
// reports whether any event arrived.
func (s *Streamer) session(ctx context.Context, info ServerInfo) (progressed bool, err error) {
	w := s.writer()
	pos := w.ResumePoint()
	h := &eventHandler{s: s, w: w}
	var conn streamConn
	cfg, err := s.sessionConfig(ctx, info, h, &conn)
	if err != nil {
		return false, err
	}
	stopWatching := s.watchSession(ctx, h, &conn)
	defer stopWatching()
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()
	st, err := syncer.StartSync(gomysql.Position{Name: pos.File, Pos: uint32(pos.Pos)})
	if err != nil {
		if h.replan.Load() {
			return false, errReplan
		}
		if h.stalled.Load() {
			return false, fmt.Errorf("no answer from the server for %s while connecting", s.ReadTimeout)
		}
		return false, fmt.Errorf("start replication from %s: %w", pos, s.Source.classifyStream(err))
	}
	s.setConnected(true)
	defer s.setConnected(false)
	s.Logger.Info("streaming binlog", "from", pos.String(), "timeline", s.currentTimeline().String())
	select {
	case <-s.started:
	default:
		close(s.started)
	}
	_, err = st.GetEvent(ctx)
	progressed = h.events.Load() > 0
	switch {
	case ctx.Err() != nil:
		return progressed, nil
	case h.err != nil:
		return progressed, h.err
	case h.replan.Load():
		return progressed, errReplan
	case h.stalled.Load():
		return progressed, fmt.Errorf("no event or heartbeat from the server for %s: connection torn down", s.ReadTimeout)
	case err != nil:
		return progressed, s.Source.classifyStream(err)
	}
	return progressed, nil
}

// sessionConfig is the replication client's configuration for a session
// whose events go to h and whose connection conn remembers.
func (s *Streamer) sessionConfig(ctx context.Context, info ServerInfo, h *eventHandler, conn *streamConn) (replication.BinlogSyncerConfig, error) {
	cfg, err := s.Source.syncerConfig(ctx, info.Flavor, s.ServerID, s.ReadTimeout, s.Heartbeat)
	if err != nil {
		return cfg, err
	}
	s.notePlaintext(cfg.TLSConfig == nil)
	cfg.SynchronousEventHandler = h
	// The replication client logs every connection, its whole configuration
	// included, and reports at error level what this streamer reports anyway
	// (with its consequence): its lines are kept for debugging only.
	cfg.Logger = slog.New(debugOnly{s.Logger.Handler()}).With("component", "replication-client")
	// No per-packet read deadline (setting one for every packet costs more
	// CPU than anything else the reader does): a watchdog closes the
	// connection when neither an event nor a heartbeat arrived for
	// ReadTimeout, which also covers a hang while connecting.
	cfg.ReadTimeout = 0
	dial := cfg.Dialer
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	cfg.Dialer = conn.dialer(dial)
	return cfg, nil
}

// streamConn remembers a session's connection, so that the session can be
// ended from outside the replication client by closing it.
type streamConn struct {
	mu   sync.Mutex
	conn net.Conn
}

// dialFunc is the replication client's dialer.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// dialer wraps dial to remember the first connection it makes.
func (c *streamConn) dialer(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		c.mu.Lock()
		if err == nil && c.conn == nil {
			c.conn = nc // the stream's connection; later ones only kill it
		}
		c.mu.Unlock()
		return nc, err
	}
}

// close closes the stream's connection, if one was made.
func (c *streamConn) close() {
	c.mu.Lock()
	if c.conn != nil {
		c.conn.Close()
	}
	c.mu.Unlock()
}

// watchSession ends the session by closing conn when the writer or the
// spool failed (see pokeReplan) or when the server went quiet for
// ReadTimeout. The returned function stops watching and waits for it.
func (s *Streamer) watchSession(ctx context.Context, h *eventHandler, conn *streamConn) (stop func()) {
	wdCtx, stopWatchdog := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.endOnReplan(wdCtx, h, conn)
	}()
	go func() {
		defer wg.Done()
		s.endWhenStalled(wdCtx, h, conn)
	}()
	return func() {
		stopWatchdog()
		wg.Wait()
	}
}

// endOnReplan ends the session at once when a writer or the spool failed.
func (s *Streamer) endOnReplan(ctx context.Context, h *eventHandler, conn *streamConn) {
	select {
	case <-ctx.Done():
		return
	case <-s.replan:
	}
	h.replan.Store(true)
	conn.close()
}

// endWhenStalled ends the session when neither an event nor a heartbeat
// arrived for ReadTimeout.
func (s *Streamer) endWhenStalled(ctx context.Context, h *eventHandler, conn *streamConn) {
	last, lastChange := h.events.Load(), time.Now()
	t := time.NewTicker(s.ReadTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := h.events.Load(); n != last {
			last, lastChange = n, time.Now()
			continue
		}
		if time.Since(lastChange) > s.ReadTimeout {
			h.stalled.Store(true)
			conn.close()
			return
		}
	}
}

// setConnected records whether a replication connection is streaming.
func (s *Streamer) setConnected(up bool) {
	s.mu.Lock()
	s.connected = up
	s.mu.Unlock()
	v := 0.0
	if up {
		v = 1
	}
	s.Metrics.connected(v)
}

// eventHandler writes each event as the replication client reads it, so a
// slow spool slows the stream instead of filling memory.
type eventHandler struct {
	s       *Streamer
	w       *Writer
	events  atomic.Int64 // events received, heartbeats included
	stalled atomic.Bool  // the watchdog closed the connection
	replan  atomic.Bool  // the session was ended for a failed writer or spool
	err     error
}

func (h *eventHandler) HandleEvent(e *replication.BinlogEvent) error {
	h.events.Add(1)
	if h.s.Spool.Full(int64(len(e.RawData))) {
		h.err = errSpoolFull
		return h.err
	}
	if err := h.w.Handle(e.RawData); err != nil {
		h.err = err
		return err
	}
	return nil
}

// classifyStream turns replication errors into this package's sentinels,
// with the replication client's stack traces taken out of the message.
func (s *Source) classifyStream(err error) error {
	msg := stripStack(err.Error())
	switch {
	case strings.Contains(msg, "ERROR 1045") || strings.Contains(msg, "Access denied"):
		return fmt.Errorf("%w: %s", ErrAccessDenied, msg)
	case strings.Contains(msg, "ERROR 1236"):
		return fmt.Errorf("%w: %s", errSourceLog, msg)
	}
	return &streamError{msg: msg, err: err}
}

// streamError is a replication client error with a readable message.
type streamError struct {
	msg string
	err error
}

func (e *streamError) Error() string { return e.msg }
func (e *streamError) Unwrap() error { return e.err }

// stripStack removes the stack traces that the replication client's error
// package appends (a function line followed by a tab-indented file line).
func stripStack(msg string) string {
	lines := strings.Split(msg, "\n")
	var keep []string
	for i, l := range lines {
		if strings.HasPrefix(l, "\t") || (i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t")) {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "; ")
}

// errSourceLog is the server's refusal to send the binlog asked for (1236):
// purged, never existed, or a position past its end.
var errSourceLog = errors.New("server cannot send the requested binlog")

// debugOnly passes every record to the handler at debug level.
type debugOnly struct{ slog.Handler }

func (h debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.Handler.Enabled(ctx, slog.LevelDebug)
}

func (h debugOnly) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return h.Handler.Handle(ctx, r)
}

func (h debugOnly) WithAttrs(a []slog.Attr) slog.Handler { return debugOnly{h.Handler.WithAttrs(a)} }
func (h debugOnly) WithGroup(n string) slog.Handler      { return debugOnly{h.Handler.WithGroup(n)} }
