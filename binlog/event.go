package binlog

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// HeaderSize is the length of a v4 binlog event header.
const HeaderSize = 19

// Magic is the four bytes every binlog file starts with; the first event
// begins right after it, at position 4.
var Magic = []byte{0xfe, 'b', 'i', 'n'}

// FirstEventPos is the position of the first event in a binlog file.
const FirstEventPos = 4

// EventType is a binlog event's type code.
type EventType byte

// Event types this package interprets. The rest are archived and replayed as
// opaque bytes.
const (
	QueryEvent             EventType = 2
	StopEvent              EventType = 3
	RotateEvent            EventType = 4
	FormatDescription      EventType = 15
	XIDEvent               EventType = 16
	IncidentEvent          EventType = 26
	HeartbeatEvent         EventType = 27
	GTIDEvent              EventType = 33 // MySQL
	AnonymousGTIDEvent     EventType = 34 // MySQL
	PreviousGTIDsEvent     EventType = 35 // MySQL
	XAPrepareEvent         EventType = 38
	TransactionPayload     EventType = 40 // MySQL binlog_transaction_compression
	HeartbeatV2Event       EventType = 41 // MySQL 8.0.26+
	GTIDTaggedEvent        EventType = 42 // MySQL 8.4+
	MariaDBAnnotateRows    EventType = 160
	MariaDBCheckpoint      EventType = 161
	MariaDBGTIDEvent       EventType = 162
	MariaDBGTIDListEvent   EventType = 163
	MariaDBQueryCompressed EventType = 165
)

// artificialFlag marks events the server makes up for the stream (the fake
// Rotate at the start, a re-sent format description); they are not in the file.
const artificialFlag = 0x20

// ErrMalformed is wrapped by every error about bytes that do not form a valid event.
var ErrMalformed = errors.New("malformed binlog event")

// Header is a decoded v4 event header.
type Header struct {
	Timestamp uint32
	Type      EventType
	ServerID  uint32
	Size      uint32
	// NextPos is the position right after this event in its file ("log_pos").
	// Zero for events the server made up for the stream, and, on MariaDB
	// 11.4+ with binlog_legacy_event_pos=OFF (its default), for the events
	// inside a transaction, which are in the file all the same: their
	// positions follow from the sizes of the events before them.
	NextPos uint32
	Flags   uint16
}

// ParseHeader decodes the header at the start of ev.
func ParseHeader(ev []byte) (Header, error) {
	if len(ev) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(ev))
	}
	h := Header{
		Timestamp: binary.LittleEndian.Uint32(ev[0:]),
		Type:      EventType(ev[4]),
		ServerID:  binary.LittleEndian.Uint32(ev[5:]),
		Size:      binary.LittleEndian.Uint32(ev[9:]),
		NextPos:   binary.LittleEndian.Uint32(ev[13:]),
		Flags:     binary.LittleEndian.Uint16(ev[17:]),
	}
	if h.Size < HeaderSize {
		return Header{}, fmt.Errorf("%w: event size %d", ErrMalformed, h.Size)
	}
	return h, nil
}

// Artificial reports whether the event exists only in the replication stream,
// not in the binlog file: fake rotates (flagged artificial), the format
// description re-sent when a stream starts inside a file (a log_pos of 0),
// and heartbeats. Other events with a log_pos of 0 are real (see NextPos).
func (h Header) Artificial() bool {
	switch {
	case h.Flags&artificialFlag != 0, h.Type == HeartbeatEvent, h.Type == HeartbeatV2Event:
		return true
	case h.NextPos == 0:
		return h.Type == FormatDescription || h.Type == RotateEvent
	}
	return false
}

// Time is the event's timestamp (second resolution).
func (h Header) Time() time.Time { return time.Unix(int64(h.Timestamp), 0).UTC() }

// Format is what a Format_description event says about the events after it.
type Format struct {
	BinlogVersion uint16
	ServerVersion string
	// Checksum reports whether events carry a trailing CRC32.
	Checksum bool
}

// MariaDB reports whether the file was written by MariaDB.
func (f Format) MariaDB() bool { return strings.Contains(strings.ToLower(f.ServerVersion), "mariadb") }

// ParseFormat decodes a whole Format_description event (header included).
func ParseFormat(ev []byte) (Format, error) {
	// header, binlog version (2), server version (50), create time (4), header length (1),
	// post-header lengths..., checksum algorithm (1), checksum (4).
	const fixed = HeaderSize + 2 + 50 + 4 + 1
	if len(ev) < fixed+5 {
		return Format{}, fmt.Errorf("%w: format description of %d bytes", ErrMalformed, len(ev))
	}
	body := ev[HeaderSize:]
	f := Format{BinlogVersion: binary.LittleEndian.Uint16(body)}
	ver := body[2:52]
	if i := bytes.IndexByte(ver, 0); i >= 0 {
		ver = ver[:i]
	}
	f.ServerVersion = string(ver)
	if body[56] != HeaderSize {
		return Format{}, fmt.Errorf("%w: header length %d", ErrMalformed, body[56])
	}
	// Every server this tool supports (MySQL >= 5.6.1, MariaDB >= 5.3) writes the
	// checksum algorithm byte; 1 is CRC32, 0 is none.
	switch alg := ev[len(ev)-5]; alg {
	case 0:
	case 1:
		f.Checksum = true
	default:
		return Format{}, fmt.Errorf("%w: unknown checksum algorithm %d", ErrMalformed, alg)
	}
	return f, nil
}

// body returns the event's bytes after the header, without the checksum;
// nothing for an event shorter than a header.
func (f Format) body(ev []byte) []byte {
	if len(ev) < HeaderSize {
		return nil
	}
	b := ev[HeaderSize:]
	if f.Checksum && len(b) >= 4 {
		b = b[:len(b)-4]
	}
	return b
}

// ParseRotate returns the next file name and position from a Rotate event.
func (f Format) ParseRotate(ev []byte) (string, uint64, error) {
	b := f.body(ev)
	if len(b) < 8 {
		return "", 0, fmt.Errorf("%w: rotate event of %d bytes", ErrMalformed, len(ev))
	}
	return string(b[8:]), binary.LittleEndian.Uint64(b), nil
}

// ParseFakeRotate returns the next file name and position from a Rotate
// event the server made up for the stream. Such events carry a checksum or
// not depending on when the server sends them (MariaDB sends the first one
// without and the ones after a real Rotate with), so the trailing four bytes
// are taken as a checksum only when they are the CRC32 of the rest.
func ParseFakeRotate(ev []byte) (string, uint64, error) {
	f := Format{}
	if n := len(ev); n >= HeaderSize+8+4 && crc32.ChecksumIEEE(ev[:n-4]) == binary.LittleEndian.Uint32(ev[n-4:]) {
		f.Checksum = true
	}
	return f.ParseRotate(ev)
}

// queryText returns the statement of a Query event.
func (f Format) queryText(ev []byte) ([]byte, error) {
	b := f.body(ev)
	// thread id (4), exec time (4), db length (1), error code (2), status vars length (2)
	if len(b) < 13 {
		return nil, fmt.Errorf("%w: query event of %d bytes", ErrMalformed, len(ev))
	}
	dbLen := int(b[8])
	varsLen := int(binary.LittleEndian.Uint16(b[11:]))
	start := 13 + varsLen + dbLen + 1
	if start > len(b) {
		return nil, fmt.Errorf("%w: query event lengths overrun", ErrMalformed)
	}
	return b[start:], nil
}

// GTID identifies a transaction in either flavor's notation.
type GTID struct {
	// MariaDB: domain-server-seq. MySQL: uuid:gno (Tag is set for tagged GTIDs).
	Domain   uint32
	ServerID uint32
	UUID     [16]byte
	Tag      string
	Seq      uint64
	MySQL    bool
	// Anonymous is set for MySQL's Anonymous_gtid events (GTID mode off).
	Anonymous bool
}

// String formats the GTID as the server would.
func (g GTID) String() string {
	if g.Anonymous {
		return "ANONYMOUS"
	}
	if g.MySQL {
		u := hex.EncodeToString(g.UUID[:])
		s := u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:]
		if g.Tag != "" {
			s += ":" + g.Tag
		}
		return fmt.Sprintf("%s:%d", s, g.Seq)
	}
	return fmt.Sprintf("%d-%d-%d", g.Domain, g.ServerID, g.Seq)
}

// Catalog returns the GTID in the archive format's notation.
func (g GTID) Catalog() catalog.GTID {
	if g.MySQL {
		u := g.String()
		return catalog.GTID{MySQL: true, UUID: u[:36], Tag: g.Tag, Seq: g.Seq}
	}
	return catalog.GTID{Domain: g.Domain, Server: g.ServerID, Seq: g.Seq}
}

// EventGTID returns the GTID that the event (header included) opens a
// transaction with: a MariaDB GTID event, a MySQL Gtid event or a MySQL
// Gtid_tagged event (uuid:tag:gno). ok is false for every other event, and
// for MySQL's anonymous GTIDs, which carry no number to follow. A tagged
// event whose body it cannot read is an error wrapping ErrUnreadableGTID.
// It needs no format description: the fields it reads come first in the
// event's body, and a tagged event's body says its own size.
func EventGTID(ev []byte) (g GTID, ok bool, err error) {
	h, err := ParseHeader(ev)
	if err != nil {
		return GTID{}, false, err
	}
	var f Format
	switch h.Type {
	case MariaDBGTIDEvent:
		gi, err := f.parseMariaDBGTID(h, ev)
		return gi.GTID, err == nil, err
	case GTIDEvent:
		gi, err := f.parseMySQLGTID(h, ev)
		return gi.GTID, err == nil, err
	case GTIDTaggedEvent:
		gi, err := taggedEventGTID(ev)
		return gi.GTID, err == nil, err
	}
	return GTID{}, false, nil
}

// gtidInfo is what a transaction's opening GTID event tells.
type gtidInfo struct {
	GTID GTID
	// CommitTime is MySQL's original_commit_timestamp (microseconds); zero for MariaDB.
	CommitTime time.Time
	// Standalone is MariaDB's FL_STANDALONE: the group is one statement without BEGIN.
	Standalone bool
}

// parseMySQLGTID decodes a MySQL Gtid / Anonymous_gtid event.
func (f Format) parseMySQLGTID(h Header, ev []byte) (gtidInfo, error) {
	b := f.body(ev)
	if len(b) < 25 {
		return gtidInfo{}, fmt.Errorf("%w: gtid event of %d bytes", ErrMalformed, len(ev))
	}
	var gi gtidInfo
	gi.GTID.MySQL = true
	gi.GTID.Anonymous = h.Type == AnonymousGTIDEvent
	copy(gi.GTID.UUID[:], b[1:17])
	gi.GTID.Seq = binary.LittleEndian.Uint64(b[17:])
	// logical clock: type code 2, last_committed (8), sequence_number (8); then
	// immediate_commit_timestamp (7 bytes, top bit set when an original one follows).
	p := 25
	if len(b) >= p+17 && b[p] == 2 {
		p += 17
		if len(b) >= p+7 {
			imm := le56(b[p:])
			p += 7
			orig := imm
			if imm&(1<<55) != 0 {
				imm &^= 1 << 55
				orig = imm
				if len(b) >= p+7 {
					orig = le56(b[p:])
				}
			}
			// Zero is "unknown" (a transaction replicated from a server
			// older than 8.0.1): leave it to the committing event's time.
			if orig != 0 {
				gi.CommitTime = time.UnixMicro(int64(orig)).UTC()
			}
		}
	}
	return gi, nil
}

func le56(b []byte) uint64 {
	var v uint64
	for i := 6; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// MariaDB GTID event flags.
const (
	mariaStandalone = 0x01
)

// parseMariaDBGTID decodes a MariaDB GTID event.
func (f Format) parseMariaDBGTID(h Header, ev []byte) (gtidInfo, error) {
	b := f.body(ev)
	if len(b) < 13 {
		return gtidInfo{}, fmt.Errorf("%w: mariadb gtid event of %d bytes", ErrMalformed, len(ev))
	}
	return gtidInfo{
		GTID: GTID{
			Seq:      binary.LittleEndian.Uint64(b),
			Domain:   binary.LittleEndian.Uint32(b[8:]),
			ServerID: h.ServerID,
		},
		Standalone: b[12]&mariaStandalone != 0,
	}, nil
}
