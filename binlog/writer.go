package binlog

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// DefaultMaxSegment is the uncompressed size at which a segment is sealed
// even before the flush interval ends.
const DefaultMaxSegment = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrDiverged is returned by Writer.Handle when a resumed stream does not
// continue the archived bytes: the server's binlog is not the one archived.
var ErrDiverged = errors.New("server binlog diverged from the archive")

// ErrStreamHole is returned by Writer.Handle when the stream skips bytes.
var ErrStreamHole = errors.New("replication stream skipped bytes")

// ErrSpool is wrapped by the errors of a Writer that could not write, seal
// or record a segment in the spool. The writer is then broken: the bytes it
// held are lost from the spool, so streaming must start again from what the
// spool and the archive hold, never go on after them.
var ErrSpool = errors.New("spool failed")

// Writer turns the raw events of a replication stream into sealed segments
// in the spool. It writes them uncompressed: compression happens in the
// uploader, on another core, so that the goroutine reading the stream does
// as little as possible per byte. It keeps the archive byte-for-byte
// identical to the server's binlog: events the server makes up for the
// stream are dropped, and every kept event must start where the previous one
// ended. It is safe for concurrent use (Handle from the stream, Flush from a
// timer).
type Writer struct {
	spool       *Spool
	timeline    catalog.TimelineID
	timelineUID string
	maxSegment  int64
	onSeal      func(*catalog.Segment)
	now         func() time.Time
	serverID    uint32
	serverUUID  string

	mu      sync.Mutex
	file    string
	fileNum uint64
	pos     uint64
	prevEnd *catalog.Position
	format  Format
	tracker Tracker
	// expect is the already-archived event that a resumed stream must start with.
	expect    *catalog.EventRef
	lastEvent catalog.EventRef
	// lastFile is the file lastEvent is in: after a Rotate it is not w.file.
	lastFile string
	seg      *openSegment
	// broken is the spool error that broke the writer (see ErrSpool).
	broken error
	// sealedEnd is where the last sealed segment ends.
	sealedEnd catalog.Position
}

type openSegment struct {
	opened, last time.Time // when the segment got its first and its last event
	f            spoolFile
	w            *bufio.Writer
	sha          hash.Hash
	rec          catalog.Segment
	// head is what recovering the partial file needs (see Writer.Sync);
	// headWritten says it is in the spool beside the file.
	head        partialHead
	headWritten bool
	// synced is where the bytes Sync made durable end.
	synced uint64
}

// WriterConfig configures a Writer.
type WriterConfig struct {
	Spool    *Spool
	Timeline catalog.TimelineID
	// TimelineUID is the timeline record's UID, stamped on every segment.
	TimelineUID string
	// MaxSegment is the uncompressed size that seals a segment (default DefaultMaxSegment).
	MaxSegment int64
	// OnSeal is called (with the writer's lock held) after each segment is sealed.
	OnSeal func(*catalog.Segment)
	// ServerID and ServerUUID name the server the segments come from.
	ServerID   uint32
	ServerUUID string
}

// NewWriter returns a writer for a timeline that is positioned nowhere; call
// StartAt or ResumeAfter before Handle.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.MaxSegment <= 0 {
		cfg.MaxSegment = DefaultMaxSegment
	}
	return &Writer{spool: cfg.Spool, timeline: cfg.Timeline, timelineUID: cfg.TimelineUID, maxSegment: cfg.MaxSegment,
		onSeal: cfg.OnSeal, now: time.Now, serverID: cfg.ServerID, serverUUID: cfg.ServerUUID}, nil
}

// StartAt positions the writer at the beginning of a file (pos 4) or at a
// position where no transaction is open. prevEnd, if set, is where the
// archive of the previous file ended.
func (w *Writer) StartAt(p catalog.Position, prevEnd *catalog.Position) error {
	n, err := catalog.FileNumber(p.File)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.file, w.fileNum, w.pos, w.prevEnd, w.expect = p.File, n, p.Pos, prevEnd, nil
	w.tracker.Reset()
	return nil
}

// ResumeAfter positions the writer to continue after the archived segment
// last. The stream must be started at ResumePoint: its first event must be
// last's final event, byte for byte, which proves that the server's binlog
// still continues the archive.
func (w *Writer) ResumeAfter(last *catalog.Segment) error {
	var st *TxnState
	if len(last.OpenTxn) > 0 && string(last.OpenTxn) != "null" {
		st = new(TxnState)
		if err := json.Unmarshal(last.OpenTxn, st); err != nil {
			return fmt.Errorf("decode open transaction of %s: %w", last.Ref().RecordKey(), err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.file, w.fileNum, w.pos = last.File, last.FileNum, last.End
	w.prevEnd = nil
	w.lastEvent, w.lastFile = last.LastEvent, last.File
	e := last.LastEvent
	w.expect = &e
	w.tracker.Reset()
	w.tracker.Restore(st)
	if last.FileEnds {
		// The last event was a Rotate or Stop; what follows starts a new file
		// chained to this one.
		w.prevEnd = &catalog.Position{File: last.File, Pos: last.End}
	}
	return nil
}

// ResumePoint is where to start the replication stream so that it re-sends
// the last archived event (see ResumeAfter), or the writer's start position.
func (w *Writer) ResumePoint() catalog.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.expect != nil {
		return catalog.Position{File: w.file, Pos: w.expect.Pos}
	}
	return catalog.Position{File: w.file, Pos: w.pos}
}

// Rearm makes the writer expect its own last event again, for reconnecting a
// stream that broke: the new stream re-sends that event and so proves it
// continues the same binlog. Any open segment is sealed first.
func (w *Writer) Rearm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.broken
	}
	if err := w.sealLocked(); err != nil {
		return err
	}
	if w.lastEvent.Size != 0 && w.expect == nil {
		e := w.lastEvent
		w.expect = &e
		if w.lastFile != w.file {
			// The last event was a Rotate (or Stop) ending lastFile: step back
			// into that file, so that the re-sent event moves us forward again.
			n, err := catalog.FileNumber(w.lastFile)
			if err != nil {
				return err
			}
			w.file, w.fileNum = w.lastFile, n
			w.tracker.Reset()
		}
		w.pos = e.Pos + uint64(e.Size)
	}
	return nil
}

// Position returns the position after the last event handled.
func (w *Writer) Position() catalog.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return catalog.Position{File: w.file, Pos: w.pos}
}

// Handle takes one event from the replication stream, header included.
func (w *Writer) Handle(ev []byte) error {
	h, err := ParseHeader(ev)
	if err != nil {
		return err
	}
	if int(h.Size) != len(ev) {
		return fmt.Errorf("%w: header says %d bytes, stream gave %d", ErrMalformed, h.Size, len(ev))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.broken
	}
	if h.Artificial() {
		return w.handleArtificialLocked(h, ev)
	}
	start, err := w.eventStartLocked(h)
	if err != nil {
		return err
	}
	ref := catalog.EventRef{Pos: start, Size: h.Size, CRC32C: crc32.Checksum(ev, castagnoli)}
	if w.expect != nil {
		return w.matchResumeLocked(h, ev, ref)
	}
	if start != w.pos {
		return fmt.Errorf("%w: %s expected an event at %d, got one at %d", ErrStreamHole, w.file, w.pos, start)
	}
	if h.Type == FormatDescription {
		f, err := ParseFormat(ev)
		if err != nil {
			return err
		}
		w.format = f
	}
	tx, err := w.tracker.Feed(ev, start)
	if err != nil {
		return fmt.Errorf("%s at %d: %w", w.file, start, err)
	}
	if err := w.appendLocked(ev, start); err != nil {
		return err
	}
	end := start + uint64(h.Size)
	w.pos = end
	w.lastEvent, w.lastFile = ref, w.file
	r := &w.seg.rec
	recordEvent(r, h, ev, ref)
	if tx != nil {
		recordTxn(r, tx)
	}
	if open, _ := w.tracker.Open(); !open {
		r.TxnEnd = end
	}
	return w.endEventLocked(h, ev)
}

// handleArtificialLocked follows the events the server makes up for the
// stream; they are not in its binlog, so none is archived.
func (w *Writer) handleArtificialLocked(h Header, ev []byte) error {
	switch h.Type {
	case RotateEvent:
		// The stream's fake rotate names the file that follows.
		name, pos, err := ParseFakeRotate(ev)
		if err != nil {
			return err
		}
		if name != w.file {
			return w.switchFileLocked(name, pos)
		}
	case FormatDescription:
		// Re-sent when the stream starts inside a file.
		f, err := ParseFormat(ev)
		if err != nil {
			return err
		}
		w.format = f
		w.tracker.SetFormat(f)
	}
	return nil
}

// eventStartLocked returns the position in the file where the event with
// header h starts.
func (w *Writer) eventStartLocked(h Header) (uint64, error) {
	switch {
	case h.NextPos == 0:
		// No position in the header (see Header.NextPos): the event starts
		// where the stream stands. The next event with a position proves it.
		if w.expect != nil {
			return w.expect.Pos, nil
		}
		return w.pos, nil
	case h.NextPos < h.Size:
		return 0, fmt.Errorf("%w: event next position %d before its size %d", ErrMalformed, h.NextPos, h.Size)
	default:
		return uint64(h.NextPos - h.Size), nil
	}
}

// matchResumeLocked checks that the first event of a resumed stream, ref,
// is the archived event the writer expects, and steps past it: it is
// archived already.
func (w *Writer) matchResumeLocked(h Header, ev []byte, ref catalog.EventRef) error {
	if ref != *w.expect {
		return fmt.Errorf("%w: %s expected event at %d (%d bytes, crc32c %08x), server sent event at %d (%d bytes, crc32c %08x)",
			ErrDiverged, w.file, w.expect.Pos, w.expect.Size, w.expect.CRC32C, ref.Pos, ref.Size, ref.CRC32C)
	}
	w.expect = nil
	w.pos = ref.Pos + uint64(h.Size)
	if h.Type == RotateEvent {
		return w.afterRotateLocked(ev)
	}
	return nil
}

// appendLocked writes the event that starts at start into the open
// segment, opening one if none is. A failure breaks the writer.
func (w *Writer) appendLocked(ev []byte, start uint64) error {
	if w.seg == nil {
		if err := w.openSegmentLocked(start); err != nil {
			return w.breakLocked(err)
		}
	}
	seg := w.seg
	seg.last = w.now()
	if seg.opened.IsZero() {
		seg.opened = seg.last
	}
	if _, err := seg.w.Write(ev); err != nil {
		return w.breakLocked(fmt.Errorf("write spool segment: %w", err))
	}
	seg.sha.Write(ev)
	return nil
}

// recordEvent adds the archived event ev, at ref, to the segment record r.
func recordEvent(r *catalog.Segment, h Header, ev []byte, ref catalog.EventRef) {
	r.End = ref.Pos + uint64(h.Size)
	r.Events++
	t := h.Time()
	if r.FirstEventTime.IsZero() {
		r.FirstEventTime = t
	}
	r.LastEventTime = t
	r.LastEvent = ref
	if h.Type == MariaDBGTIDEvent || h.Type == GTIDEvent || h.Type == GTIDTaggedEvent {
		if g, ok, err := EventGTID(ev); ok {
			r.GTIDs = catalog.AddGTID(r.GTIDs, g.Catalog())
		} else if errors.Is(err, ErrUnreadableGTID) {
			r.UnknownGTIDs++
		}
	}
}

// recordTxn adds the transaction tx, which an archived event completed, to
// the segment record r.
func recordTxn(r *catalog.Segment, tx *Txn) {
	r.Transactions++
	if r.FirstCommitTime.IsZero() {
		r.FirstCommitTime = tx.CommitTime
	}
	r.LastCommitTime = tx.CommitTime
	if tx.HasGTID {
		if r.FirstGTID == "" {
			r.FirstGTID = tx.GTID.String()
		}
		r.LastGTID = tx.GTID.String()
	}
}

// endEventLocked seals the open segment after an archived event that ends
// the file or fills the segment, and moves on after a Rotate.
func (w *Writer) endEventLocked(h Header, ev []byte) error {
	r := &w.seg.rec
	switch {
	case h.Type == RotateEvent:
		r.FileEnds = true
		if err := w.sealLocked(); err != nil {
			return err
		}
		return w.afterRotateLocked(ev)
	case h.Type == StopEvent:
		r.FileEnds = true
		return w.sealLocked()
	case int64(r.End-r.Start) >= w.maxSegment:
		return w.sealLocked()
	}
	return nil
}

// afterRotateLocked moves to the file a real Rotate event names.
func (w *Writer) afterRotateLocked(ev []byte) error {
	name, pos, err := w.format.ParseRotate(ev)
	if err != nil {
		return err
	}
	return w.switchFileLocked(name, pos)
}

func (w *Writer) switchFileLocked(name string, pos uint64) error {
	n, err := catalog.FileNumber(name)
	if err != nil {
		return err
	}
	if w.expect != nil {
		// Still waiting for the resume event: the stream moved on before
		// re-sending it, so the archived file is gone or shorter on the server.
		return fmt.Errorf("%w: stream moved to %s before re-sending %s at %d", ErrDiverged, name, w.file, w.expect.Pos)
	}
	if err := w.sealLocked(); err != nil {
		return err
	}
	if w.file != "" && w.pos > FirstEventPos {
		w.prevEnd = &catalog.Position{File: w.file, Pos: w.pos}
	}
	w.file, w.fileNum, w.pos = name, n, pos
	w.tracker.Reset()
	return nil
}

// breakLocked records a spool failure: the open segment is dropped and
// every later call fails, until the streamer replaces the writer.
func (w *Writer) breakLocked(err error) error {
	if seg := w.seg; seg != nil {
		w.seg = nil
		seg.f.Close()
		if !seg.headWritten {
			// Nothing of it was promised durable: the stream resumes
			// before it. One that was is recovered when the spool is
			// swept (see recoverPartials).
			os.Remove(seg.f.Name())
		}
	}
	if !errors.Is(err, ErrSpool) {
		err = fmt.Errorf("%w: %w", ErrSpool, err)
	}
	w.broken = err
	return err
}

// Broken returns the spool error that broke the writer, or nil.
func (w *Writer) Broken() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.broken
}

func (w *Writer) openSegmentLocked(start uint64) error {
	f, err := w.spool.createPartial()
	if err != nil {
		return err
	}
	w.seg = &openSegment{f: f, w: bufio.NewWriterSize(f, 256<<10), sha: sha256.New(), rec: catalog.Segment{
		Timeline: w.timeline, TimelineUID: w.timelineUID, File: w.file, FileNum: w.fileNum, Start: start, End: start,
		ServerVersion: w.format.ServerVersion, ServerID: w.serverID, ServerUUID: w.serverUUID,
	}}
	if start == FirstEventPos && w.prevEnd != nil {
		p := *w.prevEnd
		w.seg.rec.Prev = &p
	}
	w.seg.head = partialHead{Segment: w.seg.rec, OpenTxn: w.tracker.State()}
	w.seg.head.Format, w.seg.head.HaveFormat = w.tracker.Format()
	if !w.seg.head.HaveFormat && w.format.ServerVersion != "" {
		w.seg.head.Format, w.seg.head.HaveFormat = w.format, true
	}
	return nil
}

// Sync makes every event handled so far durable in the spool, and returns
// the position where they end: the open segment's bytes are written and
// fsynced, and the first time, a record of where the segment starts is
// stored beside them, from which an agent that crashed recovers the
// segment (see recoverPartials). A failure breaks the writer.
func (w *Writer) Sync() (catalog.Position, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return catalog.Position{}, w.broken
	}
	seg := w.seg
	if seg == nil || seg.rec.Events == 0 {
		return w.sealedEnd, nil
	}
	if !seg.headWritten {
		b, err := json.Marshal(seg.head)
		if err != nil {
			return catalog.Position{}, w.breakLocked(fmt.Errorf("encode partial segment head: %w", err))
		}
		if err := w.spool.writeAtomic(filepath.Base(seg.f.Name())+headSuffix, b); err != nil {
			return catalog.Position{}, w.breakLocked(err)
		}
		seg.headWritten = true
	}
	if seg.synced != seg.rec.End {
		if err := seg.w.Flush(); err != nil {
			return catalog.Position{}, w.breakLocked(fmt.Errorf("write spool segment: %w", err))
		}
		if err := seg.f.Sync(); err != nil {
			return catalog.Position{}, w.breakLocked(fmt.Errorf("sync spool segment: %w", err))
		}
		seg.synced = seg.rec.End
	}
	return catalog.Position{File: seg.rec.File, Pos: seg.rec.End}, nil
}

// Sealed returns where the last segment the writer sealed ends.
func (w *Writer) Sealed() catalog.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sealedEnd
}

// Pending reports whether a segment is open with events in it, how long
// ago it got its first event, and how long the stream has been quiet since
// its last one.
func (w *Writer) Pending() (age, quiet time.Duration, open bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seg == nil || w.seg.rec.Events == 0 {
		return 0, 0, false
	}
	now := w.now()
	return now.Sub(w.seg.opened), now.Sub(w.seg.last), true
}

// Flush seals the open segment, if it holds any event, so that it can be
// uploaded. It is called every flush interval.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.broken
	}
	return w.sealLocked()
}

// Close seals the open segment and releases the writer's resources. A
// broken writer only drops what it holds.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.broken
	}
	return w.sealLocked()
}

// sealLocked seals the open segment into the spool. Any failure breaks the
// writer (see ErrSpool): the segment's bytes are not in the spool.
func (w *Writer) sealLocked() error {
	seg := w.seg
	if seg == nil {
		return nil
	}
	if seg.rec.Events == 0 {
		w.seg = nil
		seg.f.Close()
		os.Remove(seg.f.Name())
		os.Remove(seg.f.Name() + headSuffix)
		return nil
	}
	cleanup := func(err error) error { return w.breakLocked(err) }
	if err := seg.w.Flush(); err != nil {
		return cleanup(fmt.Errorf("write spool segment: %w", err))
	}
	if err := seg.f.Sync(); err != nil {
		return cleanup(fmt.Errorf("sync spool segment: %w", err))
	}
	if err := seg.f.Close(); err != nil {
		return cleanup(fmt.Errorf("close spool segment: %w", err))
	}
	r := &seg.rec
	r.SHA256 = hex.EncodeToString(seg.sha.Sum(nil))
	r.ArchivedAt = w.now().UTC()
	if st := w.tracker.State(); st != nil {
		b, err := json.Marshal(st)
		if err != nil {
			return cleanup(fmt.Errorf("encode open transaction: %w", err))
		}
		r.OpenTxn = b
	}
	if r.ServerVersion == "" {
		r.ServerVersion = w.format.ServerVersion
	}
	if err := w.spool.Seal(seg.f.Name(), r, seg.headWritten); err != nil {
		// The data may have been renamed into place without its record.
		os.Remove(w.spool.DataPath(r))
		return cleanup(err)
	}
	w.seg = nil
	w.sealedEnd = catalog.Position{File: r.File, Pos: r.End}
	if seg.headWritten {
		// The segment is sealed: nothing is left to recover.
		os.Remove(seg.f.Name())
		os.Remove(seg.f.Name() + headSuffix)
	}
	if w.onSeal != nil {
		w.onSeal(r)
	}
	return nil
}
