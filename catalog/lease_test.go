package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

const testTTL = time.Minute

func acquireLease(t *testing.T, st storage.Storage, holder string) *Lease {
	t.Helper()
	l, err := AcquireLease(t.Context(), st, holder, testTTL, LeaseOptions{})
	if err != nil {
		t.Fatalf("AcquireLease(%s): %v", holder, err)
	}
	return l
}

func storedLease(t *testing.T, st storage.Storage) LeaseRecord {
	t.Helper()
	var rec LeaseRecord
	if err := GetJSON(t.Context(), st, LeaseKey, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// expire rewrites the stored lease as if its holder had stopped renewing it.
func expireLease(t *testing.T, st storage.Storage) {
	t.Helper()
	rec := storedLease(t, st)
	rec.Renewed = rec.Renewed.Add(-2 * testTTL)
	rec.Expires = rec.Renewed.Add(testTTL)
	if err := PutJSON(t.Context(), st, LeaseKey, &rec, false); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseAcquireOnEmptyStorage(t *testing.T) {
	st := storagetest.NewMemory()
	before := time.Now().UTC()
	l := acquireLease(t, st, "agent-a")
	rec := l.Record()
	if rec.Holder != "agent-a" || rec.Session == "" || rec.PID == 0 {
		t.Errorf("lease record %+v", rec)
	}
	if rec.Acquired.Before(before.Add(-time.Second)) || !rec.Expires.Equal(rec.Acquired.Add(testTTL)) || !rec.Renewed.Equal(rec.Acquired) {
		t.Errorf("lease times: acquired %v renewed %v expires %v", rec.Acquired, rec.Renewed, rec.Expires)
	}
	if got := storedLease(t, st); got.Session != rec.Session || got.Holder != "agent-a" {
		t.Errorf("stored lease %+v, want session %s", got, rec.Session)
	}
}

func TestLeaseHeldByAnotherAgent(t *testing.T) {
	st := storagetest.NewMemory()
	a := acquireLease(t, st, "agent-a")
	_, err := AcquireLease(t.Context(), st, "agent-b", testTTL, LeaseOptions{})
	if !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second holder: %v, want ErrLeaseHeld", err)
	}
	if !strings.Contains(err.Error(), "agent-a") {
		t.Errorf("error %q does not name the holder", err)
	}
	if got := storedLease(t, st); got.Session != a.Record().Session {
		t.Errorf("the refused agent changed the lease: %+v", got)
	}
	if err := a.Renew(t.Context()); err != nil {
		t.Errorf("holder's Renew: %v", err)
	}
}

func TestLeaseSameHolderRestarts(t *testing.T) {
	st := storagetest.NewMemory()
	old := acquireLease(t, st, "agent-a")
	// The same agent restarted on its own spool, whose lock proves the old
	// run dead: it takes its lease back at once, before expiry.
	restarted, err := AcquireLease(t.Context(), st, "agent-a", testTTL, LeaseOptions{DeadSession: old.Record().Session})
	if err != nil {
		t.Fatal(err)
	}
	if restarted.Record().Session == old.Record().Session {
		t.Fatal("restarted agent has the old session")
	}
	if got := storedLease(t, st); got.Session != restarted.Record().Session {
		t.Errorf("stored lease %+v, want the new session", got)
	}
	// The run before the restart, if still alive, must stop writing.
	if err := old.Renew(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("old run's Renew: %v, want ErrLeaseLost", err)
	}
	if err := restarted.Renew(t.Context()); err != nil {
		t.Errorf("Renew: %v", err)
	}
}

// TestLeaseSameHolderName: holder names are not unique. A second agent
// with the same name and nothing proving the first dead waits for the
// lease to lapse: it is refused if the lease is renewed meanwhile, and
// takes it over if not (the first crashed without its spool).
func TestLeaseSameHolderName(t *testing.T) {
	t.Run("a live twin keeps the lease", func(t *testing.T) {
		st := storagetest.NewMemory()
		a := acquireLease(t, st, "host-1")
		b := newLease(st, "host-1", testTTL, "")
		waited := false
		b.sleep = func(ctx context.Context, d time.Duration) error {
			waited = true
			return a.Renew(ctx) // the first agent is alive
		}
		err := b.acquire(t.Context(), "")
		if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), a.Record().Session) {
			t.Fatalf("acquire against a live lease of the same name: %v, want ErrLeaseHeld naming the session", err)
		}
		if !waited {
			t.Error("did not wait for the lease to lapse")
		}
		if got := storedLease(t, st); got.Session != a.Record().Session {
			t.Errorf("the refused twin changed the lease: %+v", got)
		}
		if err := a.Renew(t.Context()); err != nil {
			t.Errorf("the first agent lost its lease: %v", err)
		}
	})
	t.Run("an unrenewed lease lapses and is taken over", func(t *testing.T) {
		st := storagetest.NewMemory()
		a := acquireLease(t, st, "host-1") // then crashed, its spool lost
		b := newLease(st, "host-1", testTTL, "")
		clock := time.Now()
		b.now = func() time.Time { return clock }
		b.sleep = func(_ context.Context, d time.Duration) error { clock = clock.Add(d); return nil }
		if err := b.acquire(t.Context(), ""); err != nil {
			t.Fatalf("acquire after the lease lapsed: %v", err)
		}
		if clock.Before(a.Record().Expires) {
			t.Errorf("took the lease over at %v, before it expired at %v", clock, a.Record().Expires)
		}
		if err := a.Renew(t.Context()); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("old run's Renew: %v, want ErrLeaseLost", err)
		}
	})
	t.Run("a dead session of another name is not taken at once", func(t *testing.T) {
		st := storagetest.NewMemory()
		a := acquireLease(t, st, "host-1")
		_, err := AcquireLease(t.Context(), st, "host-2", testTTL, LeaseOptions{DeadSession: "not-" + a.Record().Session})
		if !errors.Is(err, ErrLeaseHeld) {
			t.Fatalf("acquire: %v, want ErrLeaseHeld", err)
		}
	})
}

func TestLeaseExpiredIsTakenOver(t *testing.T) {
	st := storagetest.NewMemory()
	a := acquireLease(t, st, "agent-a")
	expireLease(t, st)
	b := acquireLease(t, st, "agent-b")
	if got := storedLease(t, st); got.Holder != "agent-b" || got.Session != b.Record().Session {
		t.Errorf("stored lease %+v, want agent-b's", got)
	}
	err := a.Renew(t.Context())
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew after takeover: %v, want ErrLeaseLost", err)
	}
	if !strings.Contains(err.Error(), "agent-b") {
		t.Errorf("error %q does not name the new holder", err)
	}
	if got := storedLease(t, st); got.Session != b.Record().Session {
		t.Errorf("the failed Renew changed the lease: %+v", got)
	}

	// Release gives up only our own lease.
	if err := a.Release(t.Context()); err != nil {
		t.Fatalf("Release of a lost lease: %v", err)
	}
	if got := storedLease(t, st); got.Session != b.Record().Session {
		t.Fatalf("Release of a lost lease deleted agent-b's lease: %+v", got)
	}
	if err := b.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(t.Context(), LeaseKey); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("lease after Release: %v, want ErrNotExist", err)
	}
	if err := b.Release(t.Context()); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if err := b.Renew(t.Context()); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Renew after Release: %v, want ErrLeaseLost", err)
	}
	acquireLease(t, st, "agent-c")
}

func TestLeaseRenewExtends(t *testing.T) {
	st := storagetest.NewMemory()
	l := acquireLease(t, st, "agent-a")
	later := l.Record().Acquired.Add(40 * time.Second)
	l.now = func() time.Time { return later }
	if err := l.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := storedLease(t, st)
	if !got.Renewed.Equal(later) || !got.Expires.Equal(later.Add(testTTL)) || !got.Acquired.Equal(l.Record().Acquired) {
		t.Errorf("renewed lease %+v, want renewed %v expires %v", got, later, later.Add(testTTL))
	}
	// Renewed, it is still live for others past the first expiry.
	if _, err := AcquireLease(t.Context(), st, "agent-b", testTTL, LeaseOptions{}); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("AcquireLease against a renewed lease: %v, want ErrLeaseHeld", err)
	}
}

func TestLeaseUnreadable(t *testing.T) {
	st := storagetest.NewMemory()
	if _, err := st.Put(t.Context(), LeaseKey, strings.NewReader("{garbage"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// A lease nobody can read is not taken over blindly.
	if _, err := AcquireLease(t.Context(), st, "agent-a", testTTL, LeaseOptions{}); err == nil || errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("AcquireLease over an unreadable lease: %v, want a decode error", err)
	}
}

// writerOnly returns a store over inner that encrypts for a new key and
// holds no identity, as an agent given only --age-recipient does, and a
// store that can read it.
func writerOnly(t *testing.T, inner storage.Storage) (writer, reader storage.Storage) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	w, err := crypt.New(inner, crypt.Options{Recipients: []age.Recipient{id.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := crypt.New(inner, crypt.Options{Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	return w, r
}

// TestLeaseWithoutIdentity: agents that cannot read lease.json (encrypted,
// only recipients given) still exclude each other.
func TestLeaseWithoutIdentity(t *testing.T) {
	t.Run("renew and release by fingerprint", func(t *testing.T) {
		w, r := writerOnly(t, storagetest.NewMemory())
		a := acquireLease(t, w, "agent-a")
		if got := storedLease(t, r); got.Session != a.Record().Session {
			t.Fatalf("stored lease %+v, want agent-a's session", got)
		}
		if err := a.Renew(t.Context()); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if err := a.Release(t.Context()); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if _, err := w.Stat(t.Context(), LeaseKey); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("lease after Release: %v, want ErrNotExist", err)
		}
	})
	t.Run("a renewed lease is held", func(t *testing.T) {
		w, _ := writerOnly(t, storagetest.NewMemory())
		a := acquireLease(t, w, "agent-a")
		b := newLease(w, "agent-b", testTTL, "")
		waited := false
		b.sleep = func(ctx context.Context, d time.Duration) error {
			waited = d == testTTL
			return a.Renew(ctx) // the holder is alive
		}
		err := b.acquire(t.Context(), "")
		if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "no age identity") {
			t.Fatalf("acquire against a live unreadable lease: %v, want ErrLeaseHeld saying why it cannot name the holder", err)
		}
		if !waited {
			t.Error("did not wait one TTL for a renewal")
		}
		if err := a.Renew(t.Context()); err != nil {
			t.Errorf("holder's Renew after the refusal: %v", err)
		}
	})
	t.Run("a lease not renewed for a TTL is taken over", func(t *testing.T) {
		w, r := writerOnly(t, storagetest.NewMemory())
		a := acquireLease(t, w, "agent-a") // then crashed: never renews
		b := newLease(w, "agent-a", testTTL, "")
		b.sleep = func(context.Context, time.Duration) error { return nil }
		if err := b.acquire(t.Context(), ""); err != nil {
			t.Fatalf("acquire after the holder stopped renewing: %v", err)
		}
		if got := storedLease(t, r); got.Session != b.Record().Session {
			t.Errorf("stored lease %+v, want the new session", got)
		}
		if err := a.Renew(t.Context()); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("old run's Renew: %v, want ErrLeaseLost", err)
		}
		if err := a.Release(t.Context()); err != nil {
			t.Errorf("old run's Release: %v", err)
		}
		if got := storedLease(t, r); got.Session != b.Record().Session {
			t.Errorf("old run's Release removed the new lease: %+v", got)
		}
	})
	t.Run("a long-unrenewed lease is taken over at once", func(t *testing.T) {
		w, _ := writerOnly(t, storagetest.NewMemory())
		acquireLease(t, w, "agent-a")
		b := newLease(w, "agent-b", testTTL, "")
		b.now = func() time.Time { return time.Now().Add(3 * testTTL) }
		b.sleep = func(context.Context, time.Duration) error {
			t.Error("waited for a lease older than twice its TTL")
			return nil
		}
		if err := b.acquire(t.Context(), ""); err != nil {
			t.Fatalf("acquire: %v", err)
		}
	})
}
