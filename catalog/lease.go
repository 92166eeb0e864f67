package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/backoff"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// ErrLeaseHeld is returned when another agent holds the archive's lease.
var ErrLeaseHeld = errors.New("archive lease is held by another agent")

// ErrLeaseLost is returned by Renew when another agent has taken the lease.
var ErrLeaseLost = errors.New("archive lease was taken by another agent")

// LeaseRecord is the content of lease.json: which agent writes the archive.
type LeaseRecord struct {
	// Holder is the agent's configured identity (by default the host or
	// pod name). It is not unique: two agents may be given the same one.
	Holder string `json:"holder"`
	// Session is unique to one run of the agent: what the lease belongs to.
	Session  string    `json:"session"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	Expires  time.Time `json:"expires"`
}

// Lease is a held archive lease. One writer per archive: a second agent
// pointed at the same storage refuses to start while the lease is live.
//
// An agent that holds only the archive's public age recipients cannot read
// lease.json back. It tells its own lease by what its last put stored (size
// and CRC32C of the ciphertext, which differ for every put), and another
// agent's lease by whether it is renewed: see AcquireLease.
type Lease struct {
	st  storage.Storage
	ttl time.Duration
	rec LeaseRecord
	now func() time.Time
	// stored is what the last put of the lease stored.
	stored storage.ObjectInfo
	// sleep waits d or until ctx ends.
	sleep func(ctx context.Context, d time.Duration) error
}

func (l *Lease) put(ctx context.Context, create bool) error {
	info, err := putJSON(ctx, l.st, LeaseKey, &l.rec, create)
	if err == nil {
		l.stored = info
	}
	return err
}

// read returns the current lease record, or nil with no error when the
// lease exists but this store cannot decrypt it.
func (l *Lease) read(ctx context.Context) (*LeaseRecord, error) {
	var cur LeaseRecord
	err := GetJSON(ctx, l.st, LeaseKey, &cur)
	if errors.Is(err, crypt.ErrNoIdentity) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &cur, nil
}

// ours reports whether lease.json still is what this lease last put, from
// its size and checksum alone.
func (l *Lease) ours(ctx context.Context) (bool, error) {
	info, err := l.st.Stat(ctx, LeaseKey)
	if err != nil {
		return false, err
	}
	return info.Size == l.stored.Size && info.CRC32C == l.stored.CRC32C, nil
}

// NewSession returns a random id for one run of an agent.
func NewSession() string {
	var sid [8]byte
	_, _ = rand.Read(sid[:])
	return hex.EncodeToString(sid[:])
}

// LeaseOptions adjust AcquireLease.
type LeaseOptions struct {
	// Session identifies this run (default: a new random one).
	Session string
	// DeadSession is a session known to have ended: the previous owner of
	// the spool directory this agent now holds locked. A lease of that
	// session is taken over at once.
	DeadSession string
}

// AcquireLease takes the archive's lease for holder, valid for ttl unless
// renewed. It fails with ErrLeaseHeld, naming the holder, when another live
// agent holds it. An expired lease is taken over, as is at once a lease of
// opts.DeadSession (this agent restarting on its own spool). A live lease of
// the same holder name and another session is not: holder names are not
// unique (two agents with the default, the host name, on one host). The
// agent waits up to ttl for it to expire and takes it over then, unless it
// is renewed meanwhile, which proves another live agent holds it.
//
// A lease this store cannot decrypt (the agent holds only recipients) names
// no holder: it is taken over once it is older than twice ttl, or after ttl
// passes without it being renewed; if it is renewed meanwhile, another live
// agent holds it. A restarted agent without identity so waits up to ttl.
func AcquireLease(ctx context.Context, st storage.Storage, holder string, ttl time.Duration, opts LeaseOptions) (*Lease, error) {
	l := newLease(st, holder, ttl, opts.Session)
	if err := l.acquire(ctx, opts.DeadSession); err != nil {
		return nil, err
	}
	return l, nil
}

func newLease(st storage.Storage, holder string, ttl time.Duration, session string) *Lease {
	host, _ := os.Hostname()
	if session == "" {
		session = NewSession()
	}
	return &Lease{st: st, ttl: ttl, now: time.Now, sleep: backoff.Sleep,
		rec: LeaseRecord{Holder: holder, Session: session, Host: host, PID: os.Getpid()}}
}

func (l *Lease) acquire(ctx context.Context, deadSession string) error {
	for attempt := 0; attempt < 3; attempt++ {
		now := l.now().UTC()
		l.rec.Acquired, l.rec.Renewed, l.rec.Expires = now, now, now.Add(l.ttl)
		err := l.put(ctx, true)
		if err == nil {
			return nil
		}
		if !errors.Is(err, storage.ErrExist) {
			return err
		}
		cur, err := l.read(ctx)
		if errors.Is(err, storage.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return err
		}
		if cur == nil {
			if err := l.waitUnreadable(ctx); err != nil {
				if errors.Is(err, storage.ErrNotExist) {
					continue
				}
				return err
			}
		} else if now.Before(cur.Expires) && (deadSession == "" || cur.Session != deadSession) {
			held := fmt.Errorf("%w: %s (host %s, pid %d, session %s) holds it since %s, renewed %s, expires %s unless renewed",
				ErrLeaseHeld, cur.Holder, cur.Host, cur.PID, cur.Session, cur.Acquired.Format(time.RFC3339),
				cur.Renewed.Format(time.RFC3339), cur.Expires.Format(time.RFC3339))
			if cur.Holder != l.rec.Holder {
				return held
			}
			// The same name, maybe this agent restarting without its
			// spool, maybe a twin: wait for the lease to lapse.
			if err := l.waitExpiry(ctx, cur, held); err != nil {
				if errors.Is(err, storage.ErrNotExist) {
					continue
				}
				return err
			}
		}
		// The dead session's lease, or an expired one: take it over.
		if err := l.st.Delete(ctx, LeaseKey); err != nil {
			return fmt.Errorf("take over lease: %w", err)
		}
	}
	return fmt.Errorf("%w: lost the race to acquire it three times", ErrLeaseHeld)
}

// waitUnreadable decides about a lease this store cannot decrypt. It
// returns nil when the lease has expired, ErrLeaseHeld when its holder
// renewed it while this agent waited.
func (l *Lease) waitUnreadable(ctx context.Context) error {
	first, err := l.st.Stat(ctx, LeaseKey)
	if err != nil {
		return err
	}
	// Storage's clock may differ from ours a little, not by a whole TTL.
	if l.now().Sub(first.ModTime) > 2*l.ttl {
		return nil
	}
	if err := l.sleep(ctx, l.ttl); err != nil {
		return err
	}
	again, err := l.st.Stat(ctx, LeaseKey)
	if err != nil {
		return err
	}
	if again.Size != first.Size || again.CRC32C != first.CRC32C {
		return fmt.Errorf("%w: another agent renewed it at %s; its lease is encrypted and this agent holds no age identity to read which agent that is",
			ErrLeaseHeld, again.ModTime.UTC().Format(time.RFC3339))
	}
	return nil
}

// waitExpiry waits until the lease cur expires. It returns held when the
// lease is renewed or taken meanwhile.
func (l *Lease) waitExpiry(ctx context.Context, cur *LeaseRecord, held error) error {
	for {
		wait := cur.Expires.Sub(l.now())
		if wait <= 0 {
			return nil
		}
		if err := l.sleep(ctx, min(wait, l.ttl)+10*time.Millisecond); err != nil {
			return err
		}
		again, err := l.read(ctx)
		if err != nil {
			return err
		}
		if again == nil || again.Session != cur.Session || !again.Renewed.Equal(cur.Renewed) {
			return held
		}
	}
}

// Record returns what the lease says.
func (l *Lease) Record() LeaseRecord { return l.rec }

// Renew extends the lease. It returns ErrLeaseLost when another agent has
// taken it, after which this agent must stop writing.
func (l *Lease) Renew(ctx context.Context) error {
	cur, err := l.read(ctx)
	if errors.Is(err, storage.ErrNotExist) {
		return fmt.Errorf("%w: lease object disappeared", ErrLeaseLost)
	}
	if err != nil {
		return err
	}
	switch {
	case cur != nil && cur.Session != l.rec.Session:
		return fmt.Errorf("%w: now held by %s (host %s, pid %d)", ErrLeaseLost, cur.Holder, cur.Host, cur.PID)
	case cur == nil:
		ours, err := l.ours(ctx)
		if errors.Is(err, storage.ErrNotExist) {
			return fmt.Errorf("%w: lease object disappeared", ErrLeaseLost)
		}
		if err != nil {
			return err
		}
		if !ours {
			return fmt.Errorf("%w: lease.json was rewritten by another agent", ErrLeaseLost)
		}
	}
	now := l.now().UTC()
	l.rec.Renewed, l.rec.Expires = now, now.Add(l.ttl)
	return l.put(ctx, false)
}

// Release gives the lease up if this agent still holds it.
func (l *Lease) Release(ctx context.Context) error {
	cur, err := l.read(ctx)
	if errors.Is(err, storage.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur == nil {
		ours, err := l.ours(ctx)
		if errors.Is(err, storage.ErrNotExist) {
			return nil
		}
		if err != nil || !ours {
			return err
		}
	} else if cur.Session != l.rec.Session {
		return nil
	}
	return l.st.Delete(ctx, LeaseKey)
}
