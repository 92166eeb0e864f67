package binlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// TestUvarint checks the variable-length integers against the format's
// rule: a value of N significant bits takes (N*575>>12)+1 bytes (MySQL's
// get_size_integer_varlen_unsigned), and reads back whole.
func TestUvarint(t *testing.T) {
	var values []uint64
	for n := 0; n <= 64; n++ {
		v := uint64(1)<<n - 1 // n one bits; the last is all ones
		if n == 64 {
			v = math.MaxUint64
		}
		values = append(values, v, v+1, v/3)
	}
	for _, v := range values {
		b := appendUvarint(nil, v)
		if want := (bits.Len64(v)*575)>>12 + 1; len(b) != want {
			t.Errorf("%d takes %d bytes, want %d", v, len(b), want)
		}
		r := &serialReader{b: b, end: len(b)}
		got, err := r.uvarint()
		if err != nil || got != v || r.p != len(b) {
			t.Errorf("%d read back as %d, %v after %d of %d bytes", v, got, err, r.p, len(b))
		}
		r = &serialReader{b: b[:len(b)-1], end: len(b) - 1}
		if _, err := r.uvarint(); !errors.Is(err, ErrUnreadableGTID) {
			t.Errorf("%d cut short: err = %v", v, err)
		}
	}
	// The format's own examples: 65535 unsigned is 11111011 11111111 00000111.
	if got := appendUvarint(nil, 65535); fmt.Sprintf("% x", got) != "fb ff 07" {
		t.Errorf("65535 encodes as % x", got)
	}
	for _, tc := range []struct {
		in   []byte
		want int64
	}{{[]byte{0xf3, 0xff, 0x0f}, 65535}, {[]byte{0xeb, 0xff, 0x0f}, -65535}, {[]byte{0xfb, 0xff, 0x0f}, -65536}} {
		r := &serialReader{b: tc.in, end: len(tc.in)}
		if got, err := r.svarint(); err != nil || got != tc.want {
			t.Errorf("% x read as %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

var sampleTagged = taggedGTID{
	UUID: mysqlSID, GNO: 5, Tag: "orders", LastCommitted: 3, SequenceNumber: 4,
	ImmediateCommit: mysqlMicros(2, 250), OriginalCommit: mysqlMicros(2, 250), TransactionLength: 283,
	ImmediateServerVersion: 90704, OriginalServerVersion: 90704,
}

// TestDecodeTaggedGTID decodes events as MySQL writes them, at the edges of
// every field.
func TestDecodeTaggedGTID(t *testing.T) {
	with := func(edit func(g *taggedGTID)) taggedGTID {
		g := sampleTagged
		edit(&g)
		return g
	}
	for _, tc := range []struct {
		name string
		g    taggedGTID
	}{
		{"plain", sampleTagged},
		{"gno 1", with(func(g *taggedGTID) { g.GNO = 1 })},
		{"gno past 2^32", with(func(g *taggedGTID) { g.GNO = 1<<32 + 1 })},
		{"the largest gno", with(func(g *taggedGTID) { g.GNO = math.MaxInt64 - 1 })},
		{"a 32-character tag", with(func(g *taggedGTID) { g.Tag = "abcdefghijklmnopqrstuvwxyz_01234" })},
		{"a one-character tag", with(func(g *taggedGTID) { g.Tag = "_" })},
		{"no tag", with(func(g *taggedGTID) { g.Tag = "" })},
		{"may have statements", with(func(g *taggedGTID) { g.Flags = 1 })},
		{"replicated", with(func(g *taggedGTID) { g.OriginalCommit, g.OriginalServerVersion = mysqlMicros(-100, 7), 80036 })},
		{"commit group ticket", with(func(g *taggedGTID) { g.CommitGroupTicket = 1<<63 | 12 })},
		{"large clocks", with(func(g *taggedGTID) { g.LastCommitted, g.SequenceNumber = math.MaxInt64-1, math.MaxInt64 })},
		{"no commit time", with(func(g *taggedGTID) { g.ImmediateCommit, g.OriginalCommit = 0, 0 })},
		{"longest lengths", with(func(g *taggedGTID) { g.TransactionLength, g.ImmediateServerVersion = math.MaxUint64, math.MaxUint32 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := encodeTaggedGTID(tc.g)
			got, n, err := decodeTaggedGTID(body)
			if err != nil || n != len(body) || got != tc.g {
				t.Fatalf("decoded %+v, %d of %d bytes, %v; want %+v", got, n, len(body), err, tc.g)
			}
			// In an event, with and without a checksum.
			for _, checksum := range []bool{true, false} {
				b := newFileBuilder(checksum)
				ev := b.evs[b.taggedGTIDEvent(tc.g)].b
				gi, err := Format{Checksum: checksum}.parseTaggedGTID(ev)
				want := GTID{MySQL: true, UUID: tc.g.UUID, Tag: tc.g.Tag, Seq: uint64(tc.g.GNO)}
				if err != nil || gi.GTID != want {
					t.Fatalf("checksum=%v: %+v, %v; want %+v", checksum, gi.GTID, err, want)
				}
				if tc.g.OriginalCommit == 0 && !gi.CommitTime.IsZero() || tc.g.OriginalCommit != 0 && !gi.CommitTime.Equal(microTime(tc.g.OriginalCommit)) {
					t.Fatalf("commit time %v, want the original commit timestamp %d", gi.CommitTime, tc.g.OriginalCommit)
				}
				g, ok, err := EventGTID(ev)
				if err != nil || !ok || g != want {
					t.Fatalf("EventGTID = %+v, %v, %v", g, ok, err)
				}
			}
		})
	}
}

// field appends one field to a message's fields.
func field(fields []byte, id int, data ...byte) []byte {
	return append(appendUvarint(fields, uint64(id)), data...)
}

// TestDecodeTaggedGTIDFieldsOfLaterVersions: fields a later MySQL may add
// are skipped by the message's size, unless the message says a reader
// must know them.
func TestDecodeTaggedGTIDFieldsOfLaterVersions(t *testing.T) {
	base := encodeTaggedGTID(sampleTagged)
	r := &serialReader{b: base, end: len(base)}
	for range 3 { // version, size, last non-ignorable field
		if _, err := r.uvarint(); err != nil {
			t.Fatal(err)
		}
	}
	fields := base[r.p:]
	later := field(append([]byte(nil), fields...), 12, appendUvarint(nil, 77)...)
	later = field(later, 40, 1, 2, 3)
	got, n, err := decodeTaggedGTID(encodeMessage(12, later))
	if err != nil || got != sampleTagged {
		t.Fatalf("with ignorable fields 12 and 40: %+v, %d, %v", got, n, err)
	}
	if _, _, err := decodeTaggedGTID(encodeMessage(13, later)); !errors.Is(err, ErrUnreadableGTID) {
		t.Fatalf("with field 12 one a reader must know: %v", err)
	}
}

// TestDecodeTaggedGTIDRefuses: a body that is not a well-formed event of a
// GTID this package can name is refused, never read as another GTID.
func TestDecodeTaggedGTIDRefuses(t *testing.T) {
	uuid := func() []byte {
		var b []byte
		for _, c := range mysqlSID {
			b = appendUvarint(b, uint64(c))
		}
		return b
	}
	sv := func(v int64) []byte { return appendUvarint(nil, uint64(v<<1)^uint64(v>>63)) }
	str := func(s string) []byte { return append(appendUvarint(nil, uint64(len(s))), s...) }
	msg := func(fs ...[]byte) []byte {
		var fields []byte
		for _, f := range fs {
			fields = append(fields, f...)
		}
		return encodeMessage(0, fields)
	}
	good := msg(field(nil, tgFlags, 0), field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...), field(nil, tgTag, str("t")...))
	if _, _, err := decodeTaggedGTID(good); err != nil {
		t.Fatalf("the base message: %v", err)
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"another serialization format", append([]byte{0x04}, good[1:]...)},
		{"size past the body", append([]byte{0x02, byte(len(good)+1) << 1}, good[2:]...)},
		{"size inside the head", append([]byte{0x02, 0x02}, good[2:]...)},
		{"no gno", msg(field(nil, tgFlags, 0), field(nil, tgUUID, uuid()...), field(nil, tgTag, str("t")...))},
		{"no uuid", msg(field(nil, tgGNO, sv(5)...))},
		{"gno 0", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(0)...))},
		{"negative gno", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(-5)...))},
		{"gno 2^63-1", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(math.MaxInt64)...))},
		{"fields out of order", msg(field(nil, tgUUID, uuid()...), field(nil, tgTag, str("t")...), field(nil, tgGNO, sv(5)...))},
		{"a field twice", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...), field(nil, tgGNO, sv(6)...))},
		{"a uuid byte past 255", msg(field(nil, tgUUID, append(appendUvarint(nil, 256), uuid()[1:]...)...), field(nil, tgGNO, sv(5)...))},
		{"flags past 255", msg(field(nil, tgFlags, appendUvarint(nil, 300)...), field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...))},
		{"a 33-character tag", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...), field(nil, tgTag, str(strings.Repeat("a", 33))...))},
		{"a tag with a colon", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...), field(nil, tgTag, str("a:b")...))},
		{"a tag starting with a digit", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...), field(nil, tgTag, str("1a")...))},
		{"a tag past the message", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...), field(nil, tgTag, 0x10, 'a'))},
		{"a server version past 2^32", msg(field(nil, tgUUID, uuid()...), field(nil, tgGNO, sv(5)...),
			field(nil, tgImmediateServerVersion, appendUvarint(nil, 1<<32)...))},
		{"unknown fields a reader must know", encodeMessage(tgFields+1, good[3:])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _, err := decodeTaggedGTID(tc.body)
			if !errors.Is(err, ErrUnreadableGTID) {
				t.Fatalf("decoded %+v, %v; want ErrUnreadableGTID", g, err)
			}
		})
	}
	// Every cut of a real event's body is refused.
	body := encodeTaggedGTID(sampleTagged)
	for n := range len(body) {
		if g, _, err := decodeTaggedGTID(body[:n]); !errors.Is(err, ErrUnreadableGTID) {
			t.Fatalf("%d of %d bytes decoded as %+v, %v", n, len(body), g, err)
		}
	}
	// In an event, the message must fill the body (with the format known)
	// or leave room for a checksum only (without).
	for _, extra := range []int{1, 3, 5} {
		b := newFileBuilder(false)
		ev := b.evs[b.add(GTIDTaggedEvent, append(encodeTaggedGTID(sampleTagged), make([]byte, extra)...))].b
		if _, err := (Format{}).parseTaggedGTID(ev); !errors.Is(err, ErrUnreadableGTID) {
			t.Errorf("%d bytes after the message, format known: %v", extra, err)
		}
		if _, ok, err := EventGTID(ev); ok || !errors.Is(err, ErrUnreadableGTID) {
			t.Errorf("%d bytes after the message: EventGTID ok=%v, %v", extra, ok, err)
		}
	}
}

// taggedSeeds are tagged GTID event bodies: the recorded ones and built ones.
func taggedSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for checksum, name := range taggedFixtures {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			tb.Fatal(err)
		}
		for _, ev := range scanEvents(b, 0) {
			if EventType(ev.b[4]) != GTIDTaggedEvent {
				continue
			}
			body := ev.b[HeaderSize:]
			if checksum == "CRC32" {
				body = body[:len(body)-4]
			}
			out = append(out, body)
		}
	}
	return append(out, encodeTaggedGTID(sampleTagged), nil, []byte{0x02, 0x06, 0x00})
}

// FuzzParseTaggedGTID feeds any body to the tagged GTID decoder: it never
// panics, its errors wrap ErrUnreadableGTID, and what it reads is a GTID
// that the catalog reads back the same, and that MySQL's encoding of the
// same fields gives again.
func FuzzParseTaggedGTID(f *testing.F) {
	for _, s := range taggedSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		g, n, err := decodeTaggedGTID(body)
		if err != nil {
			if !errors.Is(err, ErrUnreadableGTID) {
				t.Fatalf("error %v does not wrap ErrUnreadableGTID", err)
			}
		} else {
			if n > len(body) {
				t.Fatalf("read %d bytes of %d", n, len(body))
			}
			gi := g.info()
			c := gi.GTID.Catalog()
			back, err := catalog.ParseGTID(c.String())
			if err != nil || back != c {
				t.Fatalf("%+v formats as %q, which parses as %+v, %v", g, c.String(), back, err)
			}
			again, _, err := decodeTaggedGTID(encodeTaggedGTID(g))
			if err != nil || again != g {
				t.Fatalf("%+v re-encoded decodes as %+v, %v", g, again, err)
			}
		}
		// In an event, with or without a checksum, as the tracker and the
		// indexer read it.
		ev := make([]byte, HeaderSize, HeaderSize+len(body)+4)
		ev[4] = byte(GTIDTaggedEvent)
		ev = append(ev, body...)
		binary.LittleEndian.PutUint32(ev[9:], uint32(len(ev)))
		for _, checksum := range []bool{true, false} {
			if _, err := (Format{Checksum: checksum}).parseTaggedGTID(ev); err != nil && !errors.Is(err, ErrUnreadableGTID) {
				t.Fatalf("error %v does not wrap ErrUnreadableGTID", err)
			}
		}
		if _, ok, err := EventGTID(ev); ok == (err != nil) {
			t.Fatalf("EventGTID ok=%v with err %v", ok, err)
		}
	})
}
