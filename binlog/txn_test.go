package binlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// txnSpan is a transaction a test expects the tracker to report: the indexes
// of its first and last events.
type txnSpan struct {
	first, last int
	// gtid is the reported GTID; "" expects HasGTID false.
	gtid string
	// commit is the reported commit time; zero expects the header time of
	// the last event.
	commit time.Time
}

// noneOpen says that no transaction is open after the last event.
const noneOpen = -1

type trackerCase struct {
	name string
	// build writes the events and returns the transactions the tracker must
	// report and the index of the first event of the transaction left open
	// at the end (noneOpen if none is).
	build func(b *fileBuilder) (want []txnSpan, open int)
}

const (
	mysqlUUID    = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	xaXID        = "X'78',X'',1"
	createSelect = "CREATE TABLE `c` (\n  `id` int(11) NOT NULL\n)"
)

var mysqlSID = [16]byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}

// micros is a MySQL commit timestamp n seconds and us microseconds after
// the builder's first event.
func mysqlMicros(n, us int64) uint64 { return uint64((builderEpoch+n)*1_000_000 + us) }

func microTime(v uint64) time.Time { return time.UnixMicro(int64(v)).UTC() }

// MariaDB writes no BEGIN: the GTID event opens the group, and FL_STANDALONE
// marks a group of one statement. These sequences are what MariaDB 10.11
// writes (see TestTrackerOnLiveMariaDB), plus the older shapes with BEGIN.
var mariadbCases = []trackerCase{
	{"standalone DDL", func(b *fileBuilder) ([]txnSpan, int) {
		b.gtidList()
		b.checkpoint()
		g := b.mariaGTID(1, gtidFlStandalone|gtidFlAllowParallel|gtidFlDDL)
		q := b.query("CREATE TABLE t (id INT PRIMARY KEY)")
		return []txnSpan{{first: g, last: q, gtid: "0-1-1"}}, noneOpen
	}},
	{"row transaction ends at XID", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(7, gtidFlTransactional|gtidFlAllowParallel)
		b.annotate("INSERT INTO t VALUES (1)")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, gtid: "0-1-7"}}, noneOpen
	}},
	{"row transaction with BEGIN", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlTransactional)
		b.query("BEGIN")
		b.annotate("INSERT INTO t VALUES (1)")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, gtid: "0-1-1"}}, noneOpen
	}},
	{"statements of a transaction do not end it", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlTransactional|gtidFlAllowParallel)
		b.query("INSERT INTO t VALUES (2,'a')")
		b.query("INSERT INTO t VALUES (3,'a')")
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, gtid: "0-1-1"}}, noneOpen
	}},
	{"non-transactional change ends at COMMIT", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlAllowParallel)
		b.annotate("INSERT INTO m VALUES (1)")
		b.tableMap()
		b.writeRows()
		c := b.query("COMMIT")
		return []txnSpan{{first: g, last: c, gtid: "0-1-1"}}, noneOpen
	}},
	{"non-transactional change with BEGIN ends at COMMIT", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, 0)
		b.query("BEGIN")
		b.annotate("INSERT INTO m VALUES (1)")
		b.tableMap()
		b.writeRows()
		c := b.query("COMMIT")
		return []txnSpan{{first: g, last: c, gtid: "0-1-1"}}, noneOpen
	}},
	{"non-transactional statement rolled back", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlAllowParallel)
		b.query("INSERT INTO t VALUES (6,'a')")
		r := b.query("ROLLBACK")
		return []txnSpan{{first: g, last: r, gtid: "0-1-1"}}, noneOpen
	}},
	{"ROLLBACK TO a savepoint does not end it", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlAllowParallel)
		b.annotate("INSERT INTO t VALUES (4,'a')")
		b.tableMap()
		b.writeRows()
		b.query("SAVEPOINT `sp`")
		b.annotate("INSERT INTO m VALUES (5,'a')")
		b.tableMap()
		b.writeRows()
		b.query("ROLLBACK TO `sp`")
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, gtid: "0-1-1"}}, noneOpen
	}},
	{"ROLLBACK TO a savepoint after BEGIN does not end it", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, 0)
		b.query("BEGIN")
		b.query("SAVEPOINT sp")
		b.query("INSERT INTO m VALUES (5)")
		b.query("ROLLBACK TO sp")
		c := b.query("COMMIT")
		return []txnSpan{{first: g, last: c, gtid: "0-1-1"}}, noneOpen
	}},
	{"XA PREPARE ends at the XA_PREPARE event", func(b *fileBuilder) ([]txnSpan, int) {
		g1 := b.mariaGTID(1, gtidFlPreparedXA|gtidFlTransactional|gtidFlAllowParallel)
		b.annotate("INSERT INTO t VALUES (8,'a')")
		b.tableMap()
		b.writeRows()
		b.query("XA END " + xaXID)
		p := b.xaPrepare()
		g2 := b.mariaGTID(2, gtidFlCompletedXA|gtidFlStandalone|gtidFlTransactional|gtidFlAllowParallel)
		c := b.query("XA COMMIT " + xaXID)
		g3 := b.mariaGTID(3, gtidFlPreparedXA|gtidFlTransactional|gtidFlAllowParallel)
		b.query("INSERT INTO t VALUES (9,'a')")
		b.query("XA END " + xaXID)
		p3 := b.xaPrepare()
		g4 := b.mariaGTID(4, gtidFlCompletedXA|gtidFlStandalone|gtidFlTransactional|gtidFlAllowParallel)
		r := b.query("XA ROLLBACK " + xaXID)
		return []txnSpan{
			{first: g1, last: p, gtid: "0-1-1"}, {first: g2, last: c, gtid: "0-1-2"},
			{first: g3, last: p3, gtid: "0-1-3"}, {first: g4, last: r, gtid: "0-1-4"},
		}, noneOpen
	}},
	{"XA START ... XA END then XA_PREPARE", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlPreparedXA|gtidFlTransactional)
		b.query("XA START " + xaXID)
		b.tableMap()
		b.writeRows()
		b.query("XA END " + xaXID)
		p := b.xaPrepare()
		return []txnSpan{{first: g, last: p, gtid: "0-1-1"}}, noneOpen
	}},
	{"CREATE ... SELECT in row format ends at XID", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlDDL|gtidFlAllowParallel)
		b.query(createSelect)
		b.annotate("CREATE TABLE c AS SELECT * FROM t")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, gtid: "0-1-1"}}, noneOpen
	}},
	{"compressed standalone DDL", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlStandalone|gtidFlAllowParallel|gtidFlDDL)
		q := b.compressedQuery()
		g2 := b.mariaGTID(2, gtidFlTransactional|gtidFlAllowParallel)
		x := b.xid(99)
		return []txnSpan{{first: g, last: q, gtid: "0-1-1"}, {first: g2, last: x, gtid: "0-1-2"}}, noneOpen
	}},
	{"compressed statement in a transaction", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlAllowParallel)
		b.compressedQuery()
		c := b.query("COMMIT")
		return []txnSpan{{first: g, last: c, gtid: "0-1-1"}}, noneOpen
	}},
	{"groups in a row with checkpoints between", func(b *fileBuilder) ([]txnSpan, int) {
		b.gtidList()
		b.checkpoint()
		var want []txnSpan
		for seq := uint64(1); seq <= 3; seq++ {
			g := b.mariaGTID(seq, gtidFlTransactional|gtidFlAllowParallel)
			b.tableMap()
			b.writeRows()
			want = append(want, txnSpan{first: g, last: b.xid(seq), gtid: fmt.Sprintf("0-1-%d", seq)})
			b.checkpoint()
		}
		g := b.mariaGTID(4, gtidFlStandalone|gtidFlDDL)
		want = append(want, txnSpan{first: g, last: b.query("DROP TABLE t"), gtid: "0-1-4"})
		return want, noneOpen
	}},
	{"a Rotate inside an open transaction resets it", func(b *fileBuilder) ([]txnSpan, int) {
		b.mariaGTID(1, gtidFlTransactional)
		b.tableMap()
		b.writeRows()
		b.rotate("mariadb-bin.000002", 4)
		b.xid(99) // belongs to nothing: the transaction was torn
		return nil, noneOpen
	}},
	{"a Stop inside an open transaction resets it", func(b *fileBuilder) ([]txnSpan, int) {
		b.mariaGTID(1, gtidFlTransactional)
		b.tableMap()
		b.stop()
		return nil, noneOpen
	}},
	{"the file ends inside a transaction", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mariaGTID(1, gtidFlStandalone|gtidFlDDL)
		q := b.query("CREATE TABLE t (id INT)")
		g2 := b.mariaGTID(2, gtidFlTransactional)
		b.annotate("INSERT INTO t VALUES (1)")
		b.tableMap()
		return []txnSpan{{first: g, last: q, gtid: "0-1-1"}}, g2
	}},
}

// MySQL writes BEGIN after the GTID event of a multi-statement transaction
// and nothing after that of a single statement.
var mysqlCases = []trackerCase{
	{"DDL with original_commit_timestamp", func(b *fileBuilder) ([]txnSpan, int) {
		b.previousGTIDs()
		orig := mysqlMicros(-3, 654321) // committed on the source three seconds earlier
		g := b.mysqlGTIDEvent(mysqlGTID{anonymous: true, gno: 0, immediate: mysqlMicros(0, 123456), original: orig})
		q := b.query("CREATE TABLE t (id INT PRIMARY KEY)")
		return []txnSpan{{first: g, last: q, commit: microTime(orig)}}, noneOpen
	}},
	{"row transaction with immediate_commit_timestamp only", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(4, 1)
		g := b.mysqlGTIDEvent(mysqlGTID{uuid: mysqlSID, gno: 7, immediate: ts, original: ts})
		b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, gtid: mysqlUUID + ":7", commit: microTime(ts)}}, noneOpen
	}},
	{"replica of a source without commit timestamps", func(b *fileBuilder) ([]txnSpan, int) {
		// A 5.7 source's transactions reach an 8.0 replica's binlog with
		// original_commit_timestamp 0: unknown, so the header time stands.
		g := b.mysqlGTIDEvent(mysqlGTID{anonymous: true, immediate: mysqlMicros(2, 500), original: 0})
		b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		return []txnSpan{{first: g, last: x}}, noneOpen
	}},
	{"5.7 GTID event without commit timestamps", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.mysqlGTIDEvent(mysqlGTID{uuid: mysqlSID, gno: 1, old: true})
		q := b.query("CREATE DATABASE d")
		return []txnSpan{{first: g, last: q, gtid: mysqlUUID + ":1"}}, noneOpen
	}},
	{"Transaction_payload ends a transaction", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 42)
		g := b.mysqlGTIDEvent(mysqlGTID{anonymous: true, immediate: ts, original: ts})
		p := b.payload()
		ts2 := mysqlMicros(2, 43)
		g2 := b.mysqlGTIDEvent(mysqlGTID{anonymous: true, immediate: ts2, original: ts2})
		p2 := b.payload()
		return []txnSpan{{first: g, last: p, commit: microTime(ts)}, {first: g2, last: p2, commit: microTime(ts2)}}, noneOpen
	}},
	{"XA PREPARE ends at the XA_PREPARE event", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 1)
		g := b.mysqlGTIDEvent(mysqlGTID{uuid: mysqlSID, gno: 1, immediate: ts, original: ts})
		b.query("XA START " + xaXID)
		b.tableMap()
		b.writeRows()
		b.query("XA END " + xaXID)
		p := b.xaPrepare()
		ts2 := mysqlMicros(2, 2)
		g2 := b.mysqlGTIDEvent(mysqlGTID{uuid: mysqlSID, gno: 2, immediate: ts2, original: ts2})
		c := b.query("XA COMMIT " + xaXID)
		return []txnSpan{
			{first: g, last: p, gtid: mysqlUUID + ":1", commit: microTime(ts)},
			{first: g2, last: c, gtid: mysqlUUID + ":2", commit: microTime(ts2)},
		}, noneOpen
	}},
	{"non-transactional change ends at COMMIT", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 1)
		g := b.mysqlGTIDEvent(mysqlGTID{anonymous: true, immediate: ts, original: ts})
		b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		c := b.query("COMMIT")
		return []txnSpan{{first: g, last: c, commit: microTime(ts)}}, noneOpen
	}},
	{"ROLLBACK TO a savepoint does not end it", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 1)
		g := b.mysqlGTIDEvent(mysqlGTID{anonymous: true, immediate: ts, original: ts})
		b.query("BEGIN")
		b.query("SAVEPOINT sp")
		b.tableMap()
		b.writeRows()
		b.query("ROLLBACK TO sp")
		x := b.xid(99)
		return []txnSpan{{first: g, last: x, commit: microTime(ts)}}, noneOpen
	}},
	{"tagged GTIDs", func(b *fileBuilder) ([]txnSpan, int) {
		tg := sampleTagged
		g1 := b.taggedGTIDEvent(tg)
		b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		tg.GNO, tg.Tag, tg.ImmediateCommit = 1<<32+1, "abcdefghijklmnopqrstuvwxyz_01234", mysqlMicros(5, 1)
		g2 := b.taggedGTIDEvent(tg)
		q := b.query("CREATE TABLE t (id INT)")
		return []txnSpan{
			{first: g1, last: x, gtid: mysqlUUID + ":orders:5", commit: microTime(sampleTagged.OriginalCommit)},
			{first: g2, last: q, gtid: mysqlUUID + ":abcdefghijklmnopqrstuvwxyz_01234:4294967297", commit: microTime(tg.OriginalCommit)},
		}, noneOpen
	}},
	{"a tagged GTID after untagged ones, with an original commit time", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 1)
		g := b.mysqlGTIDEvent(mysqlGTID{uuid: mysqlSID, gno: 9, immediate: ts, original: ts})
		q := b.query("CREATE TABLE t (id INT)")
		tg := sampleTagged
		tg.OriginalCommit = mysqlMicros(-50, 3)
		g2 := b.taggedGTIDEvent(tg)
		b.query("BEGIN")
		c := b.query("COMMIT")
		return []txnSpan{
			{first: g, last: q, gtid: mysqlUUID + ":9", commit: microTime(ts)},
			{first: g2, last: c, gtid: mysqlUUID + ":orders:5", commit: microTime(tg.OriginalCommit)},
		}, noneOpen
	}},
	{"a tagged GTID event this package cannot read: no GTID, the commit event's time", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.add(GTIDTaggedEvent, encodeMessage(tgFields+1, nil))
		b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		return []txnSpan{{first: g, last: x}}, noneOpen
	}},
	{"the file ends inside a tagged transaction", func(b *fileBuilder) ([]txnSpan, int) {
		g := b.taggedGTIDEvent(sampleTagged)
		b.query("BEGIN")
		b.tableMap()
		return nil, g
	}},
	{"server writing no GTID events", func(b *fileBuilder) ([]txnSpan, int) {
		first := b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		x := b.xid(99)
		q := b.query("CREATE TABLE t (id INT)")
		return []txnSpan{{first: first, last: x}, {first: q, last: q}}, noneOpen
	}},
	{"a Rotate inside an open transaction resets it", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 1)
		b.mysqlGTIDEvent(mysqlGTID{anonymous: true, immediate: ts, original: ts})
		b.query("BEGIN")
		b.tableMap()
		b.rotate("binlog.000002", 4)
		return nil, noneOpen
	}},
	{"the file ends inside a transaction", func(b *fileBuilder) ([]txnSpan, int) {
		ts := mysqlMicros(1, 1)
		g := b.mysqlGTIDEvent(mysqlGTID{uuid: mysqlSID, gno: 3, immediate: ts, original: mysqlMicros(0, 7)})
		b.query("BEGIN")
		b.tableMap()
		b.writeRows()
		return nil, g
	}},
}

// buildCase writes the file of tc: a format description of the flavor,
// then the case's events.
func buildCase(tc trackerCase, mariadb, checksum bool) (*fileBuilder, []txnSpan, int) {
	b := newFileBuilder(checksum)
	if mariadb {
		b.mariaFDE()
	} else {
		b.mysqlFDE()
	}
	want, open := tc.build(b)
	return b, want, open
}

// describeTxn formats what a test compares of a transaction.
func describeTxn(tx *Txn) string {
	g := "-"
	if tx.HasGTID {
		g = tx.GTID.String()
	}
	return fmt.Sprintf("[%d,%d) gtid=%s commit=%s", tx.Start, tx.End, g, tx.CommitTime.Format(time.RFC3339Nano))
}

func (b *fileBuilder) describeSpans(spans []txnSpan) []string {
	var out []string
	for _, s := range spans {
		start, end := b.evs[s.first].pos, b.evs[s.last].pos+uint64(len(b.evs[s.last].b))
		g := s.gtid
		if g == "" {
			g = "-"
		}
		commit := s.commit
		if commit.IsZero() {
			commit = b.headerTime(s.last)
		}
		out = append(out, fmt.Sprintf("[%d,%d) gtid=%s commit=%s", start, end, g, commit.Format(time.RFC3339Nano)))
	}
	return out
}

// feed feeds evs to tr and describes the transactions it reports.
func feedTracker(t *testing.T, tr *Tracker, evs []event) []string {
	t.Helper()
	var got []string
	for _, ev := range evs {
		tx, err := tr.Feed(ev.b, ev.pos)
		if err != nil {
			t.Fatalf("event at %d: %v", ev.pos, err)
		}
		if tx != nil {
			if tx.End != ev.pos+uint64(len(ev.b)) {
				t.Errorf("transaction %s reported by the event at %d, which ends at %d", describeTxn(tx), ev.pos, ev.pos+uint64(len(ev.b)))
			}
			got = append(got, describeTxn(tx))
		}
	}
	return got
}

func TestTracker(t *testing.T) {
	for _, flavor := range []struct {
		name    string
		mariadb bool
		cases   []trackerCase
	}{{"mariadb", true, mariadbCases}, {"mysql", false, mysqlCases}} {
		for _, tc := range flavor.cases {
			for _, checksum := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/checksum=%v", flavor.name, tc.name, checksum), func(t *testing.T) {
					b, spans, open := buildCase(tc, flavor.mariadb, checksum)
					var tr Tracker
					got := feedTracker(t, &tr, b.evs)
					if want := b.describeSpans(spans); !slices.Equal(got, want) {
						t.Errorf("transactions:\n got %q\nwant %q", got, want)
					}
					gotOpen, start := tr.Open()
					switch {
					case open == noneOpen && gotOpen:
						t.Errorf("a transaction from %d is open at the end, want none", start)
					case open != noneOpen && (!gotOpen || start != b.evs[open].pos):
						t.Errorf("open = %v from %d, want open from %d", gotOpen, start, b.evs[open].pos)
					}
					if st := tr.State(); (st != nil) != gotOpen {
						t.Errorf("State() = %+v with Open() = %v", st, gotOpen)
					}
					if f, ok := tr.Format(); !ok || f.Checksum != checksum || f.MariaDB() != flavor.mariadb {
						t.Errorf("Format() = %+v, %v", f, ok)
					}
				})
			}
		}
	}
}

// TestTrackerRestore stops a tracker after every event, carries its State
// through JSON as a segment record does, and resumes with a new tracker:
// the transactions reported must be those of an uninterrupted run.
func TestTrackerRestore(t *testing.T) {
	for _, flavor := range []struct {
		name    string
		mariadb bool
		cases   []trackerCase
	}{{"mariadb", true, mariadbCases}, {"mysql", false, mysqlCases}} {
		for _, tc := range flavor.cases {
			for _, checksum := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/checksum=%v", flavor.name, tc.name, checksum), func(t *testing.T) {
					b, _, _ := buildCase(tc, flavor.mariadb, checksum)
					var whole Tracker
					want := feedTracker(t, &whole, b.evs)
					wantOpen, wantStart := whole.Open()
					for cut := 1; cut < len(b.evs); cut++ {
						var first Tracker
						got := feedTracker(t, &first, b.evs[:cut])
						st := restoredState(t, first.State())
						var second Tracker
						f, _ := first.Format()
						second.SetFormat(f)
						second.Restore(st)
						got = append(got, feedTracker(t, &second, b.evs[cut:])...)
						if !slices.Equal(got, want) {
							t.Errorf("cut after event %d:\n got %q\nwant %q", cut-1, got, want)
						}
						if open, start := second.Open(); open != wantOpen || (open && start != wantStart) {
							t.Errorf("cut after event %d: open = %v from %d, want %v from %d", cut-1, open, start, wantOpen, wantStart)
						}
					}
				})
			}
		}
	}
}

// restoredState round-trips st through JSON, as a sealed segment's OpenTxn does.
func restoredState(t testing.TB, st *TxnState) *TxnState {
	t.Helper()
	if st == nil {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out TxnState
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestTrackerRejectsMalformedEvents(t *testing.T) {
	truncate := func(ev []byte, n int) []byte {
		ev = append([]byte(nil), ev[:n]...)
		ev[9], ev[10], ev[11], ev[12] = byte(n), 0, 0, 0
		return ev
	}
	for _, tc := range []struct {
		name string
		// events returns the events to feed; the last must be refused.
		events func(b *fileBuilder) [][]byte
	}{
		{"event before any format description", func(b *fileBuilder) [][]byte {
			return [][]byte{b.evs[b.query("BEGIN")].b}
		}},
		{"shorter than a header", func(b *fileBuilder) [][]byte {
			return [][]byte{b.evs[b.mariaFDE()].b, make([]byte, HeaderSize-1)}
		}},
		{"size disagrees with the header", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mariaFDE()].b
			q := b.evs[b.query("BEGIN")].b
			return [][]byte{fde, q[:len(q)-1]}
		}},
		{"format description too short", func(b *fileBuilder) [][]byte {
			return [][]byte{truncate(b.evs[b.mariaFDE()].b, HeaderSize+60)}
		}},
		{"format description with an unknown checksum algorithm", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mariaFDE()].b
			fde[len(fde)-5] = 7
			return [][]byte{fde}
		}},
		{"format description with another header length", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mariaFDE()].b
			fde[HeaderSize+56] = 13
			return [][]byte{fde}
		}},
		{"truncated MariaDB GTID", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mariaFDE()].b
			return [][]byte{fde, truncate(b.evs[b.mariaGTID(1, 0)].b, HeaderSize+12)}
		}},
		{"truncated MySQL GTID", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mysqlFDE()].b
			return [][]byte{fde, truncate(b.evs[b.mysqlGTIDEvent(mysqlGTID{gno: 1})].b, HeaderSize+24)}
		}},
		{"truncated query", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mariaFDE()].b
			return [][]byte{fde, truncate(b.evs[b.query("BEGIN")].b, HeaderSize+12)}
		}},
		{"query whose lengths overrun it", func(b *fileBuilder) [][]byte {
			fde := b.evs[b.mariaFDE()].b
			q := b.evs[b.query("COMMIT")].b
			q[HeaderSize+11] = 0xff // status variables length
			return [][]byte{fde, q}
		}},
	} {
		for _, checksum := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/checksum=%v", tc.name, checksum), func(t *testing.T) {
				evs := tc.events(newFileBuilder(checksum))
				var tr Tracker
				pos := uint64(FirstEventPos)
				for i, ev := range evs {
					_, err := tr.Feed(ev, pos)
					pos += uint64(len(ev))
					if i < len(evs)-1 {
						if err != nil {
							t.Fatalf("event %d: %v", i, err)
						}
						continue
					}
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("err = %v, want ErrMalformed", err)
					}
				}
			})
		}
	}
}
