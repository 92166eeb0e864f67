package binlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// The fuzz tests feed bytes from outside (a server, a stored segment) to
// every parser: none may panic, and each keeps the promises its doc makes.
// Run one with: go test -fuzz=FuzzTrackerFeed -fuzztime=45s ./binlog/

// seedFiles are the recorded binlogs used as seeds, each cut to at most
// 4 KiB: the fuzzer minimizes every input that finds new code, and
// minimizing large ones takes up a whole run.
func seedFiles(tb testing.TB) [][]byte {
	tb.Helper()
	var files [][]byte
	for _, b := range recordedFiles(tb) {
		if len(b) > 4<<10 {
			// Whole events only: cut at the end of the last event that fits.
			cut := FirstEventPos
			for _, ev := range scanEvents(b, 0) {
				if end := int(ev.pos) + len(ev.b); end <= 4<<10 {
					cut = end
				}
			}
			b = b[:cut]
		}
		files = append(files, b)
	}
	return files
}

// recordedFiles are the whole recorded binlogs of testdata.
func recordedFiles(tb testing.TB) [][]byte {
	tb.Helper()
	var files [][]byte
	names := []string{"mysql-8.0.11.binlog.000001", "mysql-9.4.0.binlog.000001", taggedFixtures["CRC32"], taggedFixtures["NONE"]}
	for _, name := range append(names, mariadbFixtures...) {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, b)
	}
	return files
}

// scanEvents returns the events of a stream up to its end or first error.
func scanEvents(stream []byte, pos uint64) []event {
	sc := NewScanner(bytes.NewReader(stream), pos)
	var evs []event
	for {
		ev, pos, err := sc.Next()
		if err != nil {
			return evs
		}
		evs = append(evs, event{pos, bytes.Clone(ev)})
	}
}

// seedEvents are single events: every distinct kind from the recorded
// files and from the builder's test cases.
func seedEvents(tb testing.TB) [][]byte {
	tb.Helper()
	seen := map[[2]int]bool{} // (type, size) pairs, to keep the corpus small
	var out [][]byte
	add := func(ev []byte) {
		k := [2]int{int(ev[4]), len(ev)}
		if !seen[k] {
			seen[k] = true
			out = append(out, ev)
		}
	}
	for _, f := range recordedFiles(tb) {
		for _, ev := range scanEvents(f, 0) {
			add(ev.b)
		}
	}
	for _, b := range builderFiles() {
		for _, ev := range b.evs {
			add(ev.b)
		}
	}
	return out
}

// builderFiles are the files of every tracker test case, with and without checksums.
func builderFiles() []*fileBuilder {
	var out []*fileBuilder
	for _, checksum := range []bool{true, false} {
		for _, tc := range mariadbCases {
			b, _, _ := buildCase(tc, true, checksum)
			out = append(out, b)
		}
		for _, tc := range mysqlCases {
			b, _, _ := buildCase(tc, false, checksum)
			out = append(out, b)
		}
	}
	return out
}

func FuzzParseHeader(f *testing.F) {
	for _, ev := range seedEvents(f) {
		f.Add(ev[:HeaderSize])
	}
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, ev []byte) {
		h, err := ParseHeader(ev)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(ev) < HeaderSize || h.Size < HeaderSize {
			t.Fatalf("accepted a %d-byte header of an event of %d bytes", len(ev), h.Size)
		}
		// The fields are the header's bytes, nothing else.
		var enc [HeaderSize]byte
		binary.LittleEndian.PutUint32(enc[0:], h.Timestamp)
		enc[4] = byte(h.Type)
		binary.LittleEndian.PutUint32(enc[5:], h.ServerID)
		binary.LittleEndian.PutUint32(enc[9:], h.Size)
		binary.LittleEndian.PutUint32(enc[13:], h.NextPos)
		binary.LittleEndian.PutUint16(enc[17:], h.Flags)
		if !bytes.Equal(enc[:], ev[:HeaderSize]) {
			t.Fatalf("header %+v re-encodes as %x, not %x", h, enc, ev[:HeaderSize])
		}
		_ = h.Artificial()
		_ = h.Time()
	})
}

func FuzzParseFormat(f *testing.F) {
	for _, ev := range seedEvents(f) {
		if EventType(ev[4]) == FormatDescription {
			f.Add(ev)
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize+2+50+4+1+5))
	f.Fuzz(func(t *testing.T, ev []byte) {
		fm, err := ParseFormat(ev)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(fm.ServerVersion) > 50 || bytes.IndexByte([]byte(fm.ServerVersion), 0) >= 0 {
			t.Fatalf("server version %q", fm.ServerVersion)
		}
		if alg := ev[len(ev)-5]; fm.Checksum != (alg == 1) {
			t.Fatalf("checksum %v with algorithm %d", fm.Checksum, alg)
		}
		_ = fm.MariaDB()
	})
}

// rotateEvent builds a Rotate event to name and pos, with a CRC32 or not.
func buildRotate(name string, pos uint64, checksum bool, artificial bool) []byte {
	b := newFileBuilder(checksum)
	b.rotate(name, pos)
	ev := b.evs[0].b
	if artificial {
		binary.LittleEndian.PutUint32(ev[13:], 0)
		binary.LittleEndian.PutUint16(ev[17:], artificialFlag)
		if checksum {
			binary.LittleEndian.PutUint32(ev[len(ev)-4:], crc32.ChecksumIEEE(ev[:len(ev)-4]))
		}
	}
	return ev
}

func FuzzParseRotate(f *testing.F) {
	for _, ev := range seedEvents(f) {
		if EventType(ev[4]) == RotateEvent {
			f.Add(ev, "binlog.000002", uint64(4))
		}
	}
	f.Add(fakeRotate("mariadb-bin.000001", 4), "mariadb-bin.000001", uint64(4))
	f.Add([]byte{}, "", uint64(0))
	f.Add(make([]byte, HeaderSize+3), "x.1", uint64(1)<<40)
	f.Fuzz(func(t *testing.T, ev []byte, name string, pos uint64) {
		// Arbitrary bytes: errors are fine, panics are not.
		for _, checksum := range []bool{true, false} {
			if _, _, err := (Format{Checksum: checksum}).ParseRotate(ev); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		}
		if _, _, err := ParseFakeRotate(ev); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}

		// A well-formed Rotate gives back what it was built from.
		for _, checksum := range []bool{true, false} {
			onDisk := buildRotate(name, pos, checksum, false)
			if n, p, err := (Format{Checksum: checksum}).ParseRotate(onDisk); err != nil || n != name || p != pos {
				t.Fatalf("ParseRotate(checksum=%v) = %q, %d, %v; want %q, %d", checksum, n, p, err, name, pos)
			}
			fake := buildRotate(name, pos, checksum, true)
			n, p, err := ParseFakeRotate(fake)
			if !checksum && len(name) >= 4 {
				// Without a checksum, a name whose last four bytes happen to
				// be the CRC32 of the rest reads as checksummed: skip it.
				body := fake[:len(fake)-4]
				if crc32.ChecksumIEEE(body) == binary.LittleEndian.Uint32(fake[len(fake)-4:]) {
					continue
				}
			}
			if err != nil || n != name || p != pos {
				t.Fatalf("ParseFakeRotate(checksum=%v) = %q, %d, %v; want %q, %d", checksum, n, p, err, name, pos)
			}
		}
	})
}

// FuzzEventBodies runs the parsers of the event bodies the tracker reads
// (query text, MySQL and MariaDB GTIDs) on any event at least a header long,
// which is what Tracker.Feed passes them.
func FuzzEventBodies(f *testing.F) {
	for _, ev := range seedEvents(f) {
		switch EventType(ev[4]) {
		case QueryEvent, MariaDBQueryCompressed, GTIDEvent, AnonymousGTIDEvent, GTIDTaggedEvent, MariaDBGTIDEvent:
			f.Add(ev)
		}
	}
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, ev []byte) {
		if len(ev) < HeaderSize {
			return
		}
		h, _ := ParseHeader(ev)
		for _, checksum := range []bool{true, false} {
			fm := Format{Checksum: checksum}
			if q, err := fm.queryText(ev); err == nil && len(q) > len(ev) {
				t.Fatalf("query text of %d bytes from a %d-byte event", len(q), len(ev))
			}
			for _, typ := range []EventType{GTIDEvent, AnonymousGTIDEvent} {
				h.Type = typ
				gi, err := fm.parseMySQLGTID(h, ev)
				if err != nil {
					continue
				}
				_ = gi.GTID.String()
				// A commit time survives a segment record's microseconds.
				if !gi.CommitTime.IsZero() && gi.CommitTime.UnixMicro() == 0 {
					t.Fatalf("commit time %v is lost by State/Restore", gi.CommitTime)
				}
				if gi.GTID.Anonymous != (typ == AnonymousGTIDEvent) {
					t.Fatalf("type %d parsed as anonymous=%v", typ, gi.GTID.Anonymous)
				}
			}
			if gi, err := fm.parseMariaDBGTID(h, ev); err == nil {
				_ = gi.GTID.String()
			}
			if gi, err := fm.parseTaggedGTID(ev); err == nil {
				_ = gi.GTID.String()
			} else if !errors.Is(err, ErrUnreadableGTID) {
				t.Fatalf("tagged GTID error %v does not wrap ErrUnreadableGTID", err)
			}
		}
	})
}

// fuzzFormats are the format descriptions FuzzTrackerFeed starts a file with.
func fuzzFormats() [][]byte {
	var out [][]byte
	for _, checksum := range []bool{true, false} {
		b := newFileBuilder(checksum)
		out = append(out, b.evs[b.mariaFDE()].b, b.evs[b.mysqlFDE()].b)
	}
	return out
}

// splitEvents cuts a stream into events by their header sizes; a size that
// does not fit takes what is left, so the tracker also sees torn events.
func splitFuzzEvents(data []byte) [][]byte {
	var evs [][]byte
	for len(data) > 0 {
		n := len(data)
		if n >= HeaderSize {
			if size := int(binary.LittleEndian.Uint32(data[9:])); size >= HeaderSize && size <= n {
				n = size
			}
		}
		evs = append(evs, data[:n])
		data = data[n:]
	}
	return evs
}

// FuzzTrackerFeed feeds arbitrary event sequences to a tracker. It must
// never panic, report a transaction only as ending with the event fed, and
// a second tracker resumed from the first one's State after every event must
// report the same transactions.
func FuzzTrackerFeed(f *testing.F) {
	formats := fuzzFormats()
	// which picks a format description to start with; the seeds carry their own.
	for _, b := range builderFiles() {
		f.Add(byte(0xff), b.file()[FirstEventPos:])
	}
	for _, file := range seedFiles(f) {
		f.Add(byte(0xff), file[FirstEventPos:])
	}
	b := newFileBuilder(true)
	b.mariaGTID(1, gtidFlTransactional)
	b.query("SAVEPOINT sp")
	b.xid(1)
	f.Add(byte(0), b.file()[FirstEventPos:])
	f.Add(byte(0), []byte{})
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		evs := splitFuzzEvents(data)
		if int(which) < len(formats) {
			evs = append([][]byte{formats[which]}, evs...)
		}
		var a, b Tracker
		pos := uint64(FirstEventPos)
		for _, ev := range evs {
			txA, errA := a.Feed(ev, pos)
			txB, errB := b.Feed(ev, pos)
			if errA != nil && !errors.Is(errA, ErrMalformed) {
				t.Fatalf("at %d: error %v does not wrap ErrMalformed", pos, errA)
			}
			if (errA == nil) != (errB == nil) {
				t.Fatalf("at %d: errors differ after Restore: %v, %v", pos, errA, errB)
			}
			if txA != nil {
				if txA.End != pos+uint64(len(ev)) || txA.Start > pos {
					t.Fatalf("event [%d,%d) reported %s", pos, pos+uint64(len(ev)), describeTxn(txA))
				}
			}
			if (txA == nil) != (txB == nil) || txA != nil && describeTxn(txA) != describeTxn(txB) {
				t.Fatalf("at %d: %v, after Restore %v", pos, txA, txB)
			}
			if open, start := a.Open(); open && start > pos {
				t.Fatalf("open transaction starts at %d, after the event at %d", start, pos)
			}
			pos += uint64(len(ev))
			// Resume b from a's state, as a restarted agent does.
			st := restoredState(t, a.State())
			b = Tracker{}
			if fm, ok := a.Format(); ok {
				b.SetFormat(fm)
			}
			b.Restore(st)
		}
	})
}

// FuzzScanner reads arbitrary streams. Events must come whole and chained,
// a clean end must consume every byte, errors must stick, and reading one
// byte at a time must give the same result.
//
// Each run allocates two scanners' 256 KiB read buffers, and the fuzzer
// minimizes every input that finds new code with O(n²) runs, which stalls a
// worker for the whole default minute; run it with -fuzzminimizetime=5s.
func FuzzScanner(f *testing.F) {
	for _, file := range seedFiles(f) {
		f.Add(file, true)
		f.Add(file[FirstEventPos:], false)
		f.Add(file[:len(file)-1], true)
	}
	f.Add([]byte{}, true)
	f.Add([]byte{}, false)
	f.Add(Magic, true)
	f.Add([]byte{0xfe, 'b', 'i', 'x'}, true)
	f.Fuzz(func(t *testing.T, data []byte, whole bool) {
		start := uint64(FirstEventPos)
		if whole {
			start = 0
		}
		a := scanAllChecked(t, bytes.NewReader(data), start)
		b := scanAllChecked(t, iotest.OneByteReader(bytes.NewReader(data)), start)
		if a != b {
			t.Fatalf("read whole: %s\nread byte by byte: %s", a, b)
		}
	})
}

// scanAll reads a stream to its end and summarises what it read, checking
// the scanner's promises on the way.
func scanAllChecked(t *testing.T, r io.Reader, start uint64) string {
	t.Helper()
	sc := NewScanner(r, start)
	next := start
	if start == 0 {
		next = FirstEventPos
	}
	var sum bytes.Buffer
	for {
		ev, pos, err := sc.Next()
		if err != nil {
			if again, _, err2 := sc.Next(); again != nil || err2 != err {
				t.Fatalf("after %v, Next returned %d bytes and %v", err, len(again), err2)
			}
			switch {
			case errors.Is(err, io.EOF):
				if sc.Pos() != next {
					t.Fatalf("clean end at %d after an event ending at %d", sc.Pos(), next)
				}
			case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrMalformed):
			default:
				t.Fatalf("unexpected error %v", err)
			}
			sum.WriteString(err.Error())
			return sum.String()
		}
		if pos != next {
			t.Fatalf("event at %d, previous ended at %d", pos, next)
		}
		h, err := ParseHeader(ev)
		if err != nil || int(h.Size) != len(ev) {
			t.Fatalf("event at %d: %d bytes, header %+v, %v", pos, len(ev), h, err)
		}
		next = pos + uint64(len(ev))
		if sc.Pos() != next {
			t.Fatalf("Pos() = %d after an event ending at %d", sc.Pos(), next)
		}
		fmt.Fprintf(&sum, "%d:%d ", ev[4], len(ev))
	}
}
