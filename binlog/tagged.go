package binlog

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// A Gtid_tagged_log_event (type 42, MySQL 8.4+) is written for a
// transaction whose GTID carries a tag (uuid:tag:gno). Its body is not the
// fixed layout of a Gtid event but one message of MySQL's
// mysql::serialization format, as MySQL 8.4 and 9.x write it:
//
//	message  = varint(1)        the serialization format version, written as the message's field id
//	           varint(size)     bytes of the whole message, from its first byte on
//	           varint(last)     the last field a reader must know (0: every field may be skipped)
//	           { varint(id) field }   fields in increasing id order; optional ones left out
//
// Every integer is a variable-length integer: the first byte's trailing one
// bits count the bytes that follow (0-8), its other bits and the following
// bytes (little endian) hold the value; signed integers keep their sign in
// the lowest bit (x >= 0 as x<<1, x < 0 as (-(x+1))<<1 | 1). A string is
// its length and its bytes. The fields of Gtid_event:
//
//	0  gtid_flags                  uint8
//	1  uuid                        16 × uint8, each its own varint
//	2  gno                         int64
//	3  tag                         string of at most 32 bytes
//	4  last_committed              int64
//	5  sequence_number             int64
//	6  immediate_commit_timestamp  uint64, microseconds
//	7  original_commit_timestamp   uint64 (left out when equal to 6)
//	8  transaction_length          uint64
//	9  immediate_server_version    uint32
//	10 original_server_version     uint32 (left out when equal to 9)
//	11 commit_group_ticket         uint64 (left out when unset)
//
// Fields after 11 are skipped by their message size, as MySQL skips fields
// it does not know, unless the message says a reader must know them.

// ErrUnreadableGTID is wrapped by the errors about a tagged GTID event whose
// body this package cannot read. Such an event is archived and replayed
// like any other; only its GTID is unknown, so its transaction is indexed
// without one.
var ErrUnreadableGTID = errors.New("unreadable tagged GTID event")

// taggedGTID is what a Gtid_tagged_log_event says.
type taggedGTID struct {
	Flags          uint8
	UUID           [16]byte
	GNO            int64
	Tag            string
	LastCommitted  int64
	SequenceNumber int64
	// ImmediateCommit and OriginalCommit are commit timestamps in
	// microseconds; OriginalCommit is ImmediateCommit when the event leaves it out.
	ImmediateCommit   uint64
	OriginalCommit    uint64
	TransactionLength uint64
	// ImmediateServerVersion and OriginalServerVersion are as 80406 for
	// 8.4.6; OriginalServerVersion is ImmediateServerVersion when left out.
	ImmediateServerVersion uint32
	OriginalServerVersion  uint32
	CommitGroupTicket      uint64
}

// Field ids of Gtid_event's serialized message.
const (
	tgFlags = iota
	tgUUID
	tgGNO
	tgTag
	tgLastCommitted
	tgSequenceNumber
	tgImmediateCommit
	tgOriginalCommit
	tgTransactionLength
	tgImmediateServerVersion
	tgOriginalServerVersion
	tgCommitGroupTicket
	tgFields // one past the last field this package knows
)

// maxTagLen is the longest tag MySQL accepts.
const maxTagLen = 32

// serialReader reads variable-length integers and strings of the
// mysql::serialization format from b, up to end.
type serialReader struct {
	b   []byte
	p   int
	end int
}

func (r *serialReader) uvarint() (uint64, error) {
	if r.p >= r.end {
		return 0, fmt.Errorf("%w: message ends at byte %d inside an integer", ErrUnreadableGTID, r.p)
	}
	first := r.b[r.p]
	n := bits.TrailingZeros8(^first) + 1 // bytes in all, 1-9
	if r.p+n > r.end {
		return 0, fmt.Errorf("%w: a %d-byte integer at byte %d overruns the message", ErrUnreadableGTID, n, r.p)
	}
	var v uint64
	if n < 9 {
		v = uint64(first) >> n
	}
	for i := n - 1; i >= 1; i-- {
		v2 := uint64(r.b[r.p+i])
		if n < 9 {
			v |= v2 << (8*(i-1) + 8 - n)
		} else {
			v |= v2 << (8 * (i - 1))
		}
	}
	r.p += n
	return v, nil
}

func (r *serialReader) svarint() (int64, error) {
	u, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	// The lowest bit is the sign: x >= 0 is x<<1, x < 0 is (-(x+1))<<1 | 1.
	return int64(u>>1) ^ -int64(u&1), nil
}

// uint reads an unsigned integer of at most max.
func (r *serialReader) uint(what string, max uint64) (uint64, error) {
	at := r.p
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, fmt.Errorf("%w: %s %d at byte %d is out of range", ErrUnreadableGTID, what, v, at)
	}
	return v, nil
}

// decodeTaggedGTID decodes the body of a Gtid_tagged_log_event (the bytes
// after its header) and returns the message's size: the body may go on
// with a checksum.
func decodeTaggedGTID(b []byte) (taggedGTID, int, error) {
	var g taggedGTID
	r := &serialReader{b: b, end: len(b)}
	if err := r.message(); err != nil {
		return g, 0, err
	}
	seen := 0       // one past the last field read
	var have uint16 // the fields read, by bit
	for r.p < r.end {
		at := r.p
		id, err := r.uvarint()
		if err != nil {
			return g, 0, err
		}
		if id >= tgFields {
			// A field of a later MySQL, which the message allows to skip.
			r.p = r.end
			break
		}
		if int(id) < seen {
			return g, 0, fmt.Errorf("%w: field %d at byte %d after field %d", ErrUnreadableGTID, id, at, seen-1)
		}
		seen = int(id) + 1
		have |= 1 << id
		if err := g.readField(r, id); err != nil {
			return g, 0, err
		}
	}
	if err := g.complete(have); err != nil {
		return g, 0, err
	}
	return g, r.end, nil
}

// message reads the start of a message, up to its first field, and ends
// the reader where the message says it ends.
func (r *serialReader) message() error {
	version, err := r.uvarint()
	if err != nil {
		return err
	}
	if version != 1 {
		return fmt.Errorf("%w: serialization format %d", ErrUnreadableGTID, version)
	}
	size, err := r.uvarint()
	if err != nil {
		return err
	}
	if size > uint64(len(r.b)) || size < uint64(r.p) {
		return fmt.Errorf("%w: message of %d bytes in a body of %d", ErrUnreadableGTID, size, len(r.b))
	}
	r.end = int(size)
	last, err := r.uvarint()
	if err != nil {
		return err
	}
	if last > tgFields {
		return fmt.Errorf("%w: the message has field %d, which a reader must know, and this reader knows %d fields",
			ErrUnreadableGTID, last-1, tgFields)
	}
	return nil
}

// readField reads the value of the known field id into g.
func (g *taggedGTID) readField(r *serialReader, id uint64) error {
	var err error
	switch id {
	case tgFlags:
		var v uint64
		v, err = r.uint("gtid_flags", math.MaxUint8)
		g.Flags = uint8(v)
	case tgUUID:
		for i := range g.UUID {
			var v uint64
			if v, err = r.uint("uuid byte", math.MaxUint8); err != nil {
				break
			}
			g.UUID[i] = byte(v)
		}
	case tgGNO:
		g.GNO, err = r.svarint()
	case tgTag:
		g.Tag, err = r.tag()
	case tgLastCommitted:
		g.LastCommitted, err = r.svarint()
	case tgSequenceNumber:
		g.SequenceNumber, err = r.svarint()
	case tgImmediateCommit:
		g.ImmediateCommit, err = r.uvarint()
	case tgOriginalCommit:
		g.OriginalCommit, err = r.uvarint()
	case tgTransactionLength:
		g.TransactionLength, err = r.uvarint()
	case tgImmediateServerVersion:
		var v uint64
		v, err = r.uint("immediate_server_version", math.MaxUint32)
		g.ImmediateServerVersion = uint32(v)
	case tgOriginalServerVersion:
		var v uint64
		v, err = r.uint("original_server_version", math.MaxUint32)
		g.OriginalServerVersion = uint32(v)
	case tgCommitGroupTicket:
		g.CommitGroupTicket, err = r.uvarint()
	}
	return err
}

// complete checks that g, whose fields in have were read, names a GTID,
// and fills in the fields a message leaves out when they equal another.
func (g *taggedGTID) complete(have uint16) error {
	if have&(1<<tgUUID) == 0 || have&(1<<tgGNO) == 0 {
		return fmt.Errorf("%w: the message holds no uuid or no gno", ErrUnreadableGTID)
	}
	// GNOs run from 1 to 2^63-2: MySQL keeps 2^63-1 as the end of the range.
	if g.GNO < 1 || g.GNO == math.MaxInt64 {
		return fmt.Errorf("%w: gno %d", ErrUnreadableGTID, g.GNO)
	}
	if have&(1<<tgOriginalCommit) == 0 {
		g.OriginalCommit = g.ImmediateCommit
	}
	if have&(1<<tgOriginalServerVersion) == 0 {
		g.OriginalServerVersion = g.ImmediateServerVersion
	}
	return nil
}

// tag reads a tag: a string of at most 32 letters, digits and underscores
// that does not start with a digit. MySQL writes it in lower case; an
// empty one is no tag.
func (r *serialReader) tag() (string, error) {
	at := r.p
	n, err := r.uint("tag length", maxTagLen)
	if err != nil {
		return "", err
	}
	if r.p+int(n) > r.end {
		return "", fmt.Errorf("%w: a %d-byte tag at byte %d overruns the message", ErrUnreadableGTID, n, at)
	}
	tag := string(r.b[r.p : r.p+int(n)])
	r.p += int(n)
	if tag != "" && !catalog.ValidTag(tag) {
		return "", fmt.Errorf("%w: tag %q", ErrUnreadableGTID, tag)
	}
	return strings.ToLower(tag), nil
}

// parseTaggedGTID decodes a MySQL Gtid_tagged_log_event (header included).
// Its errors wrap ErrUnreadableGTID: the event is a transaction's first
// all the same, whose GTID is unknown.
func (f Format) parseTaggedGTID(ev []byte) (gtidInfo, error) {
	if len(ev) < HeaderSize {
		return gtidInfo{}, fmt.Errorf("%w: %d bytes", ErrUnreadableGTID, len(ev))
	}
	body := f.body(ev)
	g, n, err := decodeTaggedGTID(body)
	if err != nil {
		return gtidInfo{}, err
	}
	if n != len(body) {
		return gtidInfo{}, fmt.Errorf("%w: a message of %d bytes in a body of %d", ErrUnreadableGTID, n, len(body))
	}
	return g.info(), nil
}

// taggedEventGTID decodes a Gtid_tagged_log_event without knowing whether
// events carry a checksum: the message says its own size, and what follows
// it must be nothing or a checksum.
func taggedEventGTID(ev []byte) (gtidInfo, error) {
	g, n, err := decodeTaggedGTID(ev[HeaderSize:])
	if err != nil {
		return gtidInfo{}, err
	}
	if rest := len(ev) - HeaderSize - n; rest != 0 && rest != 4 {
		return gtidInfo{}, fmt.Errorf("%w: %d bytes after the message", ErrUnreadableGTID, rest)
	}
	return g.info(), nil
}

// info is what the tracker and the index need of the event.
func (g taggedGTID) info() gtidInfo {
	gi := gtidInfo{GTID: GTID{MySQL: true, UUID: g.UUID, Tag: g.Tag, Seq: uint64(g.GNO)}}
	// Zero is "unknown", as in a Gtid event: leave it to the committing event's time.
	if g.OriginalCommit != 0 && g.OriginalCommit <= math.MaxInt64 {
		gi.CommitTime = time.UnixMicro(int64(g.OriginalCommit)).UTC()
	}
	return gi
}
