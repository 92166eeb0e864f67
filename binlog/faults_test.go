package binlog

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// errSpoolFault is what the faulty spool injects.
var errSpoolFault = errors.New("injected spool fault")

// spoolFaults fails the spool operation op from its first-th occurrence
// on, count times (a disk that fails for a while, then recovers).
type spoolFaults struct {
	mu          sync.Mutex
	op          SpoolOp
	first, left int
	seen        int
	injected    int
}

func (f *spoolFaults) check(op SpoolOp) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op != f.op {
		return nil
	}
	f.seen++
	if f.seen >= f.first && f.left > 0 {
		f.left--
		f.injected++
		return errSpoolFault
	}
	return nil
}

func (f *spoolFaults) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// TestArchivePathFaults fails each step of the archive path in turn, with a
// real server and real storage, under a write load across binlog files:
// writing, fsyncing and renaming a segment in the spool, writing a spool
// record, reading a sealed segment back, a sealed segment lost or altered
// in the spool, and storage refusing data puts, index record puts, or
// losing their answers. Whatever fails, the stream stops and resumes from
// what is durable: the archive ends byte-identical to the server's binlog,
// on one timeline (no gap recorded, none needed), with nothing to report.
func TestArchivePathFaults(t *testing.T) {
	type setup struct {
		spool  *spoolFaults
		faulty *storagetest.Faulty
		s      *Streamer
		write  func(n int) // adds n rows to the load
	}
	for _, tc := range []struct {
		name   string
		spool  *spoolFaults
		store  storagetest.Faults
		during func(t *testing.T, st setup) // early in the load
	}{
		{name: "spool file create", spool: &spoolFaults{op: OpCreate, first: 5, left: 3}},
		{name: "spool write", spool: &spoolFaults{op: OpWrite, first: 5, left: 3}},
		{name: "spool fsync", spool: &spoolFaults{op: OpSync, first: 3, left: 3}},
		{name: "spool rename", spool: &spoolFaults{op: OpRename, first: 3, left: 3}},
		{name: "spool record", spool: &spoolFaults{op: OpRecord, first: 3, left: 4}},
		{name: "spool read for upload", spool: &spoolFaults{op: OpRead, first: 3, left: 3}},
		{name: "sealed segment deleted from the spool", during: func(t *testing.T, st setup) { damageSpool(t, st.faulty, st.s, st.write, os.Remove) }},
		{name: "sealed segment altered in the spool", during: func(t *testing.T, st setup) {
			damageSpool(t, st.faulty, st.s, st.write, func(p string) error {
				b, err := os.ReadFile(p)
				if err == nil {
					b[len(b)/2] ^= 0x01
					err = os.WriteFile(p, b, 0o600)
				}
				return err
			})
		}},
		{name: "data and record puts break off", store: storagetest.Faults{PutErrRate: 0.3}},
		{name: "put answers lost", store: storagetest.Faults{PutAckLossRate: 0.3}},
		{name: "storage down", during: func(t *testing.T, st setup) {
			st.faulty.Down(true)
			st.write(20)
			// Down until the streamer has felt it.
			testbed.Eventually(t, 20*time.Second, func() error {
				if got := st.s.Status(); got.UploadError == "" || got.SpoolBytes == 0 {
					return fmt.Errorf("storage down: upload error %q, spool %d bytes; want an error and a spool", got.UploadError, got.SpoolBytes)
				}
				return nil
			})
			st.faulty.Down(false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
			inner, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			faulty := storagetest.NewFaulty(inner, 3, storagetest.Faults{})
			s := newStreamer(t, db, faulty, t.TempDir())
			s.FlushInterval = 50 * time.Millisecond // the load waits for each batch's segment
			s.RetryMax = 200 * time.Millisecond
			s.Uploader().RetryMax = 200 * time.Millisecond
			if tc.spool != nil {
				s.Spool.fault = tc.spool.check
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			<-s.Started()
			faulty.SetFaults(tc.store)

			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v BLOB)")
			write := func(n int) {
				for range n {
					b := make([]byte, 1500)
					rand.Read(b)
					db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", b)
				}
			}
			// 120 rows over two binlog files, archived ten at a time: each
			// batch is a segment or more, so that the spool's and storage's
			// steps each run a dozen times and more.
			for batch := range 12 {
				write(10)
				switch batch {
				case 2:
					if tc.during != nil {
						tc.during(t, setup{spool: tc.spool, faulty: faulty, s: s, write: write})
					}
				case 6:
					db.Exec(t, "FLUSH BINARY LOGS")
				}
				waitDurable(t, s, serverEnd(t, db), 60*time.Second)
			}
			faulty.SetFaults(storagetest.Faults{})
			waitDurable(t, s, serverEnd(t, db), 60*time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.spool != nil && tc.spool.count() == 0:
				t.Fatalf("no %s fault was injected", tc.spool.op)
			case tc.store != (storagetest.Faults{}) && faulty.Injected() == 0:
				t.Fatal("no storage fault was injected")
			}
			arch, err := catalog.Load(t.Context(), inner, catalog.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(arch.Timelines) != 1 || len(arch.Issues) != 0 {
				t.Fatalf("%d timelines, issues %v: want one timeline (no gap) and nothing damaged", len(arch.Timelines), arch.Issues)
			}
			compareWithServer(t, inner, db)
			t.Logf("spool faults %d, storage faults %d, stream restarts: last error %q", func() int {
				if tc.spool != nil {
					return tc.spool.count()
				}
				return 0
			}(), faulty.Injected(), s.Status().LastError)
		})
	}
}

// damageSpool stops uploads, writes until a sealed segment waits in the
// spool, damages its data file with harm, and lets uploads go on.
func damageSpool(t *testing.T, faulty *storagetest.Faulty, s *Streamer, write func(n int), harm func(string) error) {
	faulty.Down(true)
	defer faulty.Down(false)
	write(10)
	var sealed string
	testbed.Eventually(t, 20*time.Second, func() error {
		matches, _ := filepath.Glob(filepath.Join(s.Spool.Dir(), "*"+dataSuffix))
		for _, m := range matches {
			if !strings.HasPrefix(filepath.Base(m), ".") {
				sealed = m
				return nil
			}
		}
		return fmt.Errorf("no sealed segment waits in the spool, only %v", matches)
	})
	if err := harm(sealed); err != nil {
		t.Errorf("damage %s: %v", sealed, err)
	}
}

// TestSupersededWriterIsLeftOut: writer A has checked that it still owns
// the archive and started storing a segment, slowly (its path to storage
// hangs); meanwhile writer B takes the archive over and archives on. A's
// segment lands after B's fence: readers leave it out, A stops at its next
// segment, and the archive is B's chain, byte-identical to the server's
// binlog with no break.
func TestSupersededWriterIsLeftOut(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	inner, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	slowA := storagetest.NewFaulty(inner, 5, storagetest.Faults{})
	storingA := &segmentPuts{Storage: slowA, started: make(chan string, 1)}
	a := newStreamer(t, db, storingA, t.TempDir())
	ctxA, cancelA := context.WithCancel(t.Context())
	defer cancelA()
	doneA := make(chan error, 1)
	go func() { doneA <- a.Run(ctxA) }()
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))")
	for range 20 {
		db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
	}
	waitDurable(t, a, serverEnd(t, db), 30*time.Second)

	slowA.SetFaults(storagetest.Faults{PutDelay: 3 * time.Second})
	storingA.watch.Store(true)
	for range 20 {
		db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
	}
	select { // A sealed a segment and is storing it
	case <-storingA.started:
	case <-time.After(30 * time.Second):
		t.Fatalf("writer A stored no segment: %+v", a.Status())
	}
	b := newStreamer(t, db, inner, t.TempDir())
	ctxB, cancelB := context.WithCancel(t.Context())
	doneB := make(chan error, 1)
	go func() { doneB <- b.Run(ctxB) }()
	<-b.Started()
	for range 20 {
		db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
	}
	select {
	case err := <-doneA:
		if !errors.Is(err, catalog.ErrFenced) {
			t.Fatalf("writer A stopped with %v, want ErrFenced", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writer A went on after writer B took the archive over")
	}
	waitDurable(t, b, serverEnd(t, db), 30*time.Second)
	cancelB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	arch, err := catalog.Load(t.Context(), inner, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(arch.Superseded) == 0 {
		t.Fatal("nothing of writer A's landed after writer B's fence: the race this test stages did not happen")
	}
	if len(arch.Timelines) != 1 || len(arch.Issues) != 0 {
		t.Fatalf("%d timelines, issues %v", len(arch.Timelines), arch.Issues)
	}
	if breaks, _ := arch.Timelines[0].Breaks(); len(breaks) != 0 {
		t.Fatalf("breaks %v", breaks)
	}
	compareWithServer(t, inner, db)
	t.Logf("left out, stored by writer A after B took over: %v", arch.Superseded)
}

// segmentPuts reports on started the key of the first segment data Put
// that begins once watch is set.
type segmentPuts struct {
	storage.Storage
	watch   atomic.Bool
	started chan string
}

func (p *segmentPuts) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if _, isRecord, err := catalog.ParseSegmentKey(key); err == nil && !isRecord && p.watch.Load() {
		select {
		case p.started <- key:
		default:
		}
	}
	return p.Storage.Put(ctx, key, r, opts)
}
