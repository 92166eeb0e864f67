package binlog

import (
	"bytes"
	"fmt"
	"time"
)

// Txn is a complete transaction found in a binlog file.
type Txn struct {
	// Start is the position of the transaction's first event; End the position right after its last.
	Start, End uint64
	// GTID is the transaction's GTID; HasGTID is false for servers writing no GTID events.
	GTID    GTID
	HasGTID bool
	// CommitTime is when the transaction committed: MySQL's original_commit_timestamp
	// (microseconds) when present, else the timestamp of the event that commits it
	// (XID, COMMIT, or the DDL statement itself), which has one-second resolution.
	CommitTime time.Time
}

// Tracker follows transaction boundaries through the events of one binlog
// file, fed in order. It is what tells a complete transaction from a torn
// one: a position is safe to stop at only when Tracker says no transaction
// is open there.
type Tracker struct {
	format     Format
	haveFormat bool

	open     bool // inside a transaction's events
	begun    bool // the transaction opened with BEGIN / XA START, or a MariaDB GTID event not standalone
	start    uint64
	info     gtidInfo
	haveGTID bool
}

// Format returns the file's format description, once seen.
func (t *Tracker) Format() (Format, bool) { return t.format, t.haveFormat }

// SetFormat sets the format for a tracker that starts in the middle of a file
// (whose format description event is not fed).
func (t *Tracker) SetFormat(f Format) { t.format, t.haveFormat = f, true }

// Open reports whether the events fed so far end inside a transaction, and
// where that transaction started.
func (t *Tracker) Open() (bool, uint64) { return t.open, t.start }

// Reset forgets any open transaction, for a new file.
func (t *Tracker) Reset() {
	t.open, t.begun, t.haveGTID = false, false, false
	t.info = gtidInfo{}
}

// Feed takes the event ev (header included) that starts at position pos and
// returns the transaction it completes, if any.
func (t *Tracker) Feed(ev []byte, pos uint64) (*Txn, error) {
	h, err := ParseHeader(ev)
	if err != nil {
		return nil, err
	}
	if int(h.Size) != len(ev) {
		return nil, fmt.Errorf("%w: header says %d bytes, have %d", ErrMalformed, h.Size, len(ev))
	}
	end := pos + uint64(h.Size)
	if h.Type == FormatDescription {
		f, err := ParseFormat(ev)
		if err != nil {
			return nil, err
		}
		t.format, t.haveFormat = f, true
		t.Reset()
		return nil, nil
	}
	if !t.haveFormat {
		return nil, fmt.Errorf("%w: %d event at %d before any format description", ErrMalformed, h.Type, pos)
	}
	switch h.Type {
	case GTIDEvent, AnonymousGTIDEvent, GTIDTaggedEvent, MariaDBGTIDEvent:
		return nil, t.feedGTID(h, ev, pos)
	case QueryEvent, MariaDBQueryCompressed:
		return t.feedQuery(h, ev, pos)
	case XIDEvent, XAPrepareEvent:
		if t.open {
			return t.commit(h, end), nil
		}
	case TransactionPayload:
		if t.open {
			return t.commit(h, end), nil
		}
	case RotateEvent, StopEvent:
		// A file ends; a transaction cannot span files, so whatever is open is torn.
		t.Reset()
	}
	return nil, nil
}

// feedGTID opens the transaction that the GTID event ev, at pos, starts.
func (t *Tracker) feedGTID(h Header, ev []byte, pos uint64) error {
	switch h.Type {
	case GTIDEvent, AnonymousGTIDEvent:
		gi, err := t.format.parseMySQLGTID(h, ev)
		if err != nil {
			return err
		}
		t.begin(pos, gi)
	case GTIDTaggedEvent:
		gi, err := t.format.parseTaggedGTID(ev)
		if err == nil {
			t.begin(pos, gi)
			break
		}
		// The bytes are archived whatever they mean; the transaction is one
		// without a GTID rather than one with a wrong one.
		t.begin(pos, gtidInfo{GTID: GTID{MySQL: true}})
		t.haveGTID = false
	case MariaDBGTIDEvent:
		gi, err := t.format.parseMariaDBGTID(h, ev)
		if err != nil {
			return err
		}
		t.begin(pos, gi)
	}
	return nil
}

// feedQuery follows the statement event ev, at pos: BEGIN opens a
// transaction, COMMIT or ROLLBACK ends one, and a statement outside one
// stands alone.
func (t *Tracker) feedQuery(h Header, ev []byte, pos uint64) (*Txn, error) {
	// A compressed statement (MariaDB log_bin_compress) reads as opaque
	// bytes, never as BEGIN or COMMIT: the server writes those uncompressed.
	q, err := t.format.queryText(ev)
	if err != nil {
		return nil, err
	}
	end := pos + uint64(h.Size)
	switch {
	case !t.open:
		// A server without GTID events: BEGIN opens, anything else stands alone.
		t.open, t.start, t.haveGTID = true, pos, false
		if isBegin(q) {
			t.begun = true
			return nil, nil
		}
		return t.commit(h, end), nil
	case !t.begun:
		if isBegin(q) {
			t.begun = true
			return nil, nil
		}
		return t.commit(h, end), nil // DDL and other single statements
	case isWord(q, "COMMIT") || isWord(q, "ROLLBACK"):
		return t.commit(h, end), nil
	}
	return nil, nil
}

func (t *Tracker) begin(pos uint64, gi gtidInfo) {
	// MariaDB writes no BEGIN: its GTID event opens the group, which ends at
	// XID, COMMIT, ROLLBACK or XA_PREPARE, unless FL_STANDALONE marks a group
	// of one statement. MySQL follows its GTID event with BEGIN or with a
	// statement that stands alone.
	t.open, t.begun, t.start = true, !gi.GTID.MySQL && !gi.Standalone, pos
	t.info, t.haveGTID = gi, true
}

func (t *Tracker) commit(h Header, end uint64) *Txn {
	tx := &Txn{Start: t.start, End: end, HasGTID: t.haveGTID}
	if t.haveGTID {
		tx.GTID = t.info.GTID
		if tx.GTID.Anonymous {
			tx.HasGTID = false
		}
	}
	tx.CommitTime = h.Time()
	if t.haveGTID && !t.info.CommitTime.IsZero() {
		tx.CommitTime = t.info.CommitTime
	}
	t.open, t.begun, t.haveGTID = false, false, false
	t.info = gtidInfo{}
	return tx
}

func isBegin(q []byte) bool {
	q = bytes.TrimSpace(q)
	return bytes.EqualFold(q, []byte("BEGIN")) || hasPrefixFold(q, "XA START") || hasPrefixFold(q, "XA BEGIN")
}

// isWord reports whether the statement is exactly w ("ROLLBACK TO sp" is not "ROLLBACK").
func isWord(q []byte, w string) bool { return bytes.EqualFold(bytes.TrimSpace(q), []byte(w)) }

func hasPrefixFold(q []byte, p string) bool {
	q = bytes.TrimLeft(q, " \t\r\n")
	return len(q) >= len(p) && bytes.EqualFold(q[:len(p)], []byte(p))
}

// TxnState is a Tracker's open transaction, saved in a segment record that
// ends inside a transaction so that a restarted agent resumes tracking it.
type TxnState struct {
	Start uint64 `json:"start"`
	Begun bool   `json:"begun,omitempty"`
	// GTID and CommitMicros carry what the opening GTID event said.
	GTID         *GTID `json:"gtid,omitempty"`
	CommitMicros int64 `json:"commit_micros,omitempty"`
	Standalone   bool  `json:"standalone,omitempty"`
}

// State returns the open transaction, or nil when none is open.
func (t *Tracker) State() *TxnState {
	if !t.open {
		return nil
	}
	st := &TxnState{Start: t.start, Begun: t.begun, Standalone: t.info.Standalone}
	if t.haveGTID {
		g := t.info.GTID
		st.GTID = &g
		if !t.info.CommitTime.IsZero() {
			st.CommitMicros = t.info.CommitTime.UnixMicro()
		}
	}
	return st
}

// Restore resumes tracking the open transaction st (nil: none open).
func (t *Tracker) Restore(st *TxnState) {
	t.Reset()
	if st == nil {
		return
	}
	t.open, t.begun, t.start = true, st.Begun, st.Start
	if st.GTID != nil {
		t.haveGTID = true
		t.info = gtidInfo{GTID: *st.GTID, Standalone: st.Standalone}
		if st.CommitMicros != 0 {
			t.info.CommitTime = time.UnixMicro(st.CommitMicros).UTC()
		}
	}
}
