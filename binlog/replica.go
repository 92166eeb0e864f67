package binlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// notePlaintext warns when the replication connection goes without TLS
// although TLS is configured (the server offers none, and the mode allows
// plaintext then), once per change, and not for a server on this host.
func (s *Streamer) notePlaintext(plain bool) {
	fellBack := plain && s.src().Config.TLS != nil && !mysqltls.Local(s.src().Config)
	s.mu.Lock()
	changed := fellBack != s.plaintext
	s.plaintext = fellBack
	s.mu.Unlock()
	if changed && fellBack {
		s.Logger.Warn("the server offers no TLS: the replication connection is not encrypted", "server", s.src().Address())
	}
}

// session runs one replication connection until it breaks. progressed
// reports whether any event arrived.
func (s *Streamer) session(ctx context.Context, info ServerInfo) (progressed bool, err error) {
	w := s.writer()
	pos := w.ResumePoint()
	h := &eventHandler{s: s, w: w}
	var conn streamConn
	opts, err := s.dumpOptions(ctx, info, &conn)
	if err != nil {
		return false, err
	}
	// No per-packet read deadline (setting one for every packet costs more
	// CPU than anything else the reader does): a watchdog closes the
	// connection when neither an event nor a heartbeat arrived for
	// ReadTimeout, which also covers a hang while connecting; so does the
	// end of ctx.
	stopWatching := s.watchSession(ctx, h, &conn)
	defer stopWatching()
	d, err := s.src().dialDump(ctx, opts, pos)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return false, nil
		case h.replan.Load():
			return false, errReplan
		case h.stalled.Load():
			return false, fmt.Errorf("no answer from the server for %s while connecting", s.ReadTimeout)
		}
		return false, fmt.Errorf("start replication from %s: %w", pos, s.src().classifyStream(err))
	}
	defer d.close()
	s.setConnected(true)
	defer s.setConnected(false)
	s.Logger.Info("streaming binlog", "from", pos.String(), "timeline", s.currentTimeline().String(), "semi_sync", opts.semiSync)
	select {
	case <-s.started:
	default:
		close(s.started)
	}
	var ack *acker
	stopAcking := func() error { return nil }
	if opts.semiSync {
		ack = newAcker(s.Ack, d, w, s.up, s.observeAck, s.ackedThrough)
		stopAcking = s.runAcker(ctx, ack, &conn)
		s.setAckReplica(true, "")
		defer s.setAckReplica(false, "")
	}
	for err == nil {
		var ev []byte
		var waited bool
		if ev, waited, err = d.next(); err == nil {
			if err = h.handle(ev); err == nil && waited {
				ack.want(w.Position())
			}
		}
	}
	ackErr := stopAcking()
	progressed = h.events.Load() > 0
	switch {
	case ctx.Err() != nil:
		return progressed, nil
	case h.err != nil:
		return progressed, h.err
	case ackErr != nil:
		return progressed, ackErr
	case h.replan.Load():
		return progressed, errReplan
	case h.stalled.Load():
		return progressed, fmt.Errorf("no event or heartbeat from the server for %s: connection torn down", s.ReadTimeout)
	case h.moved.Load():
		return progressed, errMoved
	}
	return progressed, s.src().classifyStream(err)
}

// dumpOptions are the settings of a session's replication connection,
// whose connection conn remembers.
func (s *Streamer) dumpOptions(ctx context.Context, info ServerInfo, conn *streamConn) (dumpOptions, error) {
	tlsCfg, err := s.src().replicationTLS(ctx)
	if err != nil {
		return dumpOptions{}, err
	}
	s.notePlaintext(tlsCfg == nil)
	semiSync := false
	if s.Ack.Enabled() {
		if semiSync, err = s.semiSyncAvailable(ctx); err != nil {
			return dumpOptions{}, err
		}
	}
	return dumpOptions{
		flavor:    info.Flavor,
		serverID:  s.ServerID,
		heartbeat: s.Heartbeat,
		semiSync:  semiSync,
		tls:       tlsCfg,
		dial:      conn.dialer((&net.Dialer{Timeout: 10 * time.Second}).DialContext),
	}, nil
}

// semiSyncAvailable reports whether the server can take the streamer as a
// semi-synchronous replica; when it cannot, the session streams
// asynchronously and the status says why.
func (s *Streamer) semiSyncAvailable(ctx context.Context) (bool, error) {
	st, err := s.src().SemiSync(ctx)
	if err != nil {
		return false, fmt.Errorf("read the server's semi-synchronous replication state: %w", err)
	}
	if !st.Available {
		const why = "the server cannot be a semi-synchronous source: on MySQL, INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'"
		s.setAckReplica(false, why)
		s.Logger.Warn("streaming asynchronously: "+why, "ack", s.Ack)
		return false, nil
	}
	return true, nil
}

// runAcker runs the session's acknowledgements until the returned function
// is called, which returns why they stopped early, if they did. Failing
// ends the session: a writer the spool broke is restarted from the spool,
// a broken connection is reconnected.
func (s *Streamer) runAcker(ctx context.Context, a *acker, conn *streamConn) (stop func() error) {
	actx, cancel := context.WithCancel(ctx)
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err = a.run(actx); err != nil {
			if errors.Is(err, ErrSpool) {
				s.pokeReplan()
			}
			conn.close()
		}
	}()
	return func() error {
		cancel()
		<-done
		return err
	}
}

// streamConn remembers a session's connection, so that the session can be
// ended from outside the reader by closing it, also before it is made.
type streamConn struct {
	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

// dialFunc dials the replication connection.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// dialer wraps dial to remember the connection it makes; one made after
// close is closed at once.
func (c *streamConn) dialer(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.conn = nc
		if c.closed {
			nc.Close()
		}
		return nc, nil
	}
}

// close closes the stream's connection, and one made later.
func (c *streamConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		c.conn.Close()
	}
}

// watchSession ends the session by closing conn when the writer or the
// spool failed (see pokeReplan) or when the server went quiet for
// ReadTimeout. The returned function stops watching and waits for it.
func (s *Streamer) watchSession(ctx context.Context, h *eventHandler, conn *streamConn) (stop func()) {
	wdCtx, stopWatchdog := context.WithCancel(ctx)
	stopClosing := context.AfterFunc(ctx, conn.close)
	var wg sync.WaitGroup
	if s.following() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.endWhenDemoted(wdCtx, h, conn)
		}()
	}
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
		stopClosing()
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

// eventHandler writes each event as the session reads it, so a
// slow spool slows the stream instead of filling memory.
type eventHandler struct {
	s       *Streamer
	w       *Writer
	events  atomic.Int64 // events received, heartbeats included
	stalled atomic.Bool  // the watchdog closed the connection
	replan  atomic.Bool  // the session was ended for a failed writer or spool
	moved   atomic.Bool  // the session was ended because another server is the primary
	err     error
}

// handle writes one event.
func (h *eventHandler) handle(ev []byte) error {
	h.events.Add(1)
	if h.s.Spool.Full(int64(len(ev))) {
		h.err = errSpoolFull
		return h.err
	}
	if err := h.w.Handle(ev); err != nil {
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
