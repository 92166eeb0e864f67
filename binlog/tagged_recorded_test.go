package binlog

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

var recordMySQLTagged = flag.Bool("record-mysql-tagged", false, "rewrite the testdata/mysql-9.7-tagged-*.binlog.000001 fixtures from a live server")

// taggedFixtures are binlogs recorded by TestTaggedGTIDsOnLiveMySQL with
// -record-mysql-tagged (see testdata/README.md), by binlog_checksum; each
// has beside it, as NAME.gtids, what mysqlbinlog --hexdump -vv says of its
// GTID events.
var taggedFixtures = map[string]string{"CRC32": "mysql-9.7-tagged-crc32.binlog.000001", "NONE": "mysql-9.7-tagged-none.binlog.000001"}

// otherSource is a source server's uuid for transactions that look
// replicated: written with an explicit GTID and original commit time.
const otherSource = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

// taggedWorkload is SQL that makes a MySQL 8.4+ server (whose server_uuid
// is uuid) write tagged and untagged GTID events of every shape the
// decoder must read: two tags next to untagged transactions, a tag given
// in upper case, tagged DDL and a multi-statement transaction, GNOs past
// 2^32 and the largest there is, a 32-character tag, a compressed
// transaction, an empty one, and transactions that look replicated (an
// original commit timestamp and server version other than the immediate
// ones, which the event then carries as fields of their own).
func taggedWorkload(uuid string) []string {
	gtid := func(g string) string { return "SET gtid_next = '" + g + "'" }
	return []string{
		"CREATE DATABASE d",
		"CREATE TABLE d.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))",
		"INSERT INTO d.t (v) VALUES ('untagged')",
		gtid("AUTOMATIC:tag1"),
		"INSERT INTO d.t (v) VALUES ('tag1 a')",
		"INSERT INTO d.t (v) VALUES ('tag1 b')",
		gtid("AUTOMATIC:Tag2"),
		"BEGIN", "INSERT INTO d.t (v) VALUES ('tag2 a')", "INSERT INTO d.t (v) VALUES ('tag2 b')", "COMMIT",
		"CREATE TABLE d.u (id INT PRIMARY KEY)",
		gtid("AUTOMATIC"),
		"INSERT INTO d.t (v) VALUES ('untagged 2')",
		gtid(uuid + ":tag1:4294967297"),
		"INSERT INTO d.t (v) VALUES ('gno past 2^32')",
		gtid(uuid + ":tag1:9223372036854775806"),
		"INSERT INTO d.t (v) VALUES ('the largest gno')",
		gtid(uuid + ":abcdefghijklmnopqrstuvwxyz_01234:1"),
		"INSERT INTO d.t (v) VALUES ('a 32-character tag')",
		gtid(uuid + ":5000000000"),
		"INSERT INTO d.t (v) VALUES ('untagged gno past 2^32')",
		gtid(otherSource + ":other:7"),
		"SET SESSION original_commit_timestamp = 1700000000123456",
		"SET SESSION original_server_version = 80036",
		"INSERT INTO d.t (v) VALUES ('replicated, tagged')",
		gtid(otherSource + ":7"),
		"SET SESSION original_commit_timestamp = 1700000000123457",
		"INSERT INTO d.t (v) VALUES ('replicated, untagged')",
		gtid(uuid + ":empty:1"),
		"BEGIN", "COMMIT",
		gtid("AUTOMATIC:tag2"),
		"SET SESSION binlog_transaction_compression = ON",
		"INSERT INTO d.t (v) VALUES ('compressed')",
		"SET SESSION binlog_transaction_compression = OFF",
		gtid("AUTOMATIC:tag1"),
		"INSERT INTO d.t (v) VALUES ('tag1 after explicit gnos')",
		gtid("AUTOMATIC:t"),
		"DROP TABLE d.u",
		gtid("AUTOMATIC"),
		"INSERT INTO d.t (v) VALUES ('untagged 3')",
	}
}

// toolGTID is what mysqlbinlog -vv prints of one GTID event.
type toolGTID struct {
	Pos                    uint64
	GTID                   string
	RBROnly                bool
	LastCommitted          int64
	SequenceNumber         int64
	OriginalCommit         uint64
	ImmediateCommit        uint64
	TransactionLength      uint64
	OriginalServerVersion  uint32
	ImmediateServerVersion uint32
}

// String is the line a .gtids file holds for g.
func (g toolGTID) String() string {
	return fmt.Sprintf("pos=%d gtid=%s rbr_only=%v last_committed=%d sequence_number=%d original_commit_timestamp=%d "+
		"immediate_commit_timestamp=%d transaction_length=%d original_server_version=%d immediate_server_version=%d",
		g.Pos, g.GTID, g.RBROnly, g.LastCommitted, g.SequenceNumber, g.OriginalCommit, g.ImmediateCommit,
		g.TransactionLength, g.OriginalServerVersion, g.ImmediateServerVersion)
}

var (
	toolAt     = regexp.MustCompile(`^# at (\d+)$`)
	toolField  = regexp.MustCompile(`(\w+)=(\w+)`)
	toolGTIDNx = regexp.MustCompile(`^SET @@SESSION\.GTID_NEXT= '([^']+)'`)
)

// parseToolGTIDs reads the GTID events out of mysqlbinlog -vv's output (or
// of a .gtids file, whose lines are toolGTID.String's).
func parseToolGTIDs(t *testing.T, out string) []toolGTID {
	t.Helper()
	var gs []toolGTID
	var pos uint64
	var cur *toolGTID
	set := func(g *toolGTID, k, v string) {
		n, err := strconv.ParseUint(v, 10, 64)
		switch k {
		case "pos":
			g.Pos = n
		case "gtid":
			g.GTID, err = v, nil
		case "rbr_only":
			g.RBROnly, err = v == "yes" || v == "true", nil
		case "last_committed":
			g.LastCommitted = int64(n)
		case "sequence_number":
			g.SequenceNumber = int64(n)
		case "original_committed_timestamp", "original_commit_timestamp":
			g.OriginalCommit = n
		case "immediate_commit_timestamp":
			g.ImmediateCommit = n
		case "transaction_length":
			g.TransactionLength = n
		case "original_server_version":
			g.OriginalServerVersion = uint32(n)
		case "immediate_server_version":
			g.ImmediateServerVersion = uint32(n)
		default:
			return
		}
		if err != nil {
			t.Fatalf("mysqlbinlog's %s=%s: %v", k, v, err)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "pos="):
			var g toolGTID
			for _, m := range regexp.MustCompile(`(\w+)=(\S+)`).FindAllStringSubmatch(line, -1) {
				set(&g, m[1], m[2])
			}
			gs = append(gs, g)
		case toolAt.MatchString(line):
			pos, _ = strconv.ParseUint(toolAt.FindStringSubmatch(line)[1], 10, 64)
			cur = nil
		case strings.HasPrefix(line, "#") && strings.Contains(line, "\tGTID\t"):
			cur = &toolGTID{Pos: pos}
			for _, m := range toolField.FindAllStringSubmatch(line, -1) {
				set(cur, m[1], m[2])
			}
		case cur != nil && strings.Contains(line, "_server_version="):
			for _, m := range toolField.FindAllStringSubmatch(line, -1) {
				set(cur, m[1], m[2])
			}
		case cur != nil && toolGTIDNx.MatchString(line):
			cur.GTID = toolGTIDNx.FindStringSubmatch(line)[1]
			gs = append(gs, *cur)
			cur = nil
		}
	}
	return gs
}

// checkAgainstTool decodes every GTID event of a MySQL binlog file and
// compares it with what mysqlbinlog said of it, then checks the
// transactions the tracker reports: one per GTID event, with its GTID and
// its original commit time. It returns how many events were tagged.
func checkAgainstTool(t *testing.T, file []byte, want []toolGTID) int {
	t.Helper()
	byPos := map[uint64]toolGTID{}
	for _, g := range want {
		byPos[g.Pos] = g
	}
	var f Format
	var tr Tracker
	seen, tagged, txns := 0, 0, 0
	for _, ev := range fileEvents(t, file) {
		h, err := ParseHeader(ev.b)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == FormatDescription {
			if f, err = ParseFormat(ev.b); err != nil {
				t.Fatal(err)
			}
		}
		tx, err := tr.Feed(ev.b, ev.pos)
		if err != nil {
			t.Fatalf("event at %d: %v", ev.pos, err)
		}
		if tx != nil {
			txns++
			w, ok := byPos[tx.Start]
			if !ok {
				t.Errorf("transaction [%d,%d) does not start at a GTID event mysqlbinlog shows", tx.Start, tx.End)
			} else if !tx.HasGTID || tx.GTID.String() != w.GTID || !tx.CommitTime.Equal(microTime(w.OriginalCommit)) {
				t.Errorf("transaction at %d: %s, want gtid=%s commit=%s", tx.Start, describeTxn(tx), w.GTID, microTime(w.OriginalCommit).Format(time.RFC3339Nano))
			} else if tx.End != tx.Start+w.TransactionLength {
				t.Errorf("transaction at %d ends at %d, mysqlbinlog says it is %d bytes long", tx.Start, tx.End, w.TransactionLength)
			}
		}
		if h.Type != GTIDEvent && h.Type != GTIDTaggedEvent {
			continue
		}
		seen++
		w, ok := byPos[ev.pos]
		if !ok {
			t.Errorf("GTID event at %d: mysqlbinlog shows none there", ev.pos)
			continue
		}
		g, ok, err := EventGTID(ev.b)
		if err != nil || !ok || g.String() != w.GTID {
			t.Errorf("EventGTID at %d = %s, %v, %v; mysqlbinlog says %s", ev.pos, g, ok, err, w.GTID)
		}
		if h.Type == GTIDEvent {
			continue
		}
		tagged++
		d, n, err := decodeTaggedGTID(f.body(ev.b))
		if err != nil || n != len(f.body(ev.b)) {
			t.Errorf("tagged event at %d: %d bytes of %d, %v", ev.pos, n, len(f.body(ev.b)), err)
			continue
		}
		got := toolGTID{Pos: ev.pos, GTID: GTID{MySQL: true, UUID: d.UUID, Tag: d.Tag, Seq: uint64(d.GNO)}.String(),
			RBROnly: d.Flags&1 == 0, LastCommitted: d.LastCommitted, SequenceNumber: d.SequenceNumber,
			OriginalCommit: d.OriginalCommit, ImmediateCommit: d.ImmediateCommit, TransactionLength: d.TransactionLength,
			OriginalServerVersion: d.OriginalServerVersion, ImmediateServerVersion: d.ImmediateServerVersion}
		if got != w {
			t.Errorf("tagged event at %d decodes as\n %s\nmysqlbinlog says\n %s", ev.pos, got, w)
		}
	}
	if seen != len(want) || txns != len(want) {
		t.Errorf("%d GTID events and %d transactions in the file, mysqlbinlog shows %d GTID events", seen, txns, len(want))
	}
	return tagged
}

// TestTaggedGTIDsOnLiveMySQL runs the tagged workload on MySQL 9.7, with
// and without checksums, and checks every GTID event of the binlog it
// writes against mysqlbinlog --hexdump -vv.
func TestTaggedGTIDsOnLiveMySQL(t *testing.T) {
	tool := testbed.MySQL97.Binary(t, "mysqlbinlog")
	for _, checksum := range []string{"CRC32", "NONE"} {
		t.Run(checksum, func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97, BinlogChecksum: checksum})
			db.Exec(t, "FLUSH BINARY LOGS")
			conn, err := db.DB(t).Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var uuid string
			if err := conn.QueryRowContext(t.Context(), "SELECT @@server_uuid").Scan(&uuid); err != nil {
				t.Fatal(err)
			}
			for _, q := range taggedWorkload(uuid) {
				if _, err := conn.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Exec(t, "FLUSH BINARY LOGS")
			files := db.BinlogFiles(t)
			path := files[len(files)-2]
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, tool, "--hexdump", "-vv", path).Output()
			if err != nil {
				t.Fatalf("mysqlbinlog: %v", err)
			}
			want := parseToolGTIDs(t, string(out))
			tagged := checkAgainstTool(t, file, want)
			t.Logf("%s: %d bytes, %d GTID events, %d tagged", db.Version(), len(file), len(want), tagged)
			if tagged < 10 {
				t.Errorf("only %d tagged events", tagged)
			}
			if *recordMySQLTagged {
				name := filepath.Join("testdata", taggedFixtures[checksum])
				var lines []string
				for _, g := range want {
					lines = append(lines, g.String())
				}
				if err := os.WriteFile(name, file, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(name+".gtids", []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestTaggedGTIDFixtures checks the decoder and the tracker on the recorded
// MySQL 9.7 binlogs against what mysqlbinlog said of them.
func TestTaggedGTIDFixtures(t *testing.T) {
	for _, name := range taggedFixtures {
		t.Run(name, func(t *testing.T) {
			want := parseToolGTIDs(t, string(readFixture(t, name+".gtids")))
			if tagged := checkAgainstTool(t, readFixture(t, name), want); tagged < 10 {
				t.Errorf("only %d tagged events", tagged)
			}
		})
	}
}
