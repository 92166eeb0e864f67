package binlog

import (
	"encoding/binary"
	"hash/crc32"
	"time"
)

// fileBuilder writes the events of one binlog file for tests, as a server
// would: each event gets a v4 header whose next position follows from the
// previous event, a timestamp one second after the previous one, and, when
// checksum is set, a trailing CRC32.
type fileBuilder struct {
	checksum bool
	serverID uint32
	ts       uint32 // header timestamp of the next event
	pos      uint64 // position of the next event
	evs      []event
}

// builderEpoch is the header timestamp of a builder's first event.
const builderEpoch = 1_700_000_000

func newFileBuilder(checksum bool) *fileBuilder {
	return &fileBuilder{checksum: checksum, serverID: 1, ts: builderEpoch, pos: FirstEventPos}
}

// add appends an event of type typ with the given body and returns its index.
func (b *fileBuilder) add(typ EventType, body []byte) int {
	size := HeaderSize + len(body)
	// A format description always carries the checksum field, whatever the
	// file's checksum setting: its algorithm byte says how to read the rest.
	withCRC := b.checksum || typ == FormatDescription
	if withCRC {
		size += 4
	}
	ev := make([]byte, HeaderSize, size)
	binary.LittleEndian.PutUint32(ev[0:], b.ts)
	ev[4] = byte(typ)
	binary.LittleEndian.PutUint32(ev[5:], b.serverID)
	binary.LittleEndian.PutUint32(ev[9:], uint32(size))
	binary.LittleEndian.PutUint32(ev[13:], uint32(b.pos)+uint32(size))
	ev = append(ev, body...)
	if withCRC {
		ev = binary.LittleEndian.AppendUint32(ev, crc32.ChecksumIEEE(ev))
	}
	b.evs = append(b.evs, event{b.pos, ev})
	b.pos += uint64(size)
	b.ts++
	return len(b.evs) - 1
}

// headerTime is the header timestamp of event i.
func (b *fileBuilder) headerTime(i int) time.Time {
	return time.Unix(int64(binary.LittleEndian.Uint32(b.evs[i].b)), 0).UTC()
}

// fde appends a format description of a server of the given version.
func (b *fileBuilder) fde(version string) int {
	body := binary.LittleEndian.AppendUint16(nil, 4)
	var ver [50]byte
	copy(ver[:], version)
	body = append(body, ver[:]...)
	body = binary.LittleEndian.AppendUint32(body, b.ts)
	body = append(body, HeaderSize)
	body = append(body, make([]byte, 40)...) // post-header lengths, not read
	alg := byte(0)
	if b.checksum {
		alg = 1
	}
	return b.add(FormatDescription, append(body, alg))
}

func (b *fileBuilder) mariaFDE() int { return b.fde("10.11.19-MariaDB-log") }
func (b *fileBuilder) mysqlFDE() int { return b.fde("8.4.6") }

// queryBody is a Query event's body: post-header, status variables, the
// default database and the statement.
func queryBody(q string) []byte {
	const db = "test"
	status := []byte{0, 0, 0, 0, 0}                   // Q_FLAGS2_CODE and its four bytes
	body := binary.LittleEndian.AppendUint32(nil, 42) // thread id
	body = binary.LittleEndian.AppendUint32(body, 0)  // exec time
	body = append(body, byte(len(db)))
	body = binary.LittleEndian.AppendUint16(body, 0) // error code
	body = binary.LittleEndian.AppendUint16(body, uint16(len(status)))
	body = append(body, status...)
	body = append(body, db...)
	body = append(body, 0)
	return append(body, q...)
}

func (b *fileBuilder) query(q string) int { return b.add(QueryEvent, queryBody(q)) }

// compressedQuery appends a MariaDB Query_compressed event; its statement
// is opaque to the tracker, as zlib data is.
func (b *fileBuilder) compressedQuery() int {
	return b.add(MariaDBQueryCompressed, queryBody("\x82\x01\x4dx\x9c\xf3\xf4\x0bv\x0d\x0aQ"))
}

// MariaDB GTID event flags (FL_*), as a server writes them.
const (
	gtidFlStandalone    = 0x01
	gtidFlTransactional = 0x04
	gtidFlAllowParallel = 0x08
	gtidFlDDL           = 0x20
	gtidFlPreparedXA    = 0x40
	gtidFlCompletedXA   = 0x80
)

// mariaGTID appends a MariaDB GTID event for domain 0 and the builder's server.
func (b *fileBuilder) mariaGTID(seq uint64, flags byte) int {
	body := binary.LittleEndian.AppendUint64(nil, seq)
	body = binary.LittleEndian.AppendUint32(body, 0) // domain
	body = append(body, flags)
	if flags&(gtidFlPreparedXA|gtidFlCompletedXA) != 0 {
		body = binary.LittleEndian.AppendUint32(body, 1) // XID format id
		body = append(body, 1, 0, 'x')                   // gtrid and bqual lengths, data
	} else {
		body = append(body, make([]byte, 6)...)
	}
	return b.add(MariaDBGTIDEvent, body)
}

// mysqlGTID describes a MySQL Gtid / Anonymous_gtid event.
type mysqlGTID struct {
	anonymous bool
	uuid      [16]byte
	gno       uint64
	// old writes the 5.7 layout: no commit timestamps.
	old bool
	// immediate and original are commit timestamps in microseconds; an
	// original equal to immediate is not written, as MySQL does.
	immediate, original uint64
}

func (b *fileBuilder) mysqlGTIDEvent(g mysqlGTID) int {
	body := []byte{1} // flags: may commit
	body = append(body, g.uuid[:]...)
	body = binary.LittleEndian.AppendUint64(body, g.gno)
	body = append(body, 2) // logical clock
	body = binary.LittleEndian.AppendUint64(body, 0)
	body = binary.LittleEndian.AppendUint64(body, g.gno)
	if !g.old {
		imm := g.immediate
		if g.original != g.immediate {
			imm |= 1 << 55
		}
		body = appendLE56(body, imm)
		if g.original != g.immediate {
			body = appendLE56(body, g.original)
		}
		body = append(body, 100)                             // transaction length, packed
		body = binary.LittleEndian.AppendUint32(body, 80406) // immediate server version
	}
	typ := GTIDEvent
	if g.anonymous {
		typ = AnonymousGTIDEvent
	}
	return b.add(typ, body)
}

func appendLE56(b []byte, v uint64) []byte {
	for i := range 7 {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// Events whose bodies the tracker does not read.
func (b *fileBuilder) annotate(q string) int { return b.add(MariaDBAnnotateRows, []byte(q)) }
func (b *fileBuilder) tableMap() int {
	return b.add(19, []byte("\x71\x00\x00\x00\x00\x00\x01\x00\x04test\x00\x01t\x00\x01\x03\x00"))
}
func (b *fileBuilder) writeRows() int {
	return b.add(30, []byte("\x71\x00\x00\x00\x00\x00\x01\x00\x02\x00\x01\xff\x00\x01\x00\x00\x00"))
}
func (b *fileBuilder) checkpoint() int {
	return b.add(MariaDBCheckpoint, []byte("\x0f\x00\x00\x00mariadb-bin.000001"))
}
func (b *fileBuilder) gtidList() int      { return b.add(MariaDBGTIDListEvent, []byte{0, 0, 0, 0}) }
func (b *fileBuilder) previousGTIDs() int { return b.add(PreviousGTIDsEvent, make([]byte, 8)) }
func (b *fileBuilder) payload() int {
	return b.add(TransactionPayload, []byte("\x02\x01\x14\x03\x01\x01\x01\x00(\xb5/\xfd"))
}
func (b *fileBuilder) stop() int { return b.add(StopEvent, nil) }

func (b *fileBuilder) xid(id uint64) int {
	return b.add(XIDEvent, binary.LittleEndian.AppendUint64(nil, id))
}

// xaPrepare appends an XA_prepare event (one_phase false).
func (b *fileBuilder) xaPrepare() int {
	body := []byte{0}
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint32(body, 0)
	return b.add(XAPrepareEvent, append(body, 'x'))
}

func (b *fileBuilder) rotate(name string, pos uint64) int {
	return b.add(RotateEvent, append(binary.LittleEndian.AppendUint64(nil, pos), name...))
}

// file concatenates the events as a binlog file's bytes, magic first.
func (b *fileBuilder) file() []byte {
	out := append([]byte(nil), Magic...)
	for _, ev := range b.evs {
		out = append(out, ev.b...)
	}
	return out
}

// encodeTaggedGTID serializes g as MySQL writes a Gtid_tagged_log_event's
// body: each integer in the fewest bytes, and the optional fields left out
// when they say nothing (an original commit timestamp or server version
// equal to the immediate one, an unset commit group ticket).
func encodeTaggedGTID(g taggedGTID) []byte {
	var fields []byte
	field := func(id int, data ...byte) {
		fields = appendUvarint(fields, uint64(id))
		fields = append(fields, data...)
	}
	u := func(v uint64) []byte { return appendUvarint(nil, v) }
	s := func(v int64) []byte { return appendUvarint(nil, uint64(v<<1)^uint64(v>>63)) }
	field(tgFlags, u(uint64(g.Flags))...)
	var uuid []byte
	for _, c := range g.UUID {
		uuid = appendUvarint(uuid, uint64(c))
	}
	field(tgUUID, uuid...)
	field(tgGNO, s(g.GNO)...)
	field(tgTag, append(u(uint64(len(g.Tag))), g.Tag...)...)
	field(tgLastCommitted, s(g.LastCommitted)...)
	field(tgSequenceNumber, s(g.SequenceNumber)...)
	field(tgImmediateCommit, u(g.ImmediateCommit)...)
	if g.OriginalCommit != g.ImmediateCommit {
		field(tgOriginalCommit, u(g.OriginalCommit)...)
	}
	field(tgTransactionLength, u(g.TransactionLength)...)
	field(tgImmediateServerVersion, u(uint64(g.ImmediateServerVersion))...)
	if g.OriginalServerVersion != g.ImmediateServerVersion {
		field(tgOriginalServerVersion, u(uint64(g.OriginalServerVersion))...)
	}
	if g.CommitGroupTicket != 0 {
		field(tgCommitGroupTicket, u(g.CommitGroupTicket)...)
	}
	return encodeMessage(0, fields)
}

// encodeMessage wraps fields in a serialized message's head: the format
// version, the message's size (which counts itself) and the last field a
// reader must know.
func encodeMessage(last uint64, fields []byte) []byte {
	tail := appendUvarint(nil, last)
	tail = append(tail, fields...)
	for n := 1; n <= 9; n++ {
		size := uint64(1 + n + len(tail))
		if enc := appendUvarint(nil, size); len(enc) == n {
			out := appendUvarint([]byte(nil), 1)
			out = append(out, enc...)
			return append(out, tail...)
		}
	}
	panic("message too long")
}

// appendUvarint appends v as a variable-length integer of the
// mysql::serialization format: n-1 trailing one bits in the first byte
// for n bytes, then the value, little endian.
func appendUvarint(b []byte, v uint64) []byte {
	n := 1
	for n < 9 && v >= 1<<(7*n) {
		n++
	}
	if n == 9 {
		b = append(b, 0xff)
		return binary.LittleEndian.AppendUint64(b, v)
	}
	x := v<<n | (1<<(n-1) - 1)
	for i := range n {
		b = append(b, byte(x>>(8*i)))
	}
	return b
}

// taggedGTIDEvent appends a Gtid_tagged_log_event.
func (b *fileBuilder) taggedGTIDEvent(g taggedGTID) int {
	return b.add(GTIDTaggedEvent, encodeTaggedGTID(g))
}
