package testbed

import (
	"errors"
	"testing"
	"time"
)

// Eventually polls cond every 100 ms until it returns nil. After timeout,
// or when the test's context ends, it fails tb with cond's last error,
// which should say what was awaited and what was seen instead. An error
// wrapped by Halt fails tb at once.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	EventuallyEvery(tb, timeout, 100*time.Millisecond, cond)
}

// EventuallyEvery is Eventually polling every interval: for a state that
// may last less than 100 ms and must be seen while it lasts.
func EventuallyEvery(tb testing.TB, timeout, interval time.Duration, cond func() error) {
	tb.Helper()
	if err := poll(tb, timeout, interval, cond); err != nil {
		var h halted
		if errors.As(err, &h) {
			tb.Fatal(h.err)
		}
		tb.Fatalf("not within %s: %v", timeout, err)
	}
}

// Halt makes Eventually stop polling and fail with err: for a condition
// that can no longer come true, such as a process that exited.
func Halt(err error) error { return halted{err} }

type halted struct{ err error }

func (h halted) Error() string { return h.err.Error() }
func (h halted) Unwrap() error { return h.err }

func poll(tb testing.TB, timeout, interval time.Duration, cond func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil || errors.As(err, new(halted)) {
			return err
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
