package backoff

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"doubles and caps", Backoff{Min: 100 * time.Millisecond, Max: time.Second},
			[]time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}},
		{"zero value", Backoff{}, []time.Duration{1e9, 2e9, 4e9, 8e9, 16e9, 30e9, 30e9}},
		{"max below min", Backoff{Min: time.Second, Max: time.Millisecond}, []time.Duration{1e9, 1e9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []time.Duration
			for range tc.want {
				got = append(got, tc.b.Next())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("waits %v, want %v", got, tc.want)
			}
			tc.b.Reset()
			if d := tc.b.Next(); d != tc.want[0] {
				t.Fatalf("after Reset: %v, want %v", d, tc.want[0])
			}
		})
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := New(time.Hour, time.Hour)
	if err := b.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context = %v", err)
	}
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}
