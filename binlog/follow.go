package binlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// followRetry caps the wait between reconnects while following a primary:
// after a failover the stream goes on from the new primary within it.
// followCheck is how often a streamed server that may have been demoted
// is checked.
const (
	followRetry = time.Second
	followCheck = time.Second
)

// errMoved ends a session whose server is no longer the primary.
var errMoved = errors.New("the server is no longer the primary")

// endWhenDemoted ends the session when the server streamed from was made
// read-only and another server is the one primary: a demoted primary that
// stays up (now a replica of the new one) keeps the stream going, and the
// archive follows the primary rather than it.
func (s *Streamer) endWhenDemoted(ctx context.Context, h *eventHandler, conn *streamConn) {
	t := time.NewTicker(followCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := s.src()
		if c := describe(ctx, cur); c.Err != nil || !c.ReadOnly {
			continue
		}
		if p, err := FindPrimary(ctx, s.candidates(ctx)); err == nil && !s.streaming(p) {
			h.moved.Store(true)
			conn.close()
			return
		}
	}
}

// Streaming returns the identity of the server streamed from (with
// Follow, the primary found last).
func (s *Streamer) Streaming() ServerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// following reports whether the archive follows the primary among
// candidates (Follow, FollowResolve) rather than stays on Source.
func (s *Streamer) following() bool { return len(s.Follow) > 0 || s.FollowResolve != nil }

// candidates are the servers the archive may follow: Source, Follow and
// what FollowResolve gives, each address once.
func (s *Streamer) candidates(ctx context.Context) []*Source {
	out := []*Source{s.Source}
	seen := map[string]bool{s.Source.Address(): true}
	more := s.Follow
	if s.FollowResolve != nil {
		resolved, err := s.FollowResolve(ctx)
		if err != nil {
			s.Logger.Warn("resolving the servers to follow", "err", err)
		}
		more = append(slices.Clone(more), resolved...)
	}
	for _, f := range more {
		if !seen[f.Address()] {
			seen[f.Address()] = true
			out = append(out, f)
		}
	}
	return out
}

// streaming reports whether c is the server streamed from, by its
// identity: one server may be a candidate under two addresses.
func (s *Streamer) streaming(c Candidate) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.Info.ServerID == s.info.ServerID && c.Info.UUID == s.info.UUID
}

// followPrimary looks for the primary among the candidates after the
// stream broke, and moves the archive to it when it is another server than
// the one streamed from (see failover). It reports whether it moved. With
// no primary found (mid-failover), it stays: the next reconnect looks again.
func (s *Streamer) followPrimary(ctx context.Context) (moved bool, err error) {
	if !s.following() {
		return false, nil
	}
	c, err := FindPrimary(ctx, s.candidates(ctx))
	if err != nil {
		s.Logger.Warn("looking for the primary", "err", err)
		return false, nil
	}
	if s.streaming(c) {
		return false, nil
	}
	return true, s.failover(ctx, c)
}

// failover moves the archive to the new primary c. When c holds every
// transaction archived on the current timeline, the archive goes on from
// it on a timeline of reason failover, which says so: no transaction is
// lost across it. When c lacks some (the old primary's tail that was never
// replicated), the timeline begins for reason diverged, naming them.
func (s *Streamer) failover(ctx context.Context, c Candidate) error {
	old := s.src()
	s.mu.Lock()
	last := s.archived.Last()
	s.mu.Unlock()
	holds, err := s.holdsGTIDs(ctx, c)
	if err != nil {
		return fmt.Errorf("the new primary %s: %w", c.Source.Address(), err)
	}
	var missing, held []string
	for _, g := range last {
		if holds(g) {
			held = append(held, g.String())
		} else {
			missing = append(missing, g.String())
		}
	}
	s.mu.Lock()
	s.cur, s.info = c.Source, c.Info
	s.mu.Unlock()
	from := fmt.Sprintf("%s (server_id %d)", old.Address(), s.timelineServerID())
	to := fmt.Sprintf("%s (server_id %d)", c.Source.Address(), c.Info.ServerID)
	if len(missing) > 0 {
		return s.startNewTimeline(ctx, c.Info, catalog.ReasonDiverged, fmt.Sprintf("failover from %s to %s, which lacks archived transactions "+
			"of the old primary, up to %s (never replicated before the failover); its own GTID state is %s",
			from, to, strings.Join(missing, ","), c.Info.GTIDState))
	}
	var parentEnd *catalog.Position
	if w := s.writer(); w != nil {
		p := w.Position()
		parentEnd = &p
	}
	logs, err := c.Source.BinaryLogs(ctx)
	if err != nil {
		return err
	}
	first := s.firstNeeded(ctx, c.Source, logs, held)
	return s.beginTimeline(ctx, c.Info, catalog.ReasonFailover, fmt.Sprintf("failover from %s to %s, which holds every archived transaction", from, to),
		parentEnd, logs[first:], held)
}

// firstNeeded returns the index in logs of the newest binlog file of the
// new primary src that everything before is archived already: the
// continuing timeline starts there rather than at the oldest file, which
// on a long-lived replica holds days of transactions archived already. A
// file's format description is followed by what came before it (MySQL's
// Previous_gtids, MariaDB's Gtid_list); when that cannot be read, the
// oldest file it is.
func (s *Streamer) firstNeeded(ctx context.Context, src *Source, logs []BinaryLog, held []string) int {
	holds, err := catalog.HeldBy(held...)
	if err != nil {
		return 0
	}
	for i := len(logs) - 1; i > 0; i-- {
		before, err := src.gtidsBefore(ctx, logs[i].Name)
		if err != nil {
			s.Logger.Warn("reading which transactions come before a binlog file of the new primary", "file", logs[i].Name, "err", err)
			return 0
		}
		all := true
		for _, g := range before {
			all = all && holds(g)
		}
		if all {
			return i
		}
	}
	return 0
}

// gtidsBefore returns the last GTID of each source that came before the
// binlog file name, from its Previous_gtids (MySQL) or Gtid_list (MariaDB)
// event.
func (s *Source) gtidsBefore(ctx context.Context, name string) ([]catalog.GTID, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, "SHOW BINLOG EVENTS IN '"+strings.ReplaceAll(name, "'", "")+"' LIMIT 3")
	if err != nil {
		return nil, s.classify(err)
	}
	var out []catalog.GTID
	var perr error
	found := false
	err = eachRow(rows, func(vals, cols []string) bool {
		row := map[string]string{}
		for i, c := range cols {
			row[c] = vals[i]
		}
		switch row["Event_type"] {
		case "Previous_gtids":
			var set catalog.GTIDSet
			set, perr = catalog.ParseGTIDSet(row["Info"])
			out, found = set.Last(), true
			return false
		case "Gtid_list":
			out, perr = catalog.ParseGTIDList(strings.Trim(row["Info"], "[] "))
			found = true
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return nil, err
	case found:
		return out, perr
	}
	return nil, fmt.Errorf("%s starts with no Previous_gtids or Gtid_list event", name)
}

// timelineServerID is the server_id of the server streamed from until now.
func (s *Streamer) timelineServerID() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streamedID
}

// noteArchived follows the GTIDs of a sealed segment (see Streamer.archived).
func (s *Streamer) noteArchived(seg *catalog.Segment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range seg.GTIDs {
		_, _, _ = s.archived.Range(r)
	}
}

// seedArchived starts following the GTIDs of timeline tl from what the
// archive's tail and the spool hold of it.
func (s *Streamer) seedArchived(tl catalog.TimelineID, tail *catalog.TimelineState, pend Pending) {
	s.mu.Lock()
	s.archived = catalog.GTIDSequence{}
	s.mu.Unlock()
	if tail != nil && tail.ID == tl {
		for _, seg := range tail.Segments {
			s.noteArchived(seg)
		}
	}
	for _, seg := range pend.Segments {
		if seg.Timeline == tl {
			s.noteArchived(seg)
		}
	}
}

// holdsGTIDs returns whether the candidate's history holds a GTID. MySQL's
// gtid_executed holds every GTID it executed. MariaDB's sequence numbers
// are per domain, so a new primary's own transactions can take numbers the
// old one's lost tail had: a GTID is held when the server's binlog state
// has the same domain and server at that sequence number or past it.
func (s *Streamer) holdsGTIDs(ctx context.Context, c Candidate) (func(catalog.GTID) bool, error) {
	if c.Info.Flavor != MariaDB {
		set, err := catalog.ParseGTIDSet(c.Info.GTIDState)
		if err != nil {
			return nil, err
		}
		return set.Contains, nil
	}
	var state string
	if err := c.Source.db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_state").Scan(&state); err != nil {
		return nil, c.Source.classify(err)
	}
	held, err := catalog.HeldBy(state)
	if err != nil {
		return nil, fmt.Errorf("gtid_binlog_state %q: %w", state, err)
	}
	return held, nil
}
