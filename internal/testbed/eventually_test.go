package testbed

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPollReturnsOnceCondHolds(t *testing.T) {
	n := 0
	err := poll(t, 5*time.Second, 100*time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("poll: %v after %d calls; want nil after 3", err, n)
	}
}

func TestPollGivesTheLastErrorAfterTimeout(t *testing.T) {
	n := 0
	start := time.Now()
	err := poll(t, 250*time.Millisecond, 10*time.Millisecond, func() error {
		n++
		return errors.New("seen " + strings.Repeat("x", n))
	})
	if err == nil || !strings.HasPrefix(err.Error(), "seen x") || time.Since(start) > 2*time.Second {
		t.Fatalf("poll: %v after %s; want the last error after the timeout", err, time.Since(start))
	}
	if want := "seen " + strings.Repeat("x", n); err.Error() != want {
		t.Fatalf("poll: %q, want the last error %q", err, want)
	}
}

func TestPollStopsAtAHalt(t *testing.T) {
	n := 0
	start := time.Now()
	err := poll(t, time.Minute, 10*time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return Halt(errors.New("gone"))
	})
	if err == nil || err.Error() != "gone" || n != 3 || time.Since(start) > 10*time.Second {
		t.Fatalf("poll: %v after %d calls and %s; want the halt after 3 calls", err, n, time.Since(start))
	}
}
