package binlog

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// AckMode is when the streamer, as a semi-synchronous replica,
// acknowledges a transaction to the server: a commit made on a server that
// waits for the acknowledgement (AFTER_SYNC) is then durable in the archive
// before its client hears it committed.
type AckMode string

// The acknowledgement modes.
const (
	// AckOff streams as an asynchronous replica (the default).
	AckOff AckMode = "off"
	// AckSpool acknowledges a transaction once it is fsynced in the spool:
	// it survives the server's loss, and the agent's, as long as the
	// spool's volume does.
	AckSpool AckMode = "durable-spool"
	// AckStorage acknowledges a transaction once its segment and index
	// record are in storage: it survives the loss of the pod, its node
	// and its volumes.
	AckStorage AckMode = "durable-storage"
)

// ParseAckMode parses an acknowledgement mode; "" is AckOff.
func ParseAckMode(s string) (AckMode, error) {
	switch m := AckMode(s); m {
	case "", AckOff:
		return AckOff, nil
	case AckSpool, AckStorage:
		return m, nil
	}
	return "", fmt.Errorf("unknown acknowledgement mode %q (off, durable-spool or durable-storage)", s)
}

// Enabled reports whether the mode makes the streamer a semi-synchronous replica.
func (m AckMode) Enabled() bool { return m == AckSpool || m == AckStorage }

// maxWaiting bounds the transactions an acker keeps waiting.
const maxWaiting = 1 << 16

// ackWait is a transaction the server waits for the streamer to acknowledge.
type ackWait struct {
	end catalog.Position // where its last event ends
	at  time.Time        // when that event arrived
}

// acker acknowledges the transactions of one semi-synchronous session once
// they are durable at the streamer's level. Transactions that become
// durable together (one fsync, one upload) are acknowledged with one reply
// naming the newest: the server releases every commit up to it.
type acker struct {
	mode AckMode
	d    *dumpConn
	w    *Writer
	up   *Uploader
	// observe is told each acknowledged transaction's wait, and acked
	// each position acknowledged.
	observe func(time.Duration)
	acked   func(catalog.Position)

	mu      sync.Mutex
	waiting []ackWait
	poke    chan struct{}
}

func newAcker(mode AckMode, d *dumpConn, w *Writer, up *Uploader, observe func(time.Duration), acked func(catalog.Position)) *acker {
	return &acker{mode: mode, d: d, w: w, up: up, observe: observe, acked: acked, poke: make(chan struct{}, 1)}
}

// want queues the transaction that ends at end, whose last event the server
// flagged as waited on.
func (a *acker) want(end catalog.Position) {
	a.mu.Lock()
	if len(a.waiting) >= maxWaiting {
		// Durability stalls (storage is down) while the server goes on:
		// one acknowledgement of the newest releases the oldest too, so
		// only their latencies go unmeasured.
		a.waiting = slices.Delete(a.waiting, 0, maxWaiting/2)
	}
	a.waiting = append(a.waiting, ackWait{end: end, at: time.Now()})
	a.mu.Unlock()
	select {
	case a.poke <- struct{}{}:
	default:
	}
}

// newest returns the newest transaction waiting, if any.
func (a *acker) newest() (catalog.Position, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waiting) == 0 {
		return catalog.Position{}, false
	}
	return a.waiting[len(a.waiting)-1].end, true
}

// release acknowledges every waiting transaction that ends at or before
// durable.
func (a *acker) release(durable catalog.Position) error {
	if durable.File == "" {
		return nil
	}
	a.mu.Lock()
	n := 0
	for n < len(a.waiting) && catalog.ComparePositions(a.waiting[n].end, durable) <= 0 {
		n++
	}
	done := slices.Clone(a.waiting[:n])
	a.waiting = slices.Delete(a.waiting, 0, n)
	a.mu.Unlock()
	if n == 0 {
		return nil
	}
	// Recorded first: the server releases the commits as soon as the
	// acknowledgement reaches it, and a client may then ask the status.
	a.acked(done[n-1].end)
	if err := a.d.ack(done[n-1].end); err != nil {
		return err
	}
	now := time.Now()
	for _, w := range done {
		a.observe(now.Sub(w.at))
	}
	return nil
}

// run acknowledges until ctx ends or acknowledging fails: the writer broke
// (its error wraps ErrSpool) or the connection did.
func (a *acker) run(ctx context.Context) error {
	var changed <-chan struct{} // nil: never, in AckSpool
	if a.mode == AckStorage {
		changed = a.up.durableChanged()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.poke:
		case <-changed:
		}
		var err error
		if a.mode == AckSpool {
			err = a.syncSpool()
		} else {
			// Taken before the durable position is read, so that a
			// move after the read still wakes the loop.
			changed = a.up.durableChanged()
			err = a.awaitStorage()
		}
		if err != nil {
			return err
		}
	}
}

// syncSpool makes everything the writer holds durable in the spool and
// acknowledges what that covers.
func (a *acker) syncSpool() error {
	if _, ok := a.newest(); !ok {
		return nil
	}
	durable, err := a.w.Sync()
	if err != nil {
		return err
	}
	return a.release(durable)
}

// awaitStorage acknowledges what is in storage, and seals the open segment
// for upload when the uploader has stored everything sealed before it: while
// one upload runs, the transactions after it gather into the next segment.
func (a *acker) awaitStorage() error {
	tl, durable, _ := a.up.Durable()
	if tl != a.w.timeline {
		durable = catalog.Position{} // positions of another timeline's binlog
	}
	if err := a.release(durable); err != nil {
		return err
	}
	newest, ok := a.newest()
	if !ok {
		return nil
	}
	sealed := a.w.Sealed()
	if catalog.ComparePositions(sealed, newest) >= 0 {
		a.up.Poke() // sealed already: the upload is on its way
		return nil
	}
	if sealed.File != "" && catalog.ComparePositions(durable, sealed) < 0 {
		return nil // an upload runs; its end wakes this up again
	}
	if err := a.w.Flush(); err != nil {
		return err
	}
	a.up.Poke()
	return nil
}
