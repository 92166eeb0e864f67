// Package backoff is the capped exponential backoff every retry loop of
// mysql-pitr uses: the wait doubles from Min to at most Max and goes back
// to Min on success. It is a leaf: it imports nothing of the project.
//
// It is written here rather than taken from a library because the loops
// need only this (no jitter: each agent retries against its own server and
// archive, so there is no herd to spread), and every loop must wait on its
// context, which a dozen lines do.
package backoff

import (
	"context"
	"time"
)

// Backoff is the state of one retry loop. The zero value waits 1 s at
// first and at most 30 s.
type Backoff struct {
	// Min is the first wait; Max bounds every wait.
	Min, Max time.Duration
	cur      time.Duration
}

// Defaults of the zero Backoff.
const (
	DefaultMin = time.Second
	DefaultMax = 30 * time.Second
)

// New returns a backoff from min up to max.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

func (b *Backoff) bounds() (time.Duration, time.Duration) {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi <= 0 {
		hi = DefaultMax
	}
	return lo, max(lo, hi)
}

// Next returns the wait before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.bounds()
	if b.cur < lo {
		b.cur = lo
	}
	d := min(b.cur, hi)
	b.cur = min(2*d, hi)
	return d
}

// Reset makes the next wait Min again, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait waits for Next, or until ctx ends, whose error it then returns.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Next())
}

// Sleep waits d, or until ctx ends, whose error it then returns.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
