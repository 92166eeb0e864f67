package testbed

import (
	"testing"
	"time"
)

func TestNextSecondWaitsForTheClock(t *testing.T) {
	before := time.Now()
	NextSecond(t, before)
	if now := time.Now(); now.Unix() <= before.Unix() {
		t.Fatalf("NextSecond(%s) returned at %s, in the same second", before.Format(time.StampMilli), now.Format(time.StampMilli))
	}
	if d := time.Since(before); d > 1200*time.Millisecond {
		t.Errorf("NextSecond took %s, more than the rest of the second and a poll", d)
	}
}
