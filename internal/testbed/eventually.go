package testbed

import (
	"testing"
	"time"
)

// Eventually polls cond every 100 ms until it returns nil. After timeout,
// or when the test's context ends, it fails tb with cond's last error,
// which should say what was awaited and what was seen instead.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	if err := poll(tb, timeout, cond); err != nil {
		tb.Fatalf("not within %s: %v", timeout, err)
	}
}

func poll(tb testing.TB, timeout time.Duration, cond func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-deadline.C:
			return err
		case <-tb.Context().Done():
			return err
		case <-tick.C:
		}
	}
}
