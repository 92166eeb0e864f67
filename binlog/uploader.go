package binlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
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
// order: each segment's data first, then its index record, which is what
// makes it part of the archive. Nothing that is part of the archive is
// overwritten: every put is create-only. A data object already there
// without its record (an attempt interrupted between the two puts) is not
// part of the archive, and is replaced; a record already there is accepted
// only if it describes the same bytes (same SHA-256).
//
// The uploader never needs to decrypt what it wrote: when the store cannot
// read a record back (an encrypted archive and an agent given only the
// public recipients), a record already there is taken for this spool's own
// earlier attempt, which the archive's lease (one writer) guarantees.
type Uploader struct {
	Spool   *Spool
	Store   storage.Storage
	Logger  *slog.Logger
	Metrics *Metrics
	// RetryMin and RetryMax bound the backoff after a failed upload.
	RetryMin, RetryMax time.Duration

	poke chan struct{}
	once sync.Once
	enc  *zstd.Encoder

	mu      sync.Mutex
	durable catalog.Position
	durTL   catalog.TimelineID
	lastTx  time.Time
	lastErr error
}

func (u *Uploader) init() {
	u.once.Do(func() {
		u.poke = make(chan struct{}, 1)
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

// LastError returns the error of the last failed upload, nil after a success.
func (u *Uploader) LastError() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastErr
}

// Run uploads until ctx ends, retrying failures with capped exponential
// backoff. Before returning it makes one last attempt to drain the spool.
func (u *Uploader) Run(ctx context.Context) error {
	u.init()
	backoff := u.RetryMin
	t := time.NewTicker(DefaultUploadPoll)
	defer t.Stop()
	for {
		err := u.UploadPending(ctx)
		switch {
		case err == nil:
			backoff = u.RetryMin
		case ctx.Err() != nil:
		default:
			u.Logger.Warn("upload failed; segments stay in the spool", "err", err, "retry_in", backoff)
		}
		wait := DefaultUploadPoll
		if err != nil {
			wait = backoff
			backoff = min(backoff*2, u.RetryMax)
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

// UploadPending uploads everything sealed in the spool, in order, stopping
// at the first failure.
func (u *Uploader) UploadPending(ctx context.Context) error {
	u.init()
	p, err := u.Spool.Pending()
	if err != nil {
		return err
	}
	for _, tl := range p.Timelines {
		if err := u.uploadTimeline(ctx, tl); err != nil {
			return u.fail(err)
		}
	}
	for _, seg := range p.Segments {
		if err := u.uploadSegment(ctx, seg); err != nil {
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

func (u *Uploader) uploadTimeline(ctx context.Context, tl *catalog.Timeline) error {
	cctx, cancel := context.WithTimeout(ctx, defaultSmallTimeout)
	defer cancel()
	key := catalog.TimelineKey(tl.ID)
	err := catalog.PutJSON(cctx, u.Store, key, tl, true)
	if errors.Is(err, storage.ErrExist) {
		var have catalog.Timeline
		gerr := catalog.GetJSON(cctx, u.Store, key, &have)
		switch {
		case errors.Is(gerr, crypt.ErrNoIdentity):
			u.Logger.Info("timeline record already stored by an earlier attempt; it is encrypted, so not compared", "key", key)
		case gerr != nil:
			return gerr
		case have.Start != tl.Start || have.Reason != tl.Reason:
			return fmt.Errorf("timeline %s already exists with other content (start %s, reason %s): refusing to overwrite", tl.ID, have.Start, have.Reason)
		}
		err = nil
	}
	if err != nil {
		return err
	}
	if err := u.Spool.uploadedTimeline(tl); err != nil {
		return err
	}
	return u.Spool.RemoveTimeline(tl.ID)
}

func (u *Uploader) uploadSegment(ctx context.Context, seg *catalog.Segment) error {
	ref := seg.Ref()
	stored, err := u.putSegment(ctx, seg)
	if err != nil {
		return err
	}
	seg.StoredSize = stored
	cctx, cancel := context.WithTimeout(ctx, defaultSmallTimeout)
	defer cancel()
	err = catalog.PutJSON(cctx, u.Store, ref.RecordKey(), seg, true)
	if errors.Is(err, storage.ErrExist) {
		err = u.sameRecord(cctx, seg)
	}
	if err != nil {
		return err
	}
	if err := u.Spool.uploadedSegment(seg); err != nil {
		return err
	}
	if err := u.Spool.RemoveSegment(seg); err != nil {
		return err
	}
	now := time.Now()
	u.mu.Lock()
	u.durTL = seg.Timeline
	u.durable = catalog.Position{File: seg.File, Pos: seg.End}
	if !seg.LastCommitTime.IsZero() {
		u.lastTx = seg.LastCommitTime
	}
	u.mu.Unlock()
	u.Metrics.uploaded(seg, now)
	u.Logger.Debug("segment archived", "key", ref.DataKey(), "bytes", seg.Size(), "stored", seg.StoredSize,
		"transactions", seg.Transactions)
	return nil
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
func (u *Uploader) putSegment(ctx context.Context, seg *catalog.Segment) (int64, error) {
	key := seg.Ref().DataKey()
	cctx, cancel := context.WithTimeout(ctx, defaultPutTimeout)
	defer cancel()
	info, err := u.compressTo(cctx, seg)
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
	info, err = u.compressTo(cctx, seg)
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

// compressTo puts the spooled segment's bytes, zstd-compressed, create-only.
func (u *Uploader) compressTo(ctx context.Context, seg *catalog.Segment) (storage.ObjectInfo, error) {
	f, err := os.Open(u.Spool.DataPath(seg))
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
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.enc.Reset(pw)
		_, err := io.Copy(u.enc, f)
		if cerr := u.enc.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	info, err := u.Store.Put(ctx, seg.Ref().DataKey(), pr, storage.PutOptions{IfNotExists: true})
	pr.CloseWithError(errors.New("upload ended"))
	<-done
	return info, err
}
