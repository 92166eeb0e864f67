package schedule

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/drill"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// TestSnapshotsAndDrillsTakeTurns checks that a snapshot waits while a
// drill holds the turn, and that a drill started during a snapshot begins
// only once the snapshot has finished.
func TestSnapshotsAndDrillsTakeTurns(t *testing.T) {
	s, faulty, _ := fixture(t)
	turns := &Turns{}
	s.Turns = turns
	log := slog.New(slog.DiscardHandler)

	release, err := turns.take(t.Context(), log, "a drill")
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
	case <-time.After(700 * time.Millisecond):
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
	faulty.SetFaults(storagetest.Faults{PutDelay: 300 * time.Millisecond})
	reg := prometheus.NewRegistry()
	d := &Drills{Spec: "@daily", Turns: turns, Metrics: NewDrillMetrics(reg),
		Options: drill.Options{Store: s.Store, Scratch: t.TempDir()}}
	snapDone := make(chan *catalog.Manifest, 1)
	go func() {
		m, err := s.TakeSnapshot(t.Context())
		if err != nil {
			t.Errorf("snapshot: %v", err)
		}
		snapDone <- m
	}()
	time.Sleep(100 * time.Millisecond)
	rec, err := d.RunDrill(t.Context())
	m := <-snapDone
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
