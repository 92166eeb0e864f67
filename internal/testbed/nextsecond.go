package testbed

import (
	"fmt"
	"testing"
	"time"
)

// NextSecond waits until the wall clock reads a later second than t. The
// archive names some things by the wall-clock second they happened in
// (snapshot ids, a snapshot's consistent time): a test that needs two of
// them ordered waits for the clock itself, not for a guessed duration.
// Commit times need no waiting: set the session's timestamp instead.
func NextSecond(tb testing.TB, t time.Time) {
	tb.Helper()
	after := t.Truncate(time.Second)
	Eventually(tb, 3*time.Second, func() error {
		if now := time.Now(); !now.Truncate(time.Second).After(after) {
			return fmt.Errorf("the clock reads %s, still in the second of %s", now.UTC().Format(time.StampMilli), t.UTC().Format(time.StampMilli))
		}
		return nil
	})
}
