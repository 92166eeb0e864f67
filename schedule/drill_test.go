package schedule

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/drill"
)

// TestSnapshotsAndDrillsTakeTurns checks that a snapshot waits while a
// drill holds the turn, and that a drill started during a snapshot begins
// only once the snapshot has finished.
func TestSnapshotsAndDrillsTakeTurns(t *testing.T) {
	s, faulty, _ := fixture(t)
	turns := &Turns{}
	s.Turns = turns
	waits := make(turnWaits, 4)
	s.Logger = slog.New(waits)

	release, err := turns.take(t.Context(), slog.New(slog.DiscardHandler), "a drill")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.TakeSnapshot(t.Context())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the snapshot ran while a drill held the turn: %v", err)
	case what := <-waits:
		if what != "snapshot" {
			t.Fatalf("%q waits for the turn, want the snapshot", what)
		}
	}
	if n := len(complete(t, s)); n != 0 || s.Status().Running {
		t.Fatalf("%d snapshots complete, running %v, while the turn was held", n, s.Status().Running)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("the snapshot after the turn was released: %v", err)
	}

	// A drill falling due during a snapshot starts after it. (The archive
	// has no binlog, so the drill itself fails, and says so.)
	gate := newGatedStore(faulty) // the snapshot runs until the drill waits
	defer gate.release()
	s.Store = gate
	reg := prometheus.NewRegistry()
	d := &Drills{Spec: "@daily", Turns: turns, Metrics: NewDrillMetrics(reg), Logger: slog.New(waits),
		Options: drill.Options{Store: s.Store, Scratch: t.TempDir()}}
	snapDone := make(chan *catalog.Manifest, 1)
	go func() {
		m, err := s.TakeSnapshot(t.Context())
		if err != nil {
			t.Errorf("snapshot: %v", err)
		}
		snapDone <- m
	}()
	select {
	case <-gate.entered:
	case m := <-snapDone:
		t.Fatalf("the snapshot ended before storing anything: %+v", m)
	}
	type drillResult struct {
		rec *catalog.Drill
		err error
	}
	drillDone := make(chan drillResult, 1)
	go func() {
		rec, err := d.RunDrill(t.Context())
		drillDone <- drillResult{rec, err}
	}()
	select {
	case r := <-drillDone:
		t.Fatalf("the drill ran during a snapshot: %+v, %v", r.rec, r.err)
	case what := <-waits:
		if what != "drill" {
			t.Fatalf("%q waits for the turn, want the drill", what)
		}
	}
	gate.release()
	m := <-snapDone
	r := <-drillDone
	rec, err := r.rec, r.err
	if m == nil {
		t.FailNow()
	}
	if !errors.Is(err, drill.ErrFailed) || rec == nil || rec.Started.Before(m.Finished) {
		t.Fatalf("drill = %+v, %v; want a failed drill started after the snapshot finished at %s", rec, err, m.Finished)
	}
	if got := value(d.Metrics.Failures); got != 1 || d.Status().Failures != 1 || d.Status().Last == nil {
		t.Errorf("failures metric %v, status %+v; want one failure recorded", got, d.Status())
	}
	if got := value(d.Metrics.LastSuccess); got != 0 {
		t.Errorf("last success metric %v after a failed drill, want 0", got)
	}
}

// turnWaits is a log handler that reports on the channel what starts
// waiting for the turn (Turns.take logs it, with "before"), so that a test
// knows a snapshot or drill is blocked on it.
type turnWaits chan string

func (w turnWaits) Enabled(context.Context, slog.Level) bool { return true }

func (w turnWaits) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "waiting for the running snapshot or drill") {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "before" {
			w <- a.Value.String()
		}
		return true
	})
	return nil
}

func (w turnWaits) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w turnWaits) WithGroup(string) slog.Handler      { return w }
