package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ErrLeaseHeld is returned when another agent holds the archive's lease.
var ErrLeaseHeld = errors.New("archive lease is held by another agent")

// ErrLeaseLost is returned by Renew when another agent has taken the lease.
var ErrLeaseLost = errors.New("archive lease was taken by another agent")

// LeaseRecord is the content of lease.json: which agent writes the archive.
type LeaseRecord struct {
	// Holder is the agent's stable identity (by default the host or pod name):
	// the same holder restarting takes its lease back at once.
	Holder string `json:"holder"`
	// Session is unique to one run of the agent.
	Session  string    `json:"session"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	Expires  time.Time `json:"expires"`
}

// Lease is a held archive lease. One writer per archive: a second agent
// pointed at the same storage refuses to start while the lease is live.
type Lease struct {
	st  storage.Storage
	ttl time.Duration
	rec LeaseRecord
	now func() time.Time
}

// AcquireLease takes the archive's lease for holder, valid for ttl unless
// renewed. It fails with ErrLeaseHeld, naming the holder, when another live
// agent holds it; an expired lease, or one held by the same holder (a
// restart), is taken over.
func AcquireLease(ctx context.Context, st storage.Storage, holder string, ttl time.Duration) (*Lease, error) {
	host, _ := os.Hostname()
	var sid [8]byte
	_, _ = rand.Read(sid[:])
	l := &Lease{st: st, ttl: ttl, now: time.Now, rec: LeaseRecord{Holder: holder, Session: hex.EncodeToString(sid[:]), Host: host, PID: os.Getpid()}}
	for attempt := 0; attempt < 3; attempt++ {
		now := l.now().UTC()
		l.rec.Acquired, l.rec.Renewed, l.rec.Expires = now, now, now.Add(ttl)
		err := PutJSON(ctx, st, LeaseKey, &l.rec, true)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, storage.ErrExist) {
			return nil, err
		}
		var cur LeaseRecord
		if err := GetJSON(ctx, st, LeaseKey, &cur); err != nil {
			if errors.Is(err, storage.ErrNotExist) {
				continue // released meanwhile
			}
			return nil, err
		}
		if cur.Holder != holder && now.Before(cur.Expires) {
			return nil, fmt.Errorf("%w: %s (host %s, pid %d) holds it since %s, renewed %s, expires %s unless renewed",
				ErrLeaseHeld, cur.Holder, cur.Host, cur.PID, cur.Acquired.Format(time.RFC3339),
				cur.Renewed.Format(time.RFC3339), cur.Expires.Format(time.RFC3339))
		}
		// Our own lease from an earlier run, or an expired one: take it over.
		if err := st.Delete(ctx, LeaseKey); err != nil {
			return nil, fmt.Errorf("take over lease: %w", err)
		}
	}
	return nil, fmt.Errorf("%w: lost the race to acquire it three times", ErrLeaseHeld)
}

// Record returns what the lease says.
func (l *Lease) Record() LeaseRecord { return l.rec }

// Renew extends the lease. It returns ErrLeaseLost when another agent has
// taken it, after which this agent must stop writing.
func (l *Lease) Renew(ctx context.Context) error {
	var cur LeaseRecord
	if err := GetJSON(ctx, l.st, LeaseKey, &cur); err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return fmt.Errorf("%w: lease object disappeared", ErrLeaseLost)
		}
		return err
	}
	if cur.Session != l.rec.Session {
		return fmt.Errorf("%w: now held by %s (host %s, pid %d)", ErrLeaseLost, cur.Holder, cur.Host, cur.PID)
	}
	now := l.now().UTC()
	l.rec.Renewed, l.rec.Expires = now, now.Add(l.ttl)
	return PutJSON(ctx, l.st, LeaseKey, &l.rec, false)
}

// Release gives the lease up if this agent still holds it.
func (l *Lease) Release(ctx context.Context) error {
	var cur LeaseRecord
	if err := GetJSON(ctx, l.st, LeaseKey, &cur); err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return nil
		}
		return err
	}
	if cur.Session != l.rec.Session {
		return nil
	}
	return l.st.Delete(ctx, LeaseKey)
}
