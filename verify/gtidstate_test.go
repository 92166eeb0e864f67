package verify

import (
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// ranges are the GTID ranges of the listed transactions, in binlog order.
func ranges(t *testing.T, txns ...string) []catalog.GTIDRange {
	t.Helper()
	var out []catalog.GTIDRange
	for _, s := range txns {
		g, err := catalog.ParseGTID(s)
		if err != nil {
			t.Fatal(err)
		}
		out = catalog.AddGTID(out, g)
	}
	return out
}

// TestGTIDStateMismatch compares manifests' GTID states with an archive of
// two segments, [4,100) and [100,200) of binlog.000001, at positions at
// their edges and inside the second (150). MySQL's state is a set: it must
// hold each source's last GTID before the position and not its first after
// it, whatever GNOs given by hand it holds besides; each tag is a source of
// its own. MariaDB's is the last GTID of each domain.
func TestGTIDStateMismatch(t *testing.T) {
	const u = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	mysql := [][]string{
		{u + ":1", u + ":2", u + ":t1:1"},
		{u + ":t1:2", u + ":3", u + ":t1:3", u + ":t2:1"},
	}
	mariadb := [][]string{{"0-1-1", "0-1-2"}, {"0-1-3", "0-1-4"}}
	for _, tc := range []struct {
		name string
		txns [][]string // each segment's transactions; the second's split at 150 after its first
		pos  uint64
		set  string
		want string // "" or what the mismatch says
	}{
		{name: "mysql agrees", txns: mysql, pos: 150, set: u + ":1-2:t1:1-2"},
		{name: "mysql with GNOs given by hand", txns: mysql, pos: 150, set: u + ":1-2:50:t1:1-2:9:t9:1"},
		{name: "mysql with older purged sources", txns: mysql, pos: 150, set: "8a94f357-aab4-11df-86ab-c80aa9429563:1-100:x:1," + u + ":1-2:t1:1-2"},
		{name: "mysql snapshot before the position", txns: mysql, pos: 150, set: u + ":1-2:t1:1",
			want: "lacks " + u + ":t1:2, which the archive has before it"},
		{name: "mysql snapshot lacks a tag", txns: mysql, pos: 150, set: u + ":1-2",
			want: "lacks " + u + ":t1:2, which the archive has before it"},
		{name: "mysql snapshot after the position", txns: mysql, pos: 150, set: u + ":1-3:t1:1-2",
			want: "holds " + u + ":3, which the archive has after it"},
		{name: "mysql snapshot holds a tag's next GTID", txns: mysql, pos: 150, set: u + ":1-2:t1:1-2:t2:1",
			want: "holds " + u + ":t2:1, which the archive has after it"},
		{name: "mysql at a segment's end", txns: mysql, pos: 100, set: u + ":1-2:t1:1"},
		{name: "mysql at a segment's end, the next segment's first in the state", txns: mysql, pos: 100, set: u + ":1-2:t1:1-2",
			want: "holds " + u + ":t1:2, which the archive has after it"},
		{name: "mysql at the archive's start", txns: mysql, pos: 4, set: u + ":1",
			want: "holds " + u + ":1, which the archive has after it"},
		{name: "mariadb agrees", txns: mariadb, pos: 150, set: "0-1-3"},
		{name: "mariadb differs", txns: mariadb, pos: 150, set: "0-1-4", want: "says 0-1-4 where the archive has 0-1-3"},
		{name: "mariadb from another server", txns: mariadb, pos: 150, set: "0-2-3", want: "says 0-2-3 where the archive has 0-1-3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := &catalog.TimelineState{Timeline: catalog.Timeline{ID: 1, Start: catalog.Position{File: "binlog.000001", Pos: 4}}}
			reads := map[*catalog.Segment]segmentRead{}
			for i, txns := range tc.txns {
				s := &catalog.Segment{Timeline: 1, File: "binlog.000001", FileNum: 1, Start: uint64(4 + 96*i), End: uint64(100 * (i + 1)),
					GTIDs: ranges(t, txns...)}
				tl.Segments = append(tl.Segments, s)
				r := segmentRead{gtids: s.GTIDs}
				if i == 1 {
					r.at = map[uint64][]catalog.GTIDRange{150: ranges(t, txns[0])}
					r.after = map[uint64][]catalog.GTIDRange{150: ranges(t, txns[1:]...)}
				}
				reads[s] = r
			}
			arch := &catalog.Archive{Timelines: []*catalog.TimelineState{tl}}
			m := &catalog.Manifest{Timeline: 1, Binlog: catalog.Position{File: "binlog.000001", Pos: tc.pos}, GTIDSet: tc.set}
			got := gtidStateMismatch(arch, arch, reads, m)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, " "+tc.want+":") {
				t.Fatalf("mismatch %q, want %q", got, tc.want)
			}
		})
	}
}
