package catalog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

const testTTL = time.Minute

func acquireLease(t *testing.T, st storage.Storage, holder string) *Lease {
	t.Helper()
	l, err := AcquireLease(t.Context(), st, holder, testTTL)
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
	_, err := AcquireLease(t.Context(), st, "agent-b", testTTL)
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
	// The same agent restarted: it takes its lease back at once, before expiry.
	restarted := acquireLease(t, st, "agent-a")
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
	if _, err := AcquireLease(t.Context(), st, "agent-b", testTTL); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("AcquireLease against a renewed lease: %v, want ErrLeaseHeld", err)
	}
}

func TestLeaseUnreadable(t *testing.T) {
	st := storagetest.NewMemory()
	if _, err := st.Put(t.Context(), LeaseKey, strings.NewReader("{garbage"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// A lease nobody can read is not taken over blindly.
	if _, err := AcquireLease(t.Context(), st, "agent-a", testTTL); err == nil || errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("AcquireLease over an unreadable lease: %v, want a decode error", err)
	}
}
