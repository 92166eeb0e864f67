package restore

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// taggedBinlog is a binlog MySQL 9.7 wrote with tagged and untagged GTIDs
// (binlog/testdata/README.md): its transactions' GTIDs, positions and
// original commit times, as mysqlbinlog shows them.
const (
	taggedBinlog = "../binlog/testdata/mysql-9.7-tagged-crc32.binlog.000001"
	taggedUUID   = "a913b5db-f212-11f1-a0ac-02fc00000001"
)

// TestFindStopOnTaggedGTIDs stops replay of a binlog holding tagged GTIDs
// at a time, at a position and at its end, and checks the last replayed
// GTID of each source: each tag is a sequence of its own, whose last GTID
// is the last in binlog order (here tag1:3, after tag1:9223372036854775806
// given by hand).
func TestFindStopOnTaggedGTIDs(t *testing.T) {
	files := []binlog.FetchResult{{Name: "binlog.000002", Path: taggedBinlog, Start: 4, End: 5416}}
	from := catalog.Position{File: "binlog.000002", Pos: 4}
	for _, tc := range []struct {
		name   string
		target Target
		txns   int
		last   string
		stop   uint64
		gtids  []string // the last GTID of each source, sorted
	}{
		// The end of the file, past the Rotate after the last transaction.
		{name: "latest", target: Target{Kind: Latest}, txns: 19, last: taggedUUID + ":5", stop: 5416, gtids: []string{
			taggedUUID + ":5", taggedUUID + ":abcdefghijklmnopqrstuvwxyz_01234:1", taggedUUID + ":empty:1",
			taggedUUID + ":t:1", taggedUUID + ":tag1:3", taggedUUID + ":tag2:3",
			"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:7", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:other:7"}},
		{name: "a time: the tagged transaction tag2:1 committed at 1796629741062587 µs",
			target: Target{Kind: AtTime, Time: time.UnixMicro(1796629741062587).UTC()}, txns: 6, last: taggedUUID + ":tag2:1", stop: 1792,
			gtids: []string{taggedUUID + ":3", taggedUUID + ":tag1:2", taggedUUID + ":tag2:1"}},
		{name: "a position: the end of tag1:1", target: Target{Kind: AtPosition, Position: catalog.Position{File: "binlog.000002", Pos: 1126}},
			txns: 4, last: taggedUUID + ":tag1:1", stop: 1126, gtids: []string{taggedUUID + ":3", taggedUUID + ":tag1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := findStop(&Plan{Target: tc.target, From: from}, files)
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Sorted(maps.Values(st.GTIDs))
			if st.Transactions != tc.txns || st.LastGTID != tc.last || st.Position.Pos != tc.stop ||
				strings.Join(got, " ") != strings.Join(tc.gtids, " ") {
				t.Fatalf("stop after %d transactions at %s, last %s, sources\n %q\nwant %d at %d, last %s, sources\n %q",
					st.Transactions, st.Position, st.LastGTID, got, tc.txns, tc.stop, tc.last, tc.gtids)
			}
			for src, g := range st.GTIDs {
				if !strings.HasPrefix(g, src+":") || strings.Count(g, ":") != strings.Count(src, ":")+1 {
					t.Errorf("GTID %s filed under source %s", g, src)
				}
			}
		})
	}
}
