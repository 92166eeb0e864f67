package catalog

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func TestDrillKeys(t *testing.T) {
	at := time.Date(2026, 11, 27, 3, 15, 0, 120_000_000, time.FixedZone("CET", 3600))
	if got, want := DrillKey(at), "drills/20261127T021500.120000Z.json"; got != want {
		t.Errorf("DrillKey = %q, want %q", got, want)
	}
	// Keys sort by time, whatever the fractions.
	if a, b := DrillKey(time.Date(2026, 1, 1, 0, 0, 9, 900_000_000, time.UTC)), DrillKey(time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)); a >= b {
		t.Errorf("%q sorts after %q", a, b)
	}
	for _, tc := range []struct {
		key  string
		want time.Time // zero: an error
	}{
		{"drills/20261127T021500.120000Z.json", time.Date(2026, 11, 27, 2, 15, 0, 120_000_000, time.UTC)},
		{"drills/20260101T000000.000000Z.json", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"drills/20261127T021500.12Z.json", time.Time{}},
		{"drills/20261127T021500Z.json", time.Time{}},
		{"drills/20261327T021500.120000Z.json", time.Time{}},
		{"drills/20261127T021500.120000Z.js", time.Time{}},
		{"snapshots/20261127T021500.120000Z.json", time.Time{}},
		{"drills/", time.Time{}},
		{"drills/x/20261127T021500.120000Z.json", time.Time{}},
	} {
		t.Run(tc.key, func(t *testing.T) {
			got, err := ParseDrillKey(tc.key)
			if tc.want.IsZero() {
				if !errors.Is(err, ErrBadKey) {
					t.Fatalf("ParseDrillKey = %s, %v; want ErrBadKey", got, err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("ParseDrillKey = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func FuzzParseDrillKey(f *testing.F) {
	f.Add("drills/20261127T021500.120000Z.json")
	f.Add("drills/99991231T235959.999999Z.json")
	f.Add("drills/.json")
	f.Fuzz(func(t *testing.T, key string) {
		got, err := ParseDrillKey(key)
		if err != nil {
			return
		}
		if back := DrillKey(got); back != key {
			t.Fatalf("ParseDrillKey(%q) = %s, which formats as %q", key, got, back)
		}
	})
}

func TestLastDrills(t *testing.T) {
	ctx := t.Context()
	st := storagetest.NewMemory()
	if last, ok, err := LastDrills(ctx, st); last != nil || ok != nil || err != nil {
		t.Fatalf("LastDrills of an empty archive = %v, %v, %v", last, ok, err)
	}
	base := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	write := func(h int, success bool) {
		t.Helper()
		d := &Drill{Started: base.Add(time.Duration(h) * time.Hour), Success: success, Target: "latest"}
		if !success {
			d.Reason = fmt.Sprintf("failure %d", h)
		}
		if err := WriteDrill(ctx, st, d); err != nil {
			t.Fatal(err)
		}
	}
	write(0, true)
	write(1, true)
	write(2, false)
	write(3, false)
	last, ok, err := LastDrills(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if last == nil || last.Reason != "failure 3" || ok == nil || !ok.Started.Equal(base.Add(time.Hour)) {
		t.Errorf("LastDrills = %+v, %+v; want the failure at +3h and the success at +1h", last, ok)
	}
	write(4, true)
	if last, ok, err = LastDrills(ctx, st); err != nil || last != ok || !last.Started.Equal(base.Add(4*time.Hour)) {
		t.Errorf("LastDrills = %+v, %+v, %v; want the success at +4h twice", last, ok, err)
	}
	// Records are create-only: a second record for the same instant is refused.
	if err := WriteDrill(ctx, st, &Drill{Started: base}); err == nil {
		t.Errorf("a second record at the same time was written")
	}
}
