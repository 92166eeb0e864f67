package binlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// fixtures are real MySQL binlogs (see testdata/README.md) with what an
// indexer must find in them.
var fixtures = []struct {
	name         string
	transactions int
	version      string
}{
	{"mysql-8.0.11.binlog.000001", 29, "8.0.11"},
	{"mysql-9.4.0.binlog.000001", 6, "9.4.0"},
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type event struct {
	pos uint64
	b   []byte
}

func fileEvents(t *testing.T, file []byte) []event {
	t.Helper()
	sc := NewScanner(bytes.NewReader(file), 0)
	var evs []event
	for {
		ev, pos, err := sc.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, event{pos, bytes.Clone(ev)})
	}
}

// fakeRotate builds the artificial Rotate event a server sends first.
func fakeRotate(name string, pos uint64) []byte {
	ev := make([]byte, HeaderSize+8+len(name))
	ev[4] = byte(RotateEvent)
	binary.LittleEndian.PutUint32(ev[9:], uint32(len(ev)))
	binary.LittleEndian.PutUint16(ev[17:], artificialFlag)
	binary.LittleEndian.PutUint64(ev[HeaderSize:], pos)
	copy(ev[HeaderSize+8:], name)
	return ev
}

// resentFormat is a file's format description as a stream that starts
// inside the file sends it: with next position 0.
func resentFormat(fde []byte) []byte {
	ev := bytes.Clone(fde)
	binary.LittleEndian.PutUint32(ev[13:], 0)
	return ev
}

func newTestWriter(t *testing.T, sp *Spool, max int64) *Writer {
	t.Helper()
	w, err := NewWriter(WriterConfig{Spool: sp, Timeline: 1, MaxSegment: max})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// reassemble concatenates the spooled segments of one file, checking the
// chain of positions, and returns the file's bytes and the records.
func reassemble(t *testing.T, sp *Spool) ([]byte, []*catalog.Segment) {
	t.Helper()
	p, err := sp.Pending()
	if err != nil {
		t.Fatal(err)
	}
	out := bytes.NewBuffer(bytes.Clone(Magic))
	next := uint64(FirstEventPos)
	for _, s := range p.Segments {
		if s.Start != next {
			t.Fatalf("segment %s starts at %d, want %d", s.Ref().DataKey(), s.Start, next)
		}
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(sp.DataPath(s))
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(out, f) // the spool holds segments uncompressed
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if uint64(n) != s.Size() {
			t.Fatalf("segment %s: %d bytes, record says %d", s.Ref().DataKey(), n, s.Size())
		}
		next = s.End
	}
	return out.Bytes(), p.Segments
}

func TestWriterArchivesRecordedMySQLBinlogsByteForByte(t *testing.T) {
	for _, fx := range fixtures {
		for _, max := range []int64{1 << 30, 4096, 1} {
			if max == 1 && len(readFixture(t, fx.name)) > 1<<20 {
				continue // a segment per event: the small file shows it, the large one only takes long
			}
			t.Run(fx.name+"/max="+itoa(max), func(t *testing.T) {
				file := readFixture(t, fx.name)
				sp, err := OpenSpool(t.TempDir(), 0)
				if err != nil {
					t.Fatal(err)
				}
				w := newTestWriter(t, sp, max)
				if err := w.StartAt(catalog.Position{File: fx.name, Pos: 4}, nil); err != nil {
					t.Fatal(err)
				}
				if err := w.Handle(fakeRotate(fx.name, 4)); err != nil {
					t.Fatal(err)
				}
				for i, ev := range fileEvents(t, file) {
					if err := w.Handle(ev.b); err != nil {
						t.Fatalf("event %d at %d: %v", i, ev.pos, err)
					}
					if i%7 == 3 {
						if err := w.Flush(); err != nil { // a flush tick in the middle of anything
							t.Fatal(err)
						}
					}
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				got, recs := reassemble(t, sp)
				if !bytes.Equal(got, file) {
					t.Fatalf("reassembled %d bytes differ from the %d-byte file", len(got), len(file))
				}
				txns := 0
				var lastCommit time.Time
				for _, r := range recs {
					txns += r.Transactions
					if !r.LastCommitTime.IsZero() {
						lastCommit = r.LastCommitTime
					}
					if r.ServerVersion == "" {
						t.Errorf("segment %s has no server version", r.Ref().DataKey())
					}
				}
				if txns != fx.transactions {
					t.Errorf("transactions = %d, want %d", txns, fx.transactions)
				}
				// original_commit_timestamp has microseconds; a header time would not.
				if lastCommit.IsZero() || lastCommit.Nanosecond() == 0 {
					t.Errorf("last commit time %v lacks microsecond precision", lastCommit)
				}
				if last := recs[len(recs)-1]; !last.FileEnds || last.TxnEnd != last.End {
					t.Errorf("last segment: file_ends=%v txn_end=%d end=%d", last.FileEnds, last.TxnEnd, last.End)
				}
			})
		}
	}
}

func itoa(n int64) string {
	if n >= 1<<30 {
		return "inf"
	}
	return string(rune('0'+n%10)) + map[bool]string{true: "k", false: ""}[n >= 1000]
}

// TestWriterResumeAfterRestart stops a writer mid-file, then resumes with a
// new writer from the last sealed record, as a restarted agent does.
func TestWriterResumeAfterRestart(t *testing.T) {
	const name = "mysql-9.4.0.binlog.000001"
	file := readFixture(t, name)
	evs := fileEvents(t, file)
	for _, cut := range []int{1, 2, 5, 100, len(evs) / 2, len(evs) - 1} {
		t.Run(itoa(int64(cut)), func(t *testing.T) {
			sp, err := OpenSpool(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			w := newTestWriter(t, sp, 1<<20)
			w.StartAt(catalog.Position{File: name, Pos: 4}, nil)
			w.Handle(fakeRotate(name, 4))
			for _, ev := range evs[:cut] {
				if err := w.Handle(ev.b); err != nil {
					t.Fatal(err)
				}
			}
			w.Close()
			_, recs := reassemble(t, sp)
			last := recs[len(recs)-1]

			w2 := newTestWriter(t, sp, 1<<20)
			if err := w2.ResumeAfter(last); err != nil {
				t.Fatal(err)
			}
			rp := w2.ResumePoint()
			if rp.Pos != last.LastEvent.Pos || rp.File != name {
				t.Fatalf("resume point %s, want %s:%d", rp, name, last.LastEvent.Pos)
			}
			// The server re-sends from the resume point.
			w2.Handle(fakeRotate(name, rp.Pos))
			w2.Handle(resentFormat(evs[0].b))
			for _, ev := range evs {
				if ev.pos < rp.Pos {
					continue
				}
				if err := w2.Handle(ev.b); err != nil {
					t.Fatalf("at %d: %v", ev.pos, err)
				}
			}
			w2.Close()
			got, recs := reassemble(t, sp)
			if !bytes.Equal(got, file) {
				t.Fatal("resumed archive differs from the file")
			}
			txns := 0
			for _, r := range recs {
				txns += r.Transactions
			}
			if txns != 6 {
				t.Errorf("transactions = %d, want 6", txns)
			}
		})
	}
}

func TestWriterRefusesWhatDoesNotContinueTheArchive(t *testing.T) {
	const name = "mysql-8.0.11.binlog.000001"
	evs := fileEvents(t, readFixture(t, name))
	sp, _ := OpenSpool(t.TempDir(), 0)
	w := newTestWriter(t, sp, 1<<20)
	w.StartAt(catalog.Position{File: name, Pos: 4}, nil)
	w.Handle(fakeRotate(name, 4))
	for _, ev := range evs[:10] {
		if err := w.Handle(ev.b); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	_, recs := reassemble(t, sp)
	last := recs[len(recs)-1]

	t.Run("different bytes at the resume point", func(t *testing.T) {
		w2 := newTestWriter(t, sp, 1<<20)
		w2.ResumeAfter(last)
		w2.Handle(fakeRotate(name, last.LastEvent.Pos))
		w2.Handle(resentFormat(evs[0].b))
		ev := bytes.Clone(evs[9].b)
		ev[len(ev)-6] ^= 0xff // same place and size, other content
		if err := w2.Handle(ev); !errors.Is(err, ErrDiverged) {
			t.Fatalf("err = %v, want ErrDiverged", err)
		}
	})
	t.Run("stream skips bytes", func(t *testing.T) {
		w2 := newTestWriter(t, sp, 1<<20)
		w2.StartAt(catalog.Position{File: name, Pos: evs[10].pos}, nil)
		w2.Handle(resentFormat(evs[0].b))
		if err := w2.Handle(evs[11].b); !errors.Is(err, ErrStreamHole) {
			t.Fatalf("err = %v, want ErrStreamHole", err)
		}
	})
	t.Run("stream moves to another file first", func(t *testing.T) {
		w2 := newTestWriter(t, sp, 1<<20)
		w2.ResumeAfter(last)
		if err := w2.Handle(fakeRotate("mysql-8.0.11.binlog.000002", 4)); !errors.Is(err, ErrDiverged) {
			t.Fatalf("err = %v, want ErrDiverged", err)
		}
	})
}
