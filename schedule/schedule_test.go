package schedule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/retention"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func TestParseSpec(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		spec string
		next time.Time // zero: invalid
	}{
		{"0 3 * * *", time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)},
		{"*/15 * * * *", time.Date(2026, 11, 27, 10, 45, 0, 0, time.UTC)},
		{"@daily", time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)},
		{"@every 6h", time.Date(2026, 11, 27, 16, 30, 0, 0, time.UTC)},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)},
		{"TZ=Asia/Tokyo 0 20 * * *", time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)},
		{"", time.Time{}},
		{"0 3 * *", time.Time{}},
		{"0 3 * * * *", time.Time{}},
		{"61 * * * *", time.Time{}},
		{"@sometimes", time.Time{}},
		{"@every banana", time.Time{}},
		{"CRON_TZ=UTC", time.Time{}},
		{"CRON_TZ=Nowhere/Atlantis 0 3 * * *", time.Time{}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			s, err := ParseSpec(tc.spec)
			if tc.next.IsZero() {
				if err == nil {
					t.Fatalf("ParseSpec(%q) accepted an invalid schedule", tc.spec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Next(at).UTC(); !got.Equal(tc.next) {
				t.Errorf("Next(%s) = %s, want %s", at, got, tc.next)
			}
		})
	}
}

// fixture starts a MariaDB with a small table and returns a scheduler
// snapshotting it into file storage wrapped in a Faulty.
func fixture(t *testing.T) (*Scheduler, *storagetest.Faulty, *prometheus.Registry) {
	db := testbed.PackageMariaDB(t)
	db.Exec(t, "CREATE DATABASE IF NOT EXISTS app")
	db.Exec(t, "CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
	db.Exec(t, "INSERT INTO app.t (v) VALUES ('a'), ('b'), ('c')")
	inner, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := storagetest.NewFaulty(inner, 1, storagetest.Faults{})
	cfg, _ := mysql.ParseDSN(db.PitrDSN())
	reg := prometheus.NewRegistry()
	s := &Scheduler{Spec: "@every 1s", Method: catalog.MethodLogical, Source: cfg, Threads: 1, Store: st,
		Timeline: func() catalog.TimelineID { return 1 }, Metrics: NewMetrics(reg)}
	return s, st, reg
}

// runFor runs s until cond holds, failing the test if it does not within
// timeout.
func runFor(t *testing.T, s *Scheduler, timeout time.Duration, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testbed.Eventually(t, timeout, cond)
}

// gatedStore holds every Put until release is called. The first Put to
// wait says so on entered: from then on a snapshot is surely running.
type gatedStore struct {
	storage.Storage
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
}

func newGatedStore(st storage.Storage) *gatedStore {
	return &gatedStore{Storage: st, entered: make(chan struct{}, 1), open: make(chan struct{})}
}

func (g *gatedStore) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
	case <-ctx.Done():
		return storage.ObjectInfo{}, ctx.Err()
	}
	return g.Storage.Put(ctx, key, r, opts)
}

func (g *gatedStore) release() { g.once.Do(func() { close(g.open) }) }

func complete(t *testing.T, s *Scheduler) []*catalog.Manifest {
	snaps, err := catalog.LoadSnapshots(context.WithoutCancel(t.Context()), s.Store)
	if err != nil {
		t.Fatal(err)
	}
	return snaps.Complete
}

func TestScheduledSnapshots(t *testing.T) {
	s, _, _ := fixture(t)
	start := time.Now()
	runFor(t, s, 15*time.Second, func() error {
		if n := len(complete(t, s)); n < 2 {
			return fmt.Errorf("%d complete snapshots, want 2; status %+v", n, s.Status())
		}
		return nil
	})
	snaps := complete(t, s)
	for _, m := range snaps {
		if m.Timeline != 1 {
			t.Errorf("snapshot %s records timeline %d, want the streamer's 1", m.ID, m.Timeline)
		}
	}
	if got := value(s.Metrics.LastSuccess); got < float64(start.Unix()) {
		t.Errorf("last success metric %v, want a time after the test started (%d)", got, start.Unix())
	}
	if got := value(s.Metrics.LastDuration); got <= 0 {
		t.Errorf("last duration metric %v, want > 0", got)
	}
	st := s.Status()
	if st.LastSnapshot == "" || st.NextRun.IsZero() || st.ConsecutiveFailures != 0 {
		t.Errorf("status %+v; want a last snapshot, a next run and no failures", st)
	}
}

func TestOverlappingSnapshotIsSkipped(t *testing.T) {
	s, faulty, _ := fixture(t)
	gate := newGatedStore(faulty) // the first snapshot runs until the gate opens
	defer gate.release()
	s.Store = gate
	first := make(chan error, 1)
	go func() {
		_, err := s.TakeSnapshot(t.Context())
		first <- err
	}()
	select {
	case <-gate.entered:
	case err := <-first:
		t.Fatalf("the first snapshot ended before storing anything: %v", err)
	}
	_, errBusy := s.TakeSnapshot(t.Context())
	gate.release()
	if err := <-first; err != nil || !errors.Is(errBusy, ErrBusy) {
		t.Fatalf("first snapshot: %v, second: %v; want success and ErrBusy", err, errBusy)
	}
	if n := len(complete(t, s)); n != 1 {
		t.Errorf("%d complete snapshots, want 1", n)
	}
	if got := value(s.Metrics.Skipped); got != 1 || s.Status().Skipped != 1 {
		t.Errorf("skipped metric %v, status %d; want 1", got, s.Status().Skipped)
	}

	// Run with a schedule due every second and snapshots taking longer:
	// the runs that fall due meanwhile are skipped, never overlapped.
	faulty.SetFaults(storagetest.Faults{PutDelay: 700 * time.Millisecond})
	runFor(t, s, 20*time.Second, func() error {
		if st := s.Status(); st.Skipped < 2 {
			return fmt.Errorf("%d runs skipped in all, want 2; status %+v", st.Skipped, st)
		}
		return nil
	})
}

func TestFailedSnapshotIsRetriedAndReported(t *testing.T) {
	s, faulty, _ := fixture(t)
	s.RetryInitial, s.RetryMax, s.MaxAttempts = 50*time.Millisecond, 100*time.Millisecond, 4
	faulty.SetFaults(storagetest.Faults{PutErrRate: 1})
	runFor(t, s, 15*time.Second, func() error {
		if st := s.Status(); st.Failures < 3 {
			return fmt.Errorf("%d failures, want 3; status %+v", st.Failures, st)
		}
		return nil
	})
	st := s.Status()
	if got := value(s.Metrics.Failures); got < 3 {
		t.Errorf("failures metric %v, want >= 3", got)
	}
	if st.LastError == "" || st.LastFailure.IsZero() || st.ConsecutiveFailures < 3 || !st.LastSuccess.IsZero() {
		t.Errorf("status %+v; want the failures and their error, no success", st)
	}
	if got := value(s.Metrics.LastSuccess); got != 0 {
		t.Errorf("last success metric %v before any success, want 0", got)
	}
	faulty.SetFaults(storagetest.Faults{})
	runFor(t, s, 15*time.Second, func() error {
		if st := s.Status(); st.LastSuccess.IsZero() {
			return fmt.Errorf("no success once storage works again; status %+v", st)
		}
		return nil
	})
	if got := value(s.Metrics.LastSuccess); got == 0 {
		t.Error("last success metric not set after a success")
	}
	if st := s.Status(); st.ConsecutiveFailures != 0 {
		t.Errorf("consecutive failures %d after a success, want 0", st.ConsecutiveFailures)
	}
}

func TestUnreachableServerFails(t *testing.T) {
	s, _, _ := fixture(t)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.Source.Clone()
	cfg.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Timeout = time.Second
	s.Source = cfg
	_, err = s.TakeSnapshot(t.Context())
	if err == nil {
		t.Fatal("snapshot of a closed port succeeded")
	}
	if got := value(s.Metrics.Failures); got != 1 {
		t.Errorf("failures metric %v, want 1", got)
	}
	if st := s.Status(); !strings.Contains(st.LastError, cfg.Addr) {
		t.Errorf("status error %q, want the failure", st.LastError)
	}
}

func TestRetentionAfterSnapshot(t *testing.T) {
	s, _, _ := fixture(t)
	s.Retention = retention.Policy{KeepSnapshots: 2}
	var ids []catalog.SnapshotID
	for i := 0; i < 3; i++ {
		m, err := s.TakeSnapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
		// Snapshot ids name their start's second and retention keeps the
		// newest by id: each snapshot starts in a later second.
		testbed.NextSecond(t, m.ID.Time())
	}
	if !slices.IsSorted(ids) || ids[0].Time().Equal(ids[1].Time()) || ids[1].Time().Equal(ids[2].Time()) {
		t.Fatalf("snapshot ids %v; want one per second, in order", ids)
	}
	if n := len(complete(t, s)); n != 2 {
		t.Errorf("%d complete snapshots after retention, want 2", n)
	}
	if p := s.Status().LastPrune; p == nil || len(p.Expired) != 1 || p.Expired[0] != ids[0] || p.Error != "" {
		t.Errorf("last prune %+v, want the oldest snapshot %s expired", p, ids[0])
	}
}

// value reads a gauge's or counter's current value.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestPhysicalSnapshotPerFlavor takes a scheduled physical snapshot of
// MariaDB 10.11 and of MySQL 9.7: each with its family's tool, mariadb-backup
// and the clone plugin, the clone staged beside the datadir Datadir names.
func TestPhysicalSnapshotPerFlavor(t *testing.T) {
	for _, tt := range []struct {
		flavor testbed.Flavor
		tool   string
	}{
		{testbed.MariaDB1011, "mariadb-backup"},
		{testbed.MySQL97, "mysql clone plugin"},
	} {
		t.Run(tt.flavor.String(), func(t *testing.T) {
			if tt.flavor == testbed.MariaDB1011 {
				testbed.Binary(t, "mariadb-backup", testbed.MariaDBInstall)
			}
			if dir := tt.flavor.BinDir(); dir != "" {
				t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
			}
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: tt.flavor})
			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
			db.Exec(t, "INSERT INTO app.t (v) VALUES ('a'), ('b'), ('c')")
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := mysql.ParseDSN(db.PitrDSN())
			s := &Scheduler{Spec: "@daily", Method: catalog.MethodPhysical, Source: cfg, Store: st, Datadir: db.DataDir(),
				Timeline: func() catalog.TimelineID { return 1 }}
			m, err := s.TakeSnapshot(t.Context())
			if err != nil {
				t.Fatalf("TakeSnapshot: %v", err)
			}
			if !strings.HasPrefix(m.Tool, tt.tool) || m.Method != catalog.MethodPhysical || m.Binlog.File == "" {
				t.Errorf("snapshot by %q at %s; want %s", m.Tool, m.Binlog, tt.tool)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(db.DataDir()), "mysql-pitr-clone-*")); len(left) > 0 {
				t.Errorf("clone staging left: %v", left)
			}
		})
	}
}
