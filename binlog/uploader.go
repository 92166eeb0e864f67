package binlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/backoff"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// Default intervals of the uploader.
const (
	DefaultUploadPoll   = time.Second
	DefaultRetryMin     = 200 * time.Millisecond
	DefaultRetryMax     = 30 * time.Second
	defaultPutTimeout   = 5 * time.Minute
	defaultSmallTimeout = 30 * time.Second
)

// Uploader moves sealed segments from the spool to storage in archive
// order: each timeline's record before its segments, and each segment's data
// first, then its index record, which is what makes it part of the archive.
// Nothing that is part of the archive is overwritten: every put is
// create-only, under keys that carry the uploader's writer generation (see
// catalog's generations). A data object already there without its record (an
// attempt interrupted between the two puts) is not part of the archive, and
// is replaced; a record already there is this generation's own earlier
// attempt, accepted when it describes the same bytes (same SHA-256).
//
// Before each segment it checks that no later generation has been claimed:
// if one has, another writer took the archive over, and the uploader stops
// with an error wrapping catalog.ErrFenced.
//
// The uploader never needs to decrypt what it wrote: when the store cannot
// read a record back (an encrypted archive and an agent given only the
// public recipients), a record already there under its own generation is
// its own earlier attempt, since one generation has one writer.
type Uploader struct {
	Spool   *Spool
	Store   storage.Storage
	Logger  *slog.Logger
	Metrics *Metrics
	// RetryMin and RetryMax bound the backoff after a failed upload.
	RetryMin, RetryMax time.Duration
	// OnSpoolDamage is called when a sealed segment in the spool cannot be
	// read back as sealed (missing, short, altered). The uploader has then
	// removed it and every later segment of its timeline from the spool:
	// streaming must start again from what the spool and the archive hold.
	OnSpoolDamage func(error)

	poke chan struct{}
	once sync.Once
	enc  *zstd.Encoder

	// putMu serializes what the uploader stores with checkpoints.
	putMu sync.Mutex
	gen   catalog.Generation
	// genNow is gen for readers that must not wait for an upload (/status).
	genNow atomic.Uint64
	// fence is where what this generation has stored ends: exact, as this
	// writer stored it.
	fence   catalog.ArchivePos
	genInfo catalog.GenerationRecord

	mu      sync.Mutex
	durable catalog.Position
	durTL   catalog.TimelineID
	// durCh is closed, and replaced, when durable moves.
	durCh   chan struct{}
	lastTx  time.Time
	lastErr error
}

// ErrSpoolDamaged is wrapped by the error of a sealed spool segment whose
// bytes are not what was sealed.
var ErrSpoolDamaged = errors.New("spooled segment is damaged")

func (u *Uploader) init() {
	u.once.Do(func() {
		u.poke = make(chan struct{}, 1)
		u.durCh = make(chan struct{})
		if u.RetryMin <= 0 {
			u.RetryMin = DefaultRetryMin
		}
		if u.RetryMax <= 0 {
			u.RetryMax = DefaultRetryMax
		}
		if u.Logger == nil {
			u.Logger = slog.New(slog.DiscardHandler)
		}
	})
}

// Poke asks the uploader to look at the spool now.
func (u *Uploader) Poke() {
	u.init()
	select {
	case u.poke <- struct{}{}:
	default:
	}
}

// Durable returns the timeline and position up to which the archive is in
// storage, and the commit time of the last transaction stored.
func (u *Uploader) Durable() (catalog.TimelineID, catalog.Position, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.durTL, u.durable, u.lastTx
}

// durableChanged returns a channel closed when the durable position
// next moves.
func (u *Uploader) durableChanged() <-chan struct{} {
	u.init()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.durCh
}

// initDurable records where the archive ended when this writer took it
// over, unless the uploader has stored something since.
func (u *Uploader) initDurable(tl catalog.TimelineID, p catalog.Position, lastTx time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.durTL == 0 {
		u.durTL, u.durable, u.lastTx = tl, p, lastTx
	}
}

// LastError returns the error of the last failed upload, nil after a success.
func (u *Uploader) LastError() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastErr
}

// Run uploads until ctx ends, retrying failures with capped exponential
// backoff. It returns an error only when another writer took the archive
// over (wrapping catalog.ErrFenced): this writer must stop.
func (u *Uploader) Run(ctx context.Context) error {
	u.init()
	b := backoff.New(u.RetryMin, u.RetryMax)
	t := time.NewTicker(DefaultUploadPoll)
	defer t.Stop()
	for {
		err := u.UploadPending(ctx)
		wait := DefaultUploadPoll
		switch {
		case err == nil:
			b.Reset()
		case errors.Is(err, catalog.ErrFenced):
			return err
		case ctx.Err() != nil:
		default:
			wait = b.Next()
			u.Logger.Warn("upload failed; segments stay in the spool", "err", err, "retry_in", wait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-u.poke:
		case <-timer.C:
		case <-t.C:
		}
		timer.Stop()
	}
}

// SetGeneration makes the uploader store under generation gen, which took
// the archive over at fence.
func (u *Uploader) SetGeneration(rec catalog.GenerationRecord) {
	u.putMu.Lock()
	defer u.putMu.Unlock()
	u.gen, u.fence, u.genInfo = rec.Gen, rec.Fence, rec
	u.genNow.Store(uint64(rec.Gen))
}

// Generation returns the generation the uploader stores under. It does
// not wait for an upload under way.
func (u *Uploader) Generation() catalog.Generation {
	return catalog.Generation(u.genNow.Load())
}

// Checkpoint claims the next writer generation, fenced at the exact end of
// what this uploader stored, and stores under it from then on. It proves
// that no other writer took the archive over since this one's generation
// began: a writer about to delete objects checkpoints first. It fails with
// an error wrapping catalog.ErrFenced when another writer did.
func (u *Uploader) Checkpoint(ctx context.Context) error {
	u.putMu.Lock()
	defer u.putMu.Unlock()
	if u.gen == 0 {
		return errors.New("checkpoint: the uploader has no writer generation yet")
	}
	rec := u.genInfo
	rec.Gen, rec.Fence, rec.Reason, rec.Created = u.gen+1, u.fence, catalog.GenerationCheckpoint, time.Now().UTC()
	c, err := catalog.PrepareClaim(u.Store, rec)
	if err != nil {
		return err
	}
	// A few tries: a put whose answer was lost is recognised on the next.
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, defaultSmallTimeout)
		err = c.Put(cctx)
		cancel()
		if err == nil || errors.Is(err, catalog.ErrFenced) || attempt == 2 || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return err
	}
	rec = c.Record()
	u.gen, u.genInfo = rec.Gen, rec
	u.genNow.Store(uint64(rec.Gen))
	if err := u.Spool.addGen(rec.Gen); err != nil {
		u.Logger.Warn("record the writer generation in the spool", "err", err)
	}
	return nil
}

// PutComplete stores a completeness record for the timeline the uploader
// has stored up to through, under its generation. It stores nothing unless
// everything up to through is in storage.
func (u *Uploader) PutComplete(ctx context.Context, through catalog.Position, at time.Time) error {
	u.putMu.Lock()
	defer u.putMu.Unlock()
	if u.gen == 0 {
		return nil
	}
	n, err := catalog.FileNumber(through.File)
	if err != nil {
		return err
	}
	c := &catalog.Complete{Timeline: u.fence.Timeline, Gen: u.gen, Through: through, FileNum: n, At: at.UTC(), Written: time.Now().UTC()}
	if c.Pos().Compare(u.fence) > 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, defaultSmallTimeout)
	defer cancel()
	if err := catalog.CheckGeneration(cctx, u.Store, u.gen); err != nil {
		return err
	}
	return catalog.PutComplete(cctx, u.Store, c)
}

// UploadPending uploads everything sealed in the spool, in archive order,
// stopping at the first failure.
func (u *Uploader) UploadPending(ctx context.Context) error {
	u.init()
	p, err := u.Spool.Pending()
	if err != nil {
		return err
	}
	u.putMu.Lock()
	defer u.putMu.Unlock()
	if u.gen == 0 && (len(p.Timelines) > 0 || len(p.Segments) > 0) {
		return errors.New("the writer has not taken the archive over yet")
	}
	ti := 0
	for _, seg := range p.Segments {
		for ti < len(p.Timelines) && p.Timelines[ti].ID <= seg.Timeline {
			if err := u.uploadTimeline(ctx, p.Timelines[ti]); err != nil {
				return u.fail(err)
			}
			ti++
		}
		if err := u.uploadSegment(ctx, seg); err != nil {
			return u.fail(err)
		}
	}
	for ; ti < len(p.Timelines); ti++ {
		if err := u.uploadTimeline(ctx, p.Timelines[ti]); err != nil {
			return u.fail(err)
		}
	}
	u.mu.Lock()
	u.lastErr = nil
	u.mu.Unlock()
	return nil
}

func (u *Uploader) fail(err error) error {
	u.mu.Lock()
	u.lastErr = err
	u.mu.Unlock()
	u.Metrics.error("upload")
	return err
}

func (u *Uploader) uploadTimeline(ctx context.Context, pending *catalog.Timeline) error {
	cctx, cancel := context.WithTimeout(ctx, defaultSmallTimeout)
	defer cancel()
	if err := catalog.CheckGeneration(cctx, u.Store, u.gen); err != nil {
		return err
	}
	tl := *pending
	tl.Gen = u.gen
	key := tl.Key()
	err := catalog.PutJSON(cctx, u.Store, key, &tl, true)
	if errors.Is(err, storage.ErrExist) {
		var have catalog.Timeline
		gerr := catalog.GetJSON(cctx, u.Store, key, &have)
		switch {
		case errors.Is(gerr, crypt.ErrNoIdentity):
			u.Logger.Info("timeline record already stored by an earlier attempt; it is encrypted, so not compared", "key", key)
		case gerr != nil:
			return gerr
		case have.Start != tl.Start || have.Reason != tl.Reason || have.UID != tl.UID:
			return fmt.Errorf("timeline %s already exists with other content (start %s, reason %s): refusing to overwrite", tl.ID, have.Start, have.Reason)
		}
		err = nil
	}
	if err != nil {
		return err
	}
	if err := u.Spool.uploadedTimeline(&tl); err != nil {
		return err
	}
	if f := catalog.TimelineStartPos(tl.ID); f.Compare(u.fence) > 0 {
		u.fence = f
	}
	return u.Spool.RemoveTimeline(tl.ID)
}

func (u *Uploader) uploadSegment(ctx context.Context, pending *catalog.Segment) error {
	cctx, cancel := context.WithTimeout(ctx, defaultSmallTimeout)
	err := catalog.CheckGeneration(cctx, u.Store, u.gen)
	cancel()
	if err != nil {
		return err
	}
	switch u.follows(pending) {
	case behind:
		// Stored already (its upload done, its removal from the spool not).
		return u.Spool.RemoveSegment(pending)
	case apart:
		// A segment sealed after one that was dropped from the spool: the
		// stream starts again before it.
		return u.spoolDamaged(pending, fmt.Errorf("%w: %s does not continue what this writer stored (up to %s)",
			ErrSpoolDamaged, pending.Ref().RecordKey(), u.fence))
	}
	seg := *pending
	seg.Gen = u.gen
	ref := seg.Ref()
	stored, err := u.putSegment(ctx, pending, &seg)
	if errors.Is(err, ErrSpoolDamaged) {
		return u.spoolDamaged(pending, err)
	}
	if err != nil {
		return err
	}
	seg.StoredSize = stored
	cctx, cancel = context.WithTimeout(ctx, defaultSmallTimeout)
	defer cancel()
	err = catalog.PutJSON(cctx, u.Store, ref.RecordKey(), &seg, true)
	if errors.Is(err, storage.ErrExist) {
		err = u.sameRecord(cctx, &seg)
	}
	if err != nil {
		return err
	}
	// Stored: the fence and the durable position move now, whatever the
	// spool's bookkeeping below does. Should that fail, the segment stays
	// in the spool, and the next round finds it behind the fence and only
	// removes it; a restart meanwhile may drop it as stored already, and a
	// later segment then still continues the fence.
	if f := ref.EndPos(); f.Compare(u.fence) > 0 {
		u.fence = f
	}
	now := time.Now()
	u.mu.Lock()
	u.durTL = seg.Timeline
	u.durable = catalog.Position{File: seg.File, Pos: seg.End}
	if !seg.LastCommitTime.IsZero() {
		u.lastTx = seg.LastCommitTime
	}
	close(u.durCh)
	u.durCh = make(chan struct{})
	u.mu.Unlock()
	u.Metrics.uploaded(&seg, now)
	u.Logger.Debug("segment archived", "key", ref.DataKey(), "bytes", seg.Size(), "stored", seg.StoredSize,
		"transactions", seg.Transactions)
	if err := u.Spool.uploadedSegment(&seg); err != nil {
		return err
	}
	return u.Spool.RemoveSegment(pending)
}

// How a spooled segment stands to what the uploader stored.
const (
	continues = iota
	behind    // it ends where what was stored ends, or before
	apart     // it starts elsewhere than where what was stored ends
)

// follows tells how seg stands to u.fence, the exact end of what this
// writer stored: only a segment that starts there may be stored next, so
// that a segment the spool lost is never skipped over.
func (u *Uploader) follows(seg *catalog.Segment) int {
	f := u.fence
	switch {
	case seg.Timeline > f.Timeline:
		return continues // its timeline's record goes first, and moves the fence
	case seg.Timeline < f.Timeline:
		return behind
	case f.FileNum == 0 && f.Pos == 0:
		return continues // the timeline's start: readers check it against its record
	case seg.FileNum < f.FileNum || (seg.FileNum == f.FileNum && seg.End <= f.Pos):
		return behind
	case seg.FileNum == f.FileNum:
		if seg.Start == f.Pos {
			return continues
		}
	case seg.Start == FirstEventPos && seg.Prev != nil && seg.Prev.Pos == f.Pos:
		if n, err := catalog.FileNumber(seg.Prev.File); err == nil && n == f.FileNum {
			return continues
		}
	}
	return apart
}

// spoolDamaged drops a damaged spooled segment and every later one of its
// timeline, and asks for streaming to start again from what is left.
func (u *Uploader) spoolDamaged(seg *catalog.Segment, cause error) error {
	p, err := u.Spool.Pending()
	if err == nil {
		for _, s := range p.Segments {
			if s.Timeline == seg.Timeline && !segmentBefore(s, seg) {
				if rerr := u.Spool.RemoveSegment(s); rerr != nil && err == nil {
					err = rerr
				}
			}
		}
	}
	u.Logger.Error("a spooled segment is damaged: dropped it and the segments after it; streaming starts again from the last intact one",
		"segment", seg.Ref().RecordKey(), "err", cause)
	u.Metrics.error("spool")
	if u.OnSpoolDamage != nil {
		u.OnSpoolDamage(cause)
	}
	if err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// segmentBefore reports whether a lies before b in the archive.
func segmentBefore(a, b *catalog.Segment) bool {
	if a.Timeline != b.Timeline {
		return a.Timeline < b.Timeline
	}
	if a.FileNum != b.FileNum {
		return a.FileNum < b.FileNum
	}
	return a.Start < b.Start
}

// sameRecord checks a segment's index record found already in storage: it
// must describe the same bytes. A record the store cannot decrypt is this
// spool's own earlier attempt (the lease allows no other writer).
func (u *Uploader) sameRecord(ctx context.Context, seg *catalog.Segment) error {
	key := seg.Ref().RecordKey()
	var have catalog.Segment
	err := catalog.GetJSON(ctx, u.Store, key, &have)
	switch {
	case errors.Is(err, crypt.ErrNoIdentity):
		u.Logger.Info("index record already stored by an earlier attempt; it is encrypted, so not compared", "key", key)
		return nil
	case err != nil:
		return err
	case have.SHA256 != seg.SHA256:
		return fmt.Errorf("index record %s already exists for other bytes: refusing to overwrite", key)
	}
	return nil
}

// putSegment compresses a spooled segment into storage, create-only, and
// returns the stored size. A data object already there comes from an
// attempt whose answer was lost, or from an agent killed before it wrote the
// record. If the record is there too, the segment is archived (sameRecord
// checks the record); if not, the object is not part of the archive and is
// replaced by this segment's bytes, so that the record written next always
// describes bytes this uploader put. Neither needs to read the object back,
// so an agent that holds only the public recipients of an encrypted archive
// retries like any other.
func (u *Uploader) putSegment(ctx context.Context, pending, seg *catalog.Segment) (int64, error) {
	key := seg.Ref().DataKey()
	cctx, cancel := context.WithTimeout(ctx, defaultPutTimeout)
	defer cancel()
	info, err := u.compressTo(cctx, pending, seg)
	if err == nil {
		return info.Size, nil
	}
	if !errors.Is(err, storage.ErrExist) {
		return 0, err // the store's errors name the key
	}
	recKey := seg.Ref().RecordKey()
	if _, serr := u.Store.Stat(cctx, recKey); serr == nil {
		if err := u.sameRecord(cctx, seg); err != nil {
			return 0, err
		}
		have, err := u.Store.Stat(cctx, key)
		if err != nil {
			return 0, err
		}
		return have.Size, nil
	} else if !errors.Is(serr, storage.ErrNotExist) {
		return 0, serr
	}
	u.Logger.Info("replacing a data object left without its index record by an interrupted upload", "key", key)
	if err := u.Store.Delete(cctx, key); err != nil {
		return 0, err
	}
	info, err = u.compressTo(cctx, pending, seg)
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

// compressTo puts the spooled segment's bytes, zstd-compressed,
// create-only under seg's key. It checks the bytes it reads against the
// SHA-256 and length they were sealed with, and fails the put (nothing is
// stored) with an error wrapping ErrSpoolDamaged when they differ.
func (u *Uploader) compressTo(ctx context.Context, pending, seg *catalog.Segment) (storage.ObjectInfo, error) {
	if err := u.Spool.check(OpRead); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("read spool segment: %w", err)
	}
	f, err := os.Open(u.Spool.DataPath(pending))
	if errors.Is(err, os.ErrNotExist) {
		return storage.ObjectInfo{}, fmt.Errorf("%w: %s: its data file is gone", ErrSpoolDamaged, pending.Ref().RecordKey())
	}
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	if u.enc == nil {
		if u.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2)); err != nil {
			return storage.ObjectInfo{}, fmt.Errorf("zstd encoder: %w", err)
		}
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		u.enc.Reset(pw)
		sum := sha256.New()
		n, err := io.Copy(u.enc, io.TeeReader(f, sum))
		if err == nil && (uint64(n) != pending.Size() || hex.EncodeToString(sum.Sum(nil)) != pending.SHA256) {
			err = fmt.Errorf("%w: %s: the spool holds %d bytes with another SHA-256 than the %d sealed", ErrSpoolDamaged,
				pending.Ref().RecordKey(), n, pending.Size())
		}
		if cerr := u.enc.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
		done <- err
	}()
	info, err := u.Store.Put(ctx, seg.Ref().DataKey(), pr, storage.PutOptions{IfNotExists: true})
	pr.CloseWithError(errors.New("upload ended"))
	if rerr := <-done; errors.Is(rerr, ErrSpoolDamaged) {
		return storage.ObjectInfo{}, rerr
	}
	return info, err
}
