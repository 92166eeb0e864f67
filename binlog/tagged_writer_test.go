package binlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// unreadableTagged returns a copy of a tagged GTID event whose message says
// a reader must know a field after the last this package knows: the same
// size, and a valid checksum when the file has them.
func unreadableTagged(t *testing.T, ev []byte, checksum bool) []byte {
	t.Helper()
	ev = bytes.Clone(ev)
	// version (1 byte), size (1 byte for these events), last non-ignorable field
	if ev[HeaderSize] != 0x02 || ev[HeaderSize+1]&1 != 0 || ev[HeaderSize+2] != 0x00 {
		t.Fatalf("unexpected message head % x", ev[HeaderSize:HeaderSize+3])
	}
	ev[HeaderSize+2] = byte(tgFields+1) << 1
	if checksum {
		binary.LittleEndian.PutUint32(ev[len(ev)-4:], crc32.ChecksumIEEE(ev[:len(ev)-4]))
	}
	return ev
}

// TestWriterIndexesTaggedGTIDs archives the recorded MySQL 9.7 binlogs in
// segments of every size and checks what the records say of their GTIDs:
// per source (uuid, or uuid and tag) ranges that merge into the file's,
// first and last GTIDs of the completed transactions; and, when one tagged
// event cannot be read, that its transaction is archived and counted with
// no GTID, not a wrong one, and that continuity around it is judged by
// position: it adds no break to those of the same segments read whole.
// (The file's GNOs given by hand, 2^32+1 after 2, are breaks of their own
// when a segment boundary falls between them.)
func TestWriterIndexesTaggedGTIDs(t *testing.T) {
	for checksum, name := range taggedFixtures {
		file := readFixture(t, name)
		want := parseToolGTIDs(t, string(readFixture(t, name+".gtids")))
		evs := fileEvents(t, file)
		// The tag1:2 transaction's GTID event is the one made unreadable.
		bad := -1
		for i, ev := range evs {
			if ev.pos == want[4].Pos {
				bad = i
			}
		}
		if bad < 0 || EventType(evs[bad].b[4]) != GTIDTaggedEvent {
			t.Fatalf("no tagged event at %d", want[4].Pos)
		}
		for _, max := range []int64{1 << 30, 600, 1} {
			readBreaks := map[string]bool{}
			for _, unreadable := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/unreadable=%v/max=%d", name, unreadable, max), func(t *testing.T) {
					sp, err := OpenSpool(t.TempDir(), 0)
					if err != nil {
						t.Fatal(err)
					}
					w := newTestWriter(t, sp, max)
					if err := w.StartAt(catalog.Position{File: name, Pos: 4}, nil); err != nil {
						t.Fatal(err)
					}
					if err := w.Handle(fakeRotate(name, 4)); err != nil {
						t.Fatal(err)
					}
					src := bytes.Clone(file)
					for i, ev := range evs {
						b := ev.b
						if unreadable && i == bad {
							b = unreadableTagged(t, b, checksum == "CRC32")
							copy(src[ev.pos:], b)
						}
						if err := w.Handle(b); err != nil {
							t.Fatalf("event at %d: %v", ev.pos, err)
						}
					}
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
					got, recs := reassemble(t, sp)
					if !bytes.Equal(got, src) {
						t.Fatal("the archive is not the file byte for byte")
					}
					var wantRanges []catalog.GTIDRange
					for i, g := range want {
						if unreadable && i == 4 {
							continue
						}
						c, err := catalog.ParseGTID(g.GTID)
						if err != nil {
							t.Fatal(err)
						}
						wantRanges = catalog.AddGTID(wantRanges, c)
					}
					var ranges []catalog.GTIDRange
					var first, last string
					txns, unknown := 0, 0
					for _, r := range recs {
						ranges = catalog.MergeGTIDRanges(ranges, r.GTIDs)
						txns += r.Transactions
						unknown += r.UnknownGTIDs
						if first == "" {
							first = r.FirstGTID
						}
						if r.LastGTID != "" {
							last = r.LastGTID
						}
					}
					if fmt.Sprint(ranges) != fmt.Sprint(wantRanges) {
						t.Errorf("ranges\n %v\nwant\n %v", ranges, wantRanges)
					}
					if txns != len(want) || first != want[0].GTID || last != want[len(want)-1].GTID {
						t.Errorf("%d transactions from %s to %s, want %d from %s to %s", txns, first, last, len(want), want[0].GTID, want[len(want)-1].GTID)
					}
					if wantUnknown := map[bool]int{true: 1}[unreadable]; unknown != wantUnknown {
						t.Errorf("%d unknown GTIDs, want %d", unknown, wantUnknown)
					}
					tl := &catalog.TimelineState{Timeline: catalog.Timeline{ID: 1, Start: catalog.Position{File: name, Pos: 4}}, Segments: recs}
					breaks, jumps := tl.Breaks()
					for _, b := range breaks {
						if !unreadable {
							readBreaks[b.String()] = true
						} else if !readBreaks[b.String()] {
							t.Errorf("a break the unreadable event made: %s", b)
						}
					}
					// One segment: no break; and no jump where a number
					// skipped may be the unreadable one.
					if max == 1<<30 && (len(breaks) > 0 || unreadable && len(jumps) > 0) {
						t.Errorf("breaks %v, jumps %v", breaks, jumps)
					}
				})
			}
		}
	}
}
