package binlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

// sizedHeader is a header that claims an event of size bytes.
func sizedHeader(size uint32) []byte {
	h := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint32(h[9:], size)
	return h
}

func TestScanner(t *testing.T) {
	b := newFileBuilder(true)
	b.mariaFDE()
	b.mariaGTID(1, gtidFlStandalone)
	b.query("CREATE TABLE t (id INT)")
	file := b.file()
	segment := file[b.evs[1].pos:] // from the GTID event on, as a stored segment holds it
	for _, tc := range []struct {
		name    string
		stream  []byte
		start   uint64
		events  int   // read before the error
		wantErr error // nil: io.EOF; ErrMalformed or io.ErrUnexpectedEOF
	}{
		{"whole file", file, 0, 3, nil},
		{"segment", segment, b.evs[1].pos, 2, nil},
		{"empty segment", nil, 4, 0, nil},
		{"file of no bytes", nil, 0, 0, io.ErrUnexpectedEOF},
		{"file cut inside the magic", file[:2], 0, 0, io.ErrUnexpectedEOF},
		{"magic only", file[:4], 0, 0, nil},
		{"not a binlog", append([]byte("\xfebix"), file[4:]...), 0, 0, ErrMalformed},
		{"segment read as a file", segment, 0, 0, ErrMalformed},
		{"cut inside a header", file[:len(file)-len(b.evs[2].b)+5], 0, 2, io.ErrUnexpectedEOF},
		{"cut inside an event", file[:len(file)-1], 0, 2, io.ErrUnexpectedEOF},
		{"event smaller than a header", append(bytes.Clone(segment), sizedHeader(HeaderSize-1)...), 4, 2, ErrMalformed},
		{"event larger than the limit", append(bytes.Clone(segment), sizedHeader(MaxEventSize+1)...), 4, 2, ErrMalformed},
		{"event at the limit, cut", append(bytes.Clone(segment), sizedHeader(MaxEventSize)...), 4, 2, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{bytes.NewReader(tc.stream), iotest.OneByteReader(bytes.NewReader(tc.stream))} {
				sc := NewScanner(r, tc.start)
				next := max(tc.start, FirstEventPos)
				n := 0
				var err error
				for {
					var ev []byte
					var pos uint64
					if ev, pos, err = sc.Next(); err != nil {
						break
					}
					if pos != next {
						t.Fatalf("event at %d, want %d", pos, next)
					}
					next = pos + uint64(len(ev))
					if sc.Pos() != next {
						t.Fatalf("Pos() = %d after the event [%d,%d)", sc.Pos(), pos, next)
					}
					n++
				}
				if n != tc.events {
					t.Errorf("%d events before %v, want %d", n, err, tc.events)
				}
				want := tc.wantErr
				if want == nil {
					want = io.EOF
					if err != io.EOF {
						t.Errorf("err = %v, want io.EOF itself", err)
					}
				}
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
				if _, _, again := sc.Next(); again != err {
					t.Errorf("Next after %v returned %v", err, again)
				}
			}
		})
	}
}

// TestScannerDoesNotTrustEventSize reads a stream that ends right after a
// header claiming a 1 GiB event: the scanner must find the stream short
// without allocating what the header claims.
func TestScannerDoesNotTrustEventSize(t *testing.T) {
	stream := sizedHeader(MaxEventSize)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := NewScanner(bytes.NewReader(stream), 4).Next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("allocated %d MiB for a 19-byte stream", n>>20)
	}
}

// TestScannerReadsRecordedFiles reads the recorded binlogs whole and as
// segments cut at every event boundary of the small ones.
func TestScannerReadsRecordedFiles(t *testing.T) {
	for _, name := range append([]string{"mysql-8.0.11.binlog.000001", "mysql-9.4.0.binlog.000001"}, mariadbFixtures...) {
		t.Run(name, func(t *testing.T) {
			file := readFixture(t, name)
			evs := fileEvents(t, file)
			var joined []byte
			joined = append(joined, Magic...)
			for _, ev := range evs {
				if ev.pos != uint64(len(joined)) {
					t.Fatalf("event at %d, previous ended at %d", ev.pos, len(joined))
				}
				joined = append(joined, ev.b...)
			}
			if !bytes.Equal(joined, file) {
				t.Fatal("events do not make up the file")
			}
			if len(evs) > 500 {
				return
			}
			for _, cut := range evs {
				got := scanEvents(file[cut.pos:], cut.pos)
				if len(got) == 0 || got[0].pos != cut.pos || !bytes.Equal(got[0].b, cut.b) ||
					got[len(got)-1].pos != evs[len(evs)-1].pos {
					t.Fatalf("segment from %d read as %d events", cut.pos, len(got))
				}
			}
		})
	}
}
