package binlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/backoff"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// plan decides where streaming starts: after the newest archived or spooled
// segment when the server still continues it, else on a new timeline from
// the oldest binlog the server has. The first plan takes the archive over:
// it claims the next writer generation, fenced where the archive ends.
func (s *Streamer) plan(ctx context.Context, info ServerInfo) error {
	pend, err := s.Spool.Pending()
	if err != nil {
		return err
	}
	tail, refs, unverified, err := s.loadTail(ctx, pend)
	if err != nil {
		return err
	}
	if s.up.Generation() == 0 {
		if err := s.claim(ctx, refs); err != nil {
			return err
		}
	}
	if unverified == "" {
		if pend, err = s.dropStale(pend, tail); err != nil {
			return err
		}
	}
	lastTL, tlRec, last := s.archiveEnd(tail, pend)
	s.mu.Lock()
	s.lastTL = lastTL
	s.mu.Unlock()
	s.seedArchived(lastTL, tail, pend)

	m := s.noteRestoreMarker()
	if lastTL == 0 {
		return s.startNewTimeline(ctx, info, catalog.ReasonFirst, "the archive was empty")
	}
	if unverified != "" && tail != nil && tail.ID == lastTL {
		s.Logger.Error("cannot prove the server continues the archive; starting a new timeline", "detail", unverified)
		return s.startNewTimeline(ctx, info, catalog.ReasonUnverified, unverified)
	}
	if m != nil && m.ID != tlRec.RestoreID {
		// The server's data was put back to an earlier moment: what it writes
		// from now on is another history than the archive's.
		return s.startNewTimeline(ctx, info, catalog.ReasonRestored,
			fmt.Sprintf("the server was restored by mysql-pitr (restore %s to %s)", m.ID, m.Target))
	}
	if tlRec.ServerUUID != "" && info.UUID != "" && tlRec.ServerUUID != info.UUID {
		return s.startNewTimeline(ctx, info, catalog.ReasonDiverged,
			fmt.Sprintf("server uuid changed from %s to %s", tlRec.ServerUUID, info.UUID))
	}
	logs, listed, err := s.planLogs(ctx)
	if err != nil {
		return err
	}
	if !listed && last != nil {
		s.Logger.Info("resuming archive; the server's binlog list is held up by commits waiting for an acknowledgement, so the stream proves it continues the archive",
			"timeline", lastTL.String(), "after", catalog.Position{File: last.File, Pos: last.End}.String())
		return s.useWriter(lastTL, tlRec.UID, func(w *Writer) error { return w.ResumeAfter(last) })
	}
	if !listed {
		if logs, err = s.src().BinaryLogs(ctx); err != nil {
			return err
		}
	}
	if last == nil {
		// A timeline was begun but nothing archived in it yet.
		if size, ok := logSize(logs, tlRec.Start.File); ok && size >= tlRec.Start.Pos {
			return s.useWriter(lastTL, tlRec.UID, func(w *Writer) error { return w.StartAt(tlRec.Start, nil) })
		}
		return s.startNewTimeline(ctx, info, catalog.ReasonPurged,
			fmt.Sprintf("timeline %s starts at %s, which the server no longer has", lastTL, tlRec.Start))
	}
	if reason, detail := continuity(logs, last); reason != "" {
		return s.startNewTimelineAfter(ctx, info, reason, detail, &catalog.Position{File: last.File, Pos: last.End}, logs)
	}
	s.Logger.Info("resuming archive", "timeline", lastTL.String(), "after", catalog.Position{File: last.File, Pos: last.End}.String())
	return s.useWriter(lastTL, tlRec.UID, func(w *Writer) error { return w.ResumeAfter(last) })
}

// archiveEnd finds where the archive ends, counting what the spool holds
// and the store does not yet: the newest timeline, its record, and its
// last segment (nil: none yet). A last segment the store holds is where
// the uploader's durable position starts.
func (s *Streamer) archiveEnd(tail *catalog.TimelineState, pend Pending) (catalog.TimelineID, *catalog.Timeline, *catalog.Segment) {
	var lastTL catalog.TimelineID
	var tlRec *catalog.Timeline
	if tail != nil {
		lastTL, tlRec = tail.ID, &tail.Timeline
	}
	for _, t := range pend.Timelines {
		if t.ID >= lastTL {
			lastTL, tlRec = t.ID, t
		}
	}
	var last *catalog.Segment
	if tail != nil && tail.ID == lastTL {
		_, last = tail.End()
		if last != nil {
			s.up.initDurable(lastTL, catalog.Position{File: last.File, Pos: last.End}, last.LastCommitTime)
		}
	}
	for _, seg := range pend.Segments {
		if seg.Timeline == lastTL && (last == nil || seg.FileNum > last.FileNum || (seg.FileNum == last.FileNum && seg.End > last.End)) {
			last = seg
		}
	}
	return lastTL, tlRec, last
}

// noteRestoreMarker reads the restore marker, if any (one that cannot be
// read is logged and taken as none), and stamps its restore on every
// timeline begun from here on.
func (s *Streamer) noteRestoreMarker() *restoreMarker {
	m, err := s.readRestoreMarker()
	if err != nil {
		s.Logger.Warn("restore marker", "err", err)
	}
	if m != nil {
		// Any timeline begun from here on holds this server's data, which
		// that restore produced: recording it keeps a later start from
		// taking the marker for a restore not yet seen.
		s.restoreID = m.ID
	}
	return m
}

// claim takes the archive over: it claims the generation after the newest
// that refs lists, fenced at the archive's end as refs read it. Whatever
// an earlier writer stores past that end from now on is superseded.
func (s *Streamer) claim(ctx context.Context, refs catalog.TailRefs) error {
	c, err := catalog.PrepareClaim(s.Store, catalog.GenerationRecord{Gen: refs.Generations.Newest + 1, Fence: refs.End(),
		Reason: catalog.GenerationAcquired, Holder: s.Agent, Session: s.Session})
	if err != nil {
		return err
	}
	b := backoff.New(DefaultRetryMin, s.RetryMax)
	for {
		err := c.Put(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, catalog.ErrFenced) || ctx.Err() != nil {
			return err
		}
		wait := b.Next()
		s.Logger.Warn("cannot claim the archive's writer generation; retrying", "err", err, "retry_in", wait)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
	rec := c.Record()
	s.up.SetGeneration(rec)
	if err := s.Spool.addGen(rec.Gen); err != nil {
		// Only an agent without identity relies on it, to recognise its
		// own uploads after a restart; without it such an agent begins an
		// unverified timeline rather than guess.
		s.Logger.Warn("record the writer generation in the spool", "err", err)
	}
	s.Logger.Info("took the archive over", "generation", uint64(rec.Gen), "fence", rec.Fence.String())
	return nil
}

// dropStale removes from the spool what no longer continues the archive's
// end (tail): segments the archive already holds (an upload whose answer
// was lost), and segments and timelines a later writer went past (another
// agent took the archive over while this spool waited). Streaming then
// resumes from the archive's end, and the server still holds those bytes or
// the gap is recorded.
func (s *Streamer) dropStale(pend Pending, tail *catalog.TimelineState) (Pending, error) {
	if tail == nil {
		return pend, nil
	}
	var keep Pending
	dropped := 0
	for _, t := range pend.Timelines {
		if t.ID < tail.ID || (t.ID == tail.ID && tail.Reason != "unknown") {
			if err := s.Spool.RemoveTimeline(t.ID); err != nil {
				return pend, err
			}
			dropped++
			continue
		}
		keep.Timelines = append(keep.Timelines, t)
	}
	end, lastSeg := tail.End()
	endNum, _ := catalog.FileNumber(end.File)
	broken := false
	for _, seg := range pend.Segments {
		var stale bool
		switch {
		case seg.Timeline > tail.ID:
		case seg.Timeline < tail.ID, broken:
			stale = true
		case seg.FileNum < endNum || (seg.FileNum == endNum && seg.End <= end.Pos):
			stale = true // already archived
		default:
			continues := (seg.FileNum == endNum && seg.Start == end.Pos) ||
				(seg.Start == FirstEventPos && seg.FileNum > endNum && seg.Prev != nil && *seg.Prev == end && (lastSeg == nil || lastSeg.FileEnds))
			if continues {
				end, endNum = catalog.Position{File: seg.File, Pos: seg.End}, seg.FileNum
				lastSeg = seg
			} else {
				stale, broken = true, true
			}
		}
		if stale {
			if err := s.Spool.RemoveSegment(seg); err != nil {
				return pend, err
			}
			dropped++
			continue
		}
		keep.Segments = append(keep.Segments, seg)
	}
	if dropped > 0 {
		s.Logger.Warn("dropped spooled records that the archive already holds or that no longer continue it; streaming resumes from the archive's end",
			"dropped", dropped, "archive_end", end.String(), "timeline", tail.ID.String())
	}
	return keep, nil
}

// loadTail reads the archive's end, retrying while storage is unreachable.
//
// A store that cannot decrypt the archive (an agent given only the public
// recipients) takes the end from the spool, which keeps what it last
// uploaded, when the archive's keys show that nothing was added since. When
// they show otherwise, the returned tail has the newest timeline's id only,
// and unverified says why the server's continuity cannot be checked.
func (s *Streamer) loadTail(ctx context.Context, pend Pending) (tail *catalog.TimelineState, refs catalog.TailRefs, unverified string, err error) {
	b := backoff.New(time.Second, s.RetryMax)
	for {
		tail, refs, err := catalog.LoadTail(ctx, s.Store)
		if err == nil {
			return tail, refs, "", nil
		}
		if errors.Is(err, crypt.ErrNoIdentity) {
			tail, unverified, err := s.spoolTail(refs, pend)
			return tail, refs, unverified, err
		}
		if ctx.Err() != nil {
			return nil, refs, "", ctx.Err()
		}
		wait := b.Next()
		s.Logger.Warn("cannot read the archive; retrying", "err", err, "retry_in", wait)
		s.Metrics.error("storage")
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, refs, "", err
		}
	}
}

// spoolTail matches the archive's end, known from its keys, with what the
// spool uploaded last or still holds.
func (s *Streamer) spoolTail(refs catalog.TailRefs, pend Pending) (*catalog.TimelineState, string, error) {
	if refs.Newest == 0 {
		return nil, "", nil
	}
	local, err := s.Spool.Tail()
	if err != nil {
		return nil, "", err
	}
	owner, err := s.Spool.Owner()
	if err != nil {
		return nil, "", err
	}
	ts := &catalog.TimelineState{Timeline: catalog.Timeline{ID: refs.Newest}}
	why := fmt.Sprintf("the archive is encrypted and this agent holds no age identity to read its end (timeline %s", refs.Newest)
	if refs.Last != nil {
		why += ", " + refs.Last.RecordKey()
	}
	why += "), and its spool " + s.Spool.Dir() + " does not hold a copy"
	if local.Timeline == nil || local.Timeline.ID != refs.Newest {
		for _, t := range pend.Timelines {
			if t.ID == refs.Newest {
				local.Timeline = t
			}
		}
	}
	if local.Timeline == nil || local.Timeline.ID != refs.Newest {
		return ts, why, nil
	}
	ts.Timeline = *local.Timeline
	if refs.Last == nil {
		return ts, "", nil
	}
	if local.Segment != nil && local.Segment.Ref() == *refs.Last {
		ts.Segments = []*catalog.Segment{local.Segment}
		return ts, "", nil
	}
	// A segment still in the spool whose upload's answer was lost: its
	// record is in the archive under a generation this spool wrote under.
	for _, seg := range pend.Segments {
		ref := seg.Ref()
		ref.Gen = refs.Last.Gen
		if ref == *refs.Last && slices.Contains(owner.Gens, refs.Last.Gen) {
			stored := *seg
			stored.Gen = refs.Last.Gen
			ts.Segments = []*catalog.Segment{&stored}
			return ts, "", nil
		}
	}
	return &catalog.TimelineState{Timeline: catalog.Timeline{ID: refs.Newest}}, why, nil
}

func logSize(logs []BinaryLog, name string) (uint64, bool) {
	for _, l := range logs {
		if l.Name == name {
			return l.Size, true
		}
	}
	return 0, false
}

// continuity tells whether the server's binlog still holds the archive's
// last segment's file far enough to resume after it. It returns an empty
// reason when it does; the stream then proves it byte for byte.
func continuity(logs []BinaryLog, last *catalog.Segment) (catalog.TimelineReason, string) {
	if len(logs) == 0 {
		return catalog.ReasonDiverged, "the server has no binary logs"
	}
	if size, ok := logSize(logs, last.File); ok {
		if size < last.End {
			return catalog.ReasonDiverged, fmt.Sprintf("%s is %d bytes on the server, the archive holds it up to %d", last.File, size, last.End)
		}
		return "", ""
	}
	oldest := logs[0].Name
	n, err := catalog.FileNumber(oldest)
	if err == nil && sameBase(oldest, last.File) && n > last.FileNum {
		return catalog.ReasonPurged, fmt.Sprintf("%s from position %d on was purged from the server before it was archived; the oldest binlog there is %s", last.File, last.End, oldest)
	}
	return catalog.ReasonDiverged, fmt.Sprintf("the server no longer has %s (its binlogs run %s…%s)", last.File, oldest, logs[len(logs)-1].Name)
}

// planLogsWait bounds how long planning waits for the server's binlog list
// with --ack (see planLogs).
const planLogsWait = 2 * time.Second

// planLogs lists the server's binlogs for the continuity check. With
// --ack, commits may be waiting for this streamer's acknowledgement, and
// MariaDB holds its binlog's lock while several do: the list would wait
// for the server's timeout, and every commit with it. So the list is
// given up after planLogsWait (listed false); the stream then proves that
// the server continues the archive (it must re-send the last archived
// event byte for byte, and a purged file is refused with error 1236).
func (s *Streamer) planLogs(ctx context.Context) (logs []BinaryLog, listed bool, err error) {
	if !s.Ack.Enabled() {
		logs, err = s.src().BinaryLogs(ctx)
		return logs, err == nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, planLogsWait)
	defer cancel()
	logs, err = s.src().BinaryLogs(lctx)
	if err != nil && lctx.Err() != nil && ctx.Err() == nil {
		return nil, false, nil
	}
	return logs, err == nil, err
}

func sameBase(a, b string) bool {
	i, j := strings.LastIndexByte(a, '.'), strings.LastIndexByte(b, '.')
	return i > 0 && j > 0 && a[:i] == b[:j]
}

// recheck runs after a broken stream: if the server no longer continues the
// archive where the writer stands, it starts a new timeline.
func (s *Streamer) recheck(ctx context.Context) error {
	w := s.writer()
	info, err := s.src().Info(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	prev := s.info
	s.info = info
	s.mu.Unlock()
	if prev.UUID != "" && info.UUID != "" && prev.UUID != info.UUID {
		return s.startNewTimeline(ctx, info, catalog.ReasonDiverged, fmt.Sprintf("server uuid changed from %s to %s", prev.UUID, info.UUID))
	}
	logs, listed, err := s.planLogs(ctx)
	if err != nil || !listed {
		return err // not listed: the stream proves continuity (see planLogs)
	}
	pos := w.Position()
	n, _ := catalog.FileNumber(pos.File)
	probe := &catalog.Segment{File: pos.File, FileNum: n, End: pos.Pos}
	if reason, detail := continuity(logs, probe); reason != "" {
		return s.startNewTimelineAfter(ctx, info, reason, detail, &pos, logs)
	}
	return nil
}

func (s *Streamer) startNewTimeline(ctx context.Context, info ServerInfo, reason catalog.TimelineReason, detail string) error {
	var parentEnd *catalog.Position
	if w := s.writer(); w != nil {
		p := w.Position()
		parentEnd = &p
	}
	logs, err := s.src().BinaryLogs(ctx)
	if err != nil {
		return err
	}
	return s.startNewTimelineAfter(ctx, info, reason, detail, parentEnd, logs)
}

// startNewTimelineAfter records a new timeline that starts at the oldest
// binlog the server has, and switches the writer to it.
func (s *Streamer) startNewTimelineAfter(ctx context.Context, info ServerInfo, reason catalog.TimelineReason, detail string,
	parentEnd *catalog.Position, logs []BinaryLog) error {
	return s.beginTimeline(ctx, info, reason, detail, parentEnd, logs, nil)
}

// beginTimeline is startNewTimelineAfter; continues, for a timeline of
// reason failover, are the last archived GTIDs the new server holds.
func (s *Streamer) beginTimeline(ctx context.Context, info ServerInfo, reason catalog.TimelineReason, detail string,
	parentEnd *catalog.Position, logs []BinaryLog, continues []string) error {
	if len(logs) == 0 {
		return errors.New("the server lists no binary logs")
	}
	if old := s.writer(); old != nil {
		if err := old.Close(); err != nil {
			return err // a broken writer (ErrSpool): streaming restarts from the spool
		}
	}
	s.mu.Lock()
	parent := s.lastTL
	id := parent + 1
	s.mu.Unlock()
	tl := &catalog.Timeline{
		ID: id, UID: catalog.NewTimelineUID(), Reason: reason, Detail: detail, Start: catalog.Position{File: logs[0].Name, Pos: FirstEventPos},
		RestoreID: s.restoreID,
		Flavor:    string(info.Flavor), ServerVersion: info.Version, ServerID: info.ServerID, ServerUUID: info.UUID,
		GTIDState: info.GTIDState, Created: time.Now().UTC(), Agent: s.Agent, Continues: continues,
	}
	if parent != 0 {
		tl.Parent = parent
		tl.ParentEnd = parentEnd
		if reason == catalog.ReasonPurged && parentEnd != nil {
			tl.Missing = missingFiles(*parentEnd, logs[0].Name)
		}
	}
	if err := s.Spool.PutTimeline(tl); err != nil {
		return fmt.Errorf("%w: %w", ErrSpool, err)
	}
	s.up.Poke()
	s.mu.Lock()
	s.timelinesBegun++
	s.mu.Unlock()
	switch reason {
	case catalog.ReasonFirst:
		s.Logger.Info("archive started", "timeline", id.String(), "from", tl.Start.String())
	case catalog.ReasonFailover:
		s.Logger.Warn("following the new primary: continuing the archive on a new timeline", "timeline", id.String(), "detail", detail,
			"from", tl.Start.String())
	default:
		s.Logger.Error("GAP in the archive: starting a new timeline", "timeline", id.String(), "reason", string(reason),
			"detail", detail, "from", tl.Start.String())
		s.mu.Lock()
		s.gaps++
		s.mu.Unlock()
		if s.Metrics != nil {
			s.Metrics.Gaps.Inc()
		}
	}
	s.mu.Lock()
	s.lastTL = id
	s.archived = catalog.GTIDSequence{}
	s.mu.Unlock()
	return s.useWriter(id, tl.UID, func(w *Writer) error { return w.StartAt(tl.Start, nil) })
}

// missingFiles names the binlog files between the archive's end and the
// server's oldest file, assuming the usual BASE.NNNNNN naming.
func missingFiles(end catalog.Position, oldest string) []string {
	from, err1 := catalog.FileNumber(end.File)
	to, err2 := catalog.FileNumber(oldest)
	if err1 != nil || err2 != nil || !sameBase(end.File, oldest) || to <= from {
		return []string{fmt.Sprintf("%s from %d", end.File, end.Pos)}
	}
	i := strings.LastIndexByte(end.File, '.')
	base, width := end.File[:i+1], len(end.File)-i-1
	out := []string{fmt.Sprintf("%s from %d", end.File, end.Pos)}
	for n := from + 1; n < to && len(out) < 1000; n++ {
		out = append(out, fmt.Sprintf("%s%0*d", base, width, n))
	}
	return out
}

func (s *Streamer) useWriter(tl catalog.TimelineID, uid string, position func(*Writer) error) error {
	s.mu.Lock()
	server := s.info
	s.streamedID = server.ServerID
	s.mu.Unlock()
	w, err := NewWriter(WriterConfig{Spool: s.Spool, Timeline: tl, TimelineUID: uid, MaxSegment: s.MaxSegment,
		ServerID: server.ServerID, ServerUUID: server.UUID,
		OnSeal: func(seg *catalog.Segment) {
			s.noteArchived(seg)
			s.up.Poke()
		}})
	if err != nil {
		return err
	}
	if err := position(w); err != nil {
		return err
	}
	s.mu.Lock()
	s.w, s.timeline = w, tl
	s.mu.Unlock()
	if s.Metrics != nil {
		s.Metrics.Timeline.Set(float64(tl))
	}
	return nil
}

// restoreMarker is what a restore writes into the datadir it produced
// (restore.MarkerFile); the streamer needs only its id and target.
type restoreMarker struct {
	ID     string `json:"id"`
	Target string `json:"target"`
}

// readRestoreMarker reads the marker at RestoreMarker, if any.
func (s *Streamer) readRestoreMarker() (*restoreMarker, error) {
	if s.RestoreMarker == "" {
		return nil, nil
	}
	b, err := os.ReadFile(s.RestoreMarker)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m restoreMarker
	if err := json.Unmarshal(b, &m); err != nil || m.ID == "" {
		return nil, fmt.Errorf("%s is not a restore marker: %v", s.RestoreMarker, err)
	}
	return &m, nil
}
