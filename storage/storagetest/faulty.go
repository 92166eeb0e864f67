package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ErrInjected is wrapped by every error that Faulty makes up, so a test can
// tell an injected fault from a real one with errors.Is.
var ErrInjected = errors.New("injected storage fault")

// ErrDown is wrapped by the errors of every call made while a Faulty is
// Down. It wraps ErrInjected.
var ErrDown = fmt.Errorf("%w: storage is down", ErrInjected)

// Faults says which faults a Faulty injects. Rates are probabilities per
// call, from 0 (never) to 1 (always).
type Faults struct {
	// PutErrRate is how often a Put fails part-way: the wrapped store is
	// handed a reader that breaks off after some bytes, so its own
	// all-or-nothing handling is exercised and nothing is stored.
	PutErrRate float64
	// PutAckLossRate is how often a Put that succeeded is reported as an
	// error, like a response lost on the network: the object is stored,
	// but the caller cannot know it.
	PutAckLossRate float64
	// ReadErrRate is how often Open, OpenRange, Stat and List fail before
	// reaching the wrapped store.
	ReadErrRate float64
	// ReadCutRate is how often a reader from Open or OpenRange breaks off
	// after some bytes, as a dropped connection would.
	ReadCutRate float64
	// DeleteErrRate is how often Delete fails without deleting.
	DeleteErrRate float64
	// PutDelay is waited before each Put, or until its context ends.
	PutDelay time.Duration
	// Delay is waited before every other call, or until its context ends.
	Delay time.Duration
}

// cutWithin bounds where an injected mid-stream failure happens, so that
// small objects and the first part of large ones are both hit.
const cutWithin = 64 << 10

// Faulty wraps a storage.Storage and injects errors and delays into its
// calls as configured. Its choices come from a random source seeded at
// construction, so a sequence of calls fails the same way on every run. It
// is safe for concurrent use, and its configuration may change while calls
// are under way.
type Faulty struct {
	inner storage.Storage

	mu       sync.Mutex
	faults   Faults
	rng      *rand.Rand
	failPuts int
	down     bool
	injected int
}

var _ storage.Storage = (*Faulty)(nil)

// NewFaulty returns a Faulty around inner injecting faults, with its random
// choices seeded by seed.
func NewFaulty(inner storage.Storage, seed uint64, faults Faults) *Faulty {
	return &Faulty{inner: inner, faults: faults, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// SetFaults replaces the configured faults.
func (f *Faulty) SetFaults(faults Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = faults
}

// FailNextPuts makes the next n Puts fail part-way, whatever PutErrRate says.
func (f *Faulty) FailNextPuts(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failPuts = n
}

// Down makes every call, and every Read of a reader already open, fail with
// an error wrapping ErrDown while down is true.
func (f *Faulty) Down(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Injected returns how many faults have been injected so far: failed
// calls, including those while down, and readers cut. Delays do not count.
func (f *Faulty) Injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// roll decides, under the lock, whether a fault of the given rate happens
// now; when down, everything fails.
func (f *Faulty) roll(rate func(Faults) float64) (fail, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.injected++
		return true, true
	}
	if f.rng.Float64() < rate(f.faults) {
		f.injected++
		return true, false
	}
	return false, false
}

func (f *Faulty) isDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}

// wait sleeps for the configured delay, or until ctx ends.
func (f *Faulty) wait(ctx context.Context, put bool) error {
	f.mu.Lock()
	d := f.faults.Delay
	if put {
		d = f.faults.PutDelay
	}
	f.mu.Unlock()
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// before runs the delay and the up-front fault shared by the non-Put calls.
func (f *Faulty) before(ctx context.Context, rate func(Faults) float64) error {
	if err := f.wait(ctx, false); err != nil {
		return err
	}
	if fail, down := f.roll(rate); down {
		return ErrDown
	} else if fail {
		return ErrInjected
	}
	return nil
}

func readRate(fs Faults) float64   { return fs.ReadErrRate }
func deleteRate(fs Faults) float64 { return fs.DeleteErrRate }

// Put implements storage.Storage.
func (f *Faulty) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if err := f.wait(ctx, true); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	f.mu.Lock()
	down := f.down
	fail := !down && (f.failPuts > 0 || f.rng.Float64() < f.faults.PutErrRate)
	if f.failPuts > 0 && !down {
		f.failPuts--
	}
	ackLoss := !down && !fail && f.rng.Float64() < f.faults.PutAckLossRate
	cut := f.rng.Int64N(cutWithin)
	if down || fail || ackLoss {
		f.injected++
	}
	f.mu.Unlock()

	if down {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, ErrDown)
	}
	if fail {
		r = &cutReader{r: r, left: cut}
	}
	info, err := f.inner.Put(ctx, key, r, opts)
	switch {
	case fail && err == nil:
		// The wrapped store took an object from a reader that failed:
		// say so loudly, this is the bug the fault exists to catch.
		return info, fmt.Errorf("put %s: store accepted a reader that failed with %w", key, ErrInjected)
	case err != nil:
		return storage.ObjectInfo{}, err
	case ackLoss:
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w: response lost after the object was stored", key, ErrInjected)
	}
	return info, nil
}

// cutReader passes left bytes through, then fails; it fails at the end of
// its source too, so a short object cannot escape the fault.
type cutReader struct {
	r    io.Reader
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("%w: source broke off", ErrInjected)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		return n, fmt.Errorf("%w: source broke off", ErrInjected)
	}
	return n, err
}

// Open implements storage.Storage.
func (f *Faulty) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := f.before(ctx, readRate); err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	rc, err := f.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	return f.wrapReader(rc), nil
}

// OpenRange implements storage.Storage.
func (f *Faulty) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := f.before(ctx, readRate); err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	rc, err := f.inner.OpenRange(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	return f.wrapReader(rc), nil
}

// wrapReader makes rc fail when the store goes down and, at ReadCutRate,
// after a random number of bytes.
func (f *Faulty) wrapReader(rc io.ReadCloser) io.ReadCloser {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr := &faultyReader{rc: rc, f: f, left: -1}
	if f.rng.Float64() < f.faults.ReadCutRate {
		fr.left = f.rng.Int64N(cutWithin)
	}
	return fr
}

type faultyReader struct {
	rc   io.ReadCloser
	f    *Faulty
	left int64 // bytes until the injected cut; -1 for none
	cut  bool  // the cut has happened (and been counted)
}

func (r *faultyReader) Read(p []byte) (int, error) {
	if r.f.isDown() {
		return 0, fmt.Errorf("read: %w", ErrDown)
	}
	if r.left == 0 {
		if !r.cut {
			r.cut = true
			r.f.mu.Lock()
			r.f.injected++
			r.f.mu.Unlock()
		}
		return 0, fmt.Errorf("read: %w: connection cut", ErrInjected)
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	if r.left > 0 {
		r.left -= int64(n)
	}
	return n, err
}

func (r *faultyReader) Close() error { return r.rc.Close() }

// Stat implements storage.Storage.
func (f *Faulty) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := f.before(ctx, readRate); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return f.inner.Stat(ctx, key)
}

// List implements storage.Storage.
func (f *Faulty) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if err := f.before(ctx, readRate); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	return f.inner.List(ctx, prefix)
}

// Delete implements storage.Storage.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	if err := f.before(ctx, deleteRate); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return f.inner.Delete(ctx, key)
}
