package binlog

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func newSource(t *testing.T, db *testbed.MariaDB) *Source {
	t.Helper()
	cfg, err := mysql.ParseDSN(db.PitrDSN())
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// openSpools are the spools tests opened, by directory: a test that starts
// a streamer again on the same spool stands for a restarted agent, whose
// predecessor's lock died with it.
var openSpools sync.Map

func openTestSpool(t *testing.T, dir string) *Spool {
	t.Helper()
	if old, ok := openSpools.LoadAndDelete(dir); ok {
		old.(*Spool).Close()
	}
	sp, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	openSpools.Store(dir, sp)
	t.Cleanup(func() {
		if openSpools.CompareAndDelete(dir, sp) {
			sp.Close()
		}
	})
	return sp
}

func newStreamer(t *testing.T, db *testbed.MariaDB, st storage.Storage, spoolDir string) *Streamer {
	t.Helper()
	sp := openTestSpool(t, spoolDir)
	return &Streamer{Source: newSource(t, db), Store: st, Spool: sp, ServerID: 999, FlushInterval: 200 * time.Millisecond,
		Logger: testLogger(t), ConnectTimeout: 10 * time.Second, LagPoll: 200 * time.Millisecond}
}

// serverEnd returns the server's current binlog file and size.
func serverEnd(t *testing.T, db *testbed.MariaDB) catalog.Position {
	t.Helper()
	var file string
	var pos uint64
	var a, b, c any
	cols := []any{&file, &pos, &a, &b}
	row := db.DB(t).QueryRow("SHOW MASTER STATUS")
	_ = c
	if err := row.Scan(cols...); err != nil {
		t.Fatal(err)
	}
	return catalog.Position{File: file, Pos: pos}
}

// waitDurable waits until the uploader reports pos durable.
func waitDurable(t *testing.T, s *Streamer, pos catalog.Position, timeout time.Duration) {
	t.Helper()
	testbed.Eventually(t, timeout, func() error {
		if _, d, _ := s.Uploader().Durable(); d.File < pos.File || d.File == pos.File && d.Pos < pos.Pos {
			return fmt.Errorf("archive did not reach %s (durable: %s, status %+v)", pos, d, s.Status())
		}
		return nil
	})
}

// compareWithServer fetches the archive's newest timeline and checks that
// every fetched file equals the server's file over the archived range.
func compareWithServer(t *testing.T, st storage.Storage, db *testbed.MariaDB) []FetchResult {
	t.Helper()
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tl := arch.Last()
	if tl == nil {
		t.Fatal("archive is empty")
	}
	return compareTimeline(t, st, tl, db)
}

// compareTimeline fetches timeline tl and checks that every fetched file
// equals the server's file over the archived range.
func compareTimeline(t *testing.T, st storage.Storage, tl *catalog.TimelineState, db *testbed.MariaDB) []FetchResult {
	t.Helper()
	if h := tl.Holes(); len(h) > 0 {
		t.Fatalf("holes: %+v", h)
	}
	out := t.TempDir()
	files, err := Fetch(t.Context(), st, tl, out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(db.BinlogDir(), f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if f.Partial && len(want) > 21 {
			// A replica never sees the in-use flag of the active file's format
			// description; the server clears it in its own file on closing it.
			want[21] &^= 0x01
		}
		if uint64(len(want)) < f.End {
			t.Fatalf("%s: archive holds %d bytes, server only %d", f.Name, f.End, len(want))
		}
		if !bytes.Equal(got, want[:f.End]) {
			i := 0
			for i < len(got) && i < int(f.End) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: archive (%d bytes) differs from the server's file over [0,%d): first at %d", f.Name, len(got), f.End, i)
		}
	}
	return files
}

func TestStreamerArchivesByteForByte(t *testing.T) {
	for _, checksum := range []string{"CRC32", "NONE"} {
		t.Run("checksum="+checksum, func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{BinlogChecksum: checksum})
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			s := newStreamer(t, db, st, t.TempDir())
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()

			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100), b LONGBLOB)")
			for i := 0; i < 50; i++ {
				db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprint("row ", i))
			}
			db.Exec(t, "FLUSH BINARY LOGS")
			big := make([]byte, 32<<20) // one row, one event larger than a 16 MB protocol packet
			rand.Read(big)
			db.Exec(t, "INSERT INTO app.t (v, b) VALUES ('big', ?)", big)
			db.Exec(t, "ALTER TABLE app.t ADD COLUMN c INT")
			waitDurable(t, s, serverEnd(t, db), 30*time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			files := compareWithServer(t, st, db)
			if len(files) < 2 {
				t.Fatalf("fetched %d files, want at least 2 (FLUSH BINARY LOGS)", len(files))
			}
		})
	}
}

// TestStreamerLosesNothingWhenStorageFails puts a fault-injecting store
// under the streamer: puts that break off, acknowledgements lost after a
// successful put, slow puts, and an outage long enough to fill the spool.
func TestStreamerLosesNothingWhenStorageFails(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	inner, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	faulty := storagetest.NewFaulty(inner, 7, storagetest.Faults{PutErrRate: 0.3, PutAckLossRate: 0.2, PutDelay: 20 * time.Millisecond})
	s := newStreamer(t, db, faulty, t.TempDir())
	s.Spool.max = 256 << 10 // small, so that the outage fills it
	s.RetryMax = 300 * time.Millisecond
	s.Uploader().RetryMax = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v BLOB)")
	write := func(n int) {
		for i := 0; i < n; i++ {
			b := make([]byte, 2000) // incompressible, so the spool fills as fast as the binlog grows
			rand.Read(b)
			db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", b)
		}
	}
	write(100)
	select { // the outage begins once the streamer has taken the archive over
	case <-s.Started():
	case <-time.After(30 * time.Second):
		t.Fatalf("the streamer did not start: %+v", s.Status())
	}
	faulty.Down(true)
	write(400) // ~1 MB: more than the spool holds
	testbed.Eventually(t, 20*time.Second, func() error {
		if got := s.Status(); got.SpoolBytes == 0 || got.UploadError == "" {
			return fmt.Errorf("during the outage: spool %d bytes, upload error %q; want a spool and an error", got.SpoolBytes, got.UploadError)
		}
		return nil
	})
	faulty.Down(false)
	db.Exec(t, "FLUSH BINARY LOGS")
	write(100)
	waitDurable(t, s, serverEnd(t, db), 60*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if faulty.Injected() == 0 {
		t.Fatal("no fault was injected")
	}
	if s.Status().SpoolFullPauses == 0 {
		t.Error("the spool never filled up: the outage did not test back-pressure")
	}
	arch, err := catalog.Load(t.Context(), inner, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(arch.Timelines) != 1 {
		t.Fatalf("%d timelines, want 1: the outage must not become a gap", len(arch.Timelines))
	}
	compareWithServer(t, inner, db)
	t.Logf("%d faults injected", faulty.Injected())
}

// proxy forwards TCP connections to a server and can freeze or cut them,
// as a network would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	frozen bool
	cond   *sync.Cond
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
	return p
}

func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for p.frozen {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// freeze stops forwarding without closing anything: a stuck network.
func (p *proxy) freeze(on bool) {
	p.mu.Lock()
	p.frozen = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// cut closes every forwarded connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// TestStreamerSurvivesServerRestartsAndNetworkFaults restarts and kills the
// server and freezes and cuts the network under a streaming agent; the
// archive stays whole and byte-identical.
func TestStreamerSurvivesServerRestartsAndNetworkFaults(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", db.Port()))
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := newStreamer(t, db, st, t.TempDir())
	s.Source.Config.Addr = px.addr()
	s.ReadTimeout, s.Heartbeat, s.RetryMax = 1500*time.Millisecond, 300*time.Millisecond, time.Second
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))")
	write := func(n int) {
		for i := 0; i < n; i++ {
			db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
		}
	}
	steps := []struct {
		name string
		do   func()
	}{
		{"clean restart", func() {
			if err := db.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := db.Start(); err != nil {
				t.Fatal(err)
			}
		}},
		{"kill -9", func() {
			if err := db.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := db.Start(); err != nil {
				t.Fatal(err)
			}
		}},
		{"stuck network", func() {
			px.freeze(true)
			// Frozen until the streamer gives the silent connection up
			// (after its read timeout).
			testbed.Eventually(t, 30*time.Second, func() error {
				if st := s.Status(); st.Connected {
					return fmt.Errorf("still connected through the frozen network; status %+v", st)
				}
				return nil
			})
			px.freeze(false)
		}},
		{"dropped connections", func() { px.cut() }},
	}
	for _, step := range steps {
		write(50)
		waitDurable(t, s, serverEnd(t, db), 30*time.Second)
		reconnects := s.Status()
		step.do()
		write(50)
		waitDurable(t, s, serverEnd(t, db), 30*time.Second)
		t.Logf("%s: archive caught up (last error before: %q)", step.name, reconnects.LastError)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(arch.Timelines) != 1 {
		t.Fatalf("%d timelines: restarts and network faults must not become gaps", len(arch.Timelines))
	}
	compareWithServer(t, st, db)
}

func TestCompactorMergesClosedFiles(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := newStreamer(t, db, st, t.TempDir())
	s.FlushInterval = 20 * time.Millisecond // many small segments
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))")
	for f := 0; f < 3; f++ {
		for i := 0; i < 40; i++ {
			db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
			if i%10 == 9 { // each file in several segments
				waitDurable(t, s, serverEnd(t, db), 30*time.Second)
			}
		}
		db.Exec(t, "FLUSH BINARY LOGS")
	}
	waitDurable(t, s, serverEnd(t, db), 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	before, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &Compactor{Store: st, Gen: s.Uploader().Generation, Checkpoint: s.Uploader().Checkpoint}
	n, err := c.Compact(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	after, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	perFile := map[uint64]int{}
	for _, seg := range after.Last().Segments {
		perFile[seg.FileNum]++
	}
	if n < 3 || len(after.Last().Segments) >= len(before.Last().Segments) {
		t.Fatalf("merged %d files; segments %d → %d", n, len(before.Last().Segments), len(after.Last().Segments))
	}
	last := after.Last().Segments[len(after.Last().Segments)-1].FileNum
	for f, count := range perFile {
		if f != last && count != 1 {
			t.Errorf("closed file %d still has %d segments", f, count)
		}
	}
	cb, ca := before.Last().Coverage(), after.Last().Coverage()
	if cb.From != ca.From || cb.To != ca.To || cb.Bytes != ca.Bytes || !cb.ToTime.Equal(ca.ToTime) || cb.LastGTID != ca.LastGTID {
		t.Errorf("coverage changed: before %+v, after %+v", cb, ca)
	}
	objs, _ := st.List(t.Context(), catalog.BinlogPrefix)
	t.Logf("segments %d → %d, objects now %d", len(before.Last().Segments), len(after.Last().Segments), len(objs))
	compareWithServer(t, st, db)
	// A second run has nothing to do.
	if n, err := c.Compact(t.Context()); err != nil || n != 0 {
		t.Fatalf("second compaction: %d, %v", n, err)
	}
}

// TestStreamerStartsTimelineAfterRestore: a restore marker the archive has
// not seen starts a new timeline, once.
func TestStreamerStartsTimelineAfterRestore(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "mysql-pitr-restore.json")
	spool := t.TempDir()
	run := func() {
		s := newStreamer(t, db, st, spool)
		s.RestoreMarker = marker
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		db.Exec(t, "CREATE TABLE IF NOT EXISTS mysql.pitr_probe (id INT PRIMARY KEY AUTO_INCREMENT)")
		db.Exec(t, "INSERT INTO mysql.pitr_probe VALUES ()")
		waitDurable(t, s, serverEnd(t, db), 30*time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	timelines := func() []*catalog.TimelineState {
		arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return arch.Timelines
	}
	run()
	os.WriteFile(marker, []byte(`{"id": "r1", "target": "2026-11-27T10:41:07Z"}`), 0o644)
	run()
	run()
	tls := timelines()
	if len(tls) != 2 || tls[1].Reason != catalog.ReasonRestored || tls[1].RestoreID != "r1" {
		t.Fatalf("want a second timeline for restore r1 and no third, got %d: %+v", len(tls), tls[len(tls)-1].Timeline)
	}
}

// binlogEnd returns where the server's binlog ends, from SHOW BINARY LOGS
// (which every server has; MySQL 8.4 dropped SHOW MASTER STATUS).
func binlogEnd(t *testing.T, db *testbed.MariaDB) catalog.Position {
	t.Helper()
	src := newSource(t, db)
	logs, err := src.BinaryLogs(t.Context())
	if err != nil || len(logs) == 0 {
		t.Fatalf("SHOW BINARY LOGS: %v, %v", logs, err)
	}
	last := logs[len(logs)-1]
	return catalog.Position{File: last.Name, Pos: last.Size}
}

// TestStreamerOnEachServer archives MariaDB 10.11, MariaDB 11.8 (whose
// events inside a transaction carry no position by default) and MySQL 9.7
// (GTIDs on), each as its official image starts it, under writes that
// include a 10 MB transaction, DDL and a new binlog file, across a kill -9
// of the server: the archive is byte-identical to the server's binlog, on
// one timeline.
func TestStreamerOnEachServer(t *testing.T) {
	for _, f := range testbed.Flavors {
		t.Run(f.String(), func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			s := newStreamer(t, db, st, t.TempDir())
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			db.Exec(t, "CREATE DATABASE app")
			db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100), b LONGBLOB)")
			for i := range 30 {
				db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprint("row ", i))
			}
			big := make([]byte, 10<<20)
			rand.Read(big)
			db.Exec(t, "INSERT INTO app.t (v, b) VALUES ('big', ?)", big)
			db.Exec(t, "FLUSH BINARY LOGS")
			db.Exec(t, "ALTER TABLE app.t ADD COLUMN c INT")
			waitDurable(t, s, binlogEnd(t, db), 30*time.Second)
			if err := db.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := db.Start(); err != nil {
				t.Fatal(err)
			}
			for i := range 30 {
				db.Exec(t, "INSERT INTO app.t (v, c) VALUES (?, ?)", fmt.Sprint("after ", i), i)
			}
			waitDurable(t, s, binlogEnd(t, db), 60*time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(arch.Timelines) != 1 || len(arch.Issues) != 0 {
				t.Fatalf("%d timelines, issues %v; want one timeline across the kill", len(arch.Timelines), arch.Issues)
			}
			files := compareWithServer(t, st, db)
			t.Logf("%s: %d binlog files identical to the server's", f, len(files))
		})
	}
}
