package drill

import (
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

func TestGTIDHeld(t *testing.T) {
	const uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	tests := []struct {
		name, flavor, want string
		sets               []string
		held               bool
	}{
		{"mariadb same seq", gomysql.MariaDBFlavor, "0-1-57", []string{"0-1-57"}, true},
		{"mariadb later seq", gomysql.MariaDBFlavor, "0-1-57", []string{"0-1-90"}, true},
		{"mariadb earlier seq", gomysql.MariaDBFlavor, "0-1-57", []string{"0-1-56"}, false},
		{"mariadb other domain only", gomysql.MariaDBFlavor, "1-1-5", []string{"0-1-90"}, false},
		{"mariadb several domains", gomysql.MariaDBFlavor, "1-1-5", []string{"0-1-90,1-1-7"}, true},
		{"mariadb held by the snapshot's set", gomysql.MariaDBFlavor, "0-1-57", []string{"", "0-1-60"}, true},
		{"mariadb empty state", gomysql.MariaDBFlavor, "0-1-1", []string{"", ""}, false},
		{"mysql in an interval", gomysql.MySQLFlavor, uuid + ":23", []string{uuid + ":1-40"}, true},
		{"mysql past the interval", gomysql.MySQLFlavor, uuid + ":41", []string{uuid + ":1-40"}, false},
		{"mysql in a hole", gomysql.MySQLFlavor, uuid + ":23", []string{uuid + ":1-20:25-40"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := gtidHeld(tt.flavor, tt.want, tt.sets)
			if err != nil || got != tt.held {
				t.Errorf("gtidHeld(%s in %q) = %v, %v; want %v", tt.want, tt.sets, got, err, tt.held)
			}
		})
	}
	if _, err := gtidHeld(gomysql.MariaDBFlavor, "0-1-5", []string{"garbage"}); err == nil {
		t.Errorf("an unparsable state was accepted")
	}
}

func TestLastArchivedGTID(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 11, 27, 10, 0, s, 0, time.UTC) }
	segs := []*catalog.Segment{
		{File: "mysql-bin.000001", FileNum: 1, Start: 4, End: 1000, TxnEnd: 1000, LastGTID: "0-1-10", LastCommitTime: at(10)},
		{File: "mysql-bin.000001", FileNum: 1, Start: 1000, End: 2000, TxnEnd: 1800, LastGTID: "0-1-20", LastCommitTime: at(20)},
		// Only a rotate, or a transaction still open: no GTID recorded.
		{File: "mysql-bin.000001", FileNum: 1, Start: 2000, End: 2100, TxnEnd: 0},
		{File: "mysql-bin.000002", FileNum: 2, Start: 4, End: 900, TxnEnd: 900, LastGTID: "0-1-30", LastCommitTime: at(30)},
	}
	tests := []struct {
		name   string
		target restore.Target
		segs   []*catalog.Segment
		want   string
	}{
		{"latest", restore.Target{Kind: restore.Latest}, segs, "0-1-30"},
		{"latest, last segment without GTID", restore.Target{Kind: restore.Latest}, segs[:3], "0-1-20"},
		{"time inside the last segment", restore.Target{Kind: restore.AtTime, Time: at(25)}, segs, "0-1-20"},
		{"time at the last commit", restore.Target{Kind: restore.AtTime, Time: at(30)}, segs, "0-1-30"},
		{"position before the last transaction's end", restore.Target{Kind: restore.AtPosition,
			Position: catalog.Position{File: "mysql-bin.000001", Pos: 1500}}, segs[:2], "0-1-10"},
		{"position at a segment's last transaction end", restore.Target{Kind: restore.AtPosition,
			Position: catalog.Position{File: "mysql-bin.000001", Pos: 1800}}, segs[:2], "0-1-20"},
		{"no GTIDs", restore.Target{Kind: restore.Latest}, segs[2:3], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lastArchivedGTID(&restore.Plan{Target: tt.target, Segments: tt.segs})
			if got != tt.want {
				t.Errorf("lastArchivedGTID = %q, want %q", got, tt.want)
			}
		})
	}
}
