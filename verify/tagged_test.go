package verify

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// binlogEnd returns where the server's binlog ends, from SHOW BINARY LOGS
// (MySQL 8.4 dropped SHOW MASTER STATUS).
func binlogEnd(t *testing.T, db *testbed.MariaDB) catalog.Position {
	t.Helper()
	rows, err := db.DB(t).QueryContext(t.Context(), "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var end catalog.Position
	for rows.Next() {
		vals := make([]any, len(cols))
		vals[0], vals[1] = &end.File, &end.Pos
		for i := 2; i < len(vals); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil || end.File == "" {
		t.Fatalf("SHOW BINARY LOGS: %v, %s", err, end)
	}
	return end
}

// waitArchived waits until the archive holds the server's binlog up to its end now.
func waitArchived(t *testing.T, s *binlog.Streamer, db *testbed.MariaDB) catalog.Position {
	t.Helper()
	end := binlogEnd(t, db)
	testbed.Eventually(t, 30*time.Second, func() error {
		if _, d, _ := s.Uploader().Durable(); d.File < end.File || d.File == end.File && d.Pos < end.Pos {
			return fmt.Errorf("the archive did not reach %s (durable: %s)", end, d)
		}
		return nil
	})
	return end
}

// putManifest stores a snapshot of one small object whose manifest says
// the server was at pos with GTID state gtidSet.
func putManifest(t *testing.T, st storage.Storage, id catalog.SnapshotID, tl catalog.TimelineID, pos catalog.Position, gtidSet string) {
	t.Helper()
	data := []byte("-- a snapshot of nothing\n")
	if _, err := st.Put(t.Context(), catalog.SnapshotObjectKey(id, "data.sql"), strings.NewReader(string(data)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	now := time.Now().UTC()
	m := &catalog.Manifest{ID: id, Method: catalog.MethodLogical, Flavor: "mysql", Binlog: pos, GTIDSet: gtidSet, Timeline: tl,
		ConsistentAt: now, Started: now, Finished: now,
		Objects: []catalog.SnapshotObject{{Name: "data.sql", Size: int64(len(data)), StoredSize: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}}}
	if err := catalog.PutJSON(t.Context(), st, catalog.ManifestKey(id), m, false); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyTaggedGTIDsOnMySQL archives a MySQL 9.7 server whose
// transactions mix untagged GTIDs with two tags (and a source whose GNOs
// given by hand lie past 2^32) across segments and binlog files, and checks
// that the index records each source's GTIDs with its tag, that verify
// finds the chain whole, that a manifest's GTID state with tags is compared
// with the archive's, and that a segment deleted by hand is reported with
// the tagged GTIDs it held.
func TestVerifyTaggedGTIDsOnMySQL(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: testbed.MySQL97})
	pristine := t.TempDir()
	st := fileStore(t, pristine)
	streamer := archivetest.Stream(t, db, st, 50*time.Millisecond)
	conn, err := db.DB(t).Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var uuid string
	if err := conn.QueryRowContext(t.Context(), "SELECT @@server_uuid").Scan(&uuid); err != nil {
		t.Fatal(err)
	}
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := conn.ExecContext(t.Context(), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	gtidNext := func(g string) string { return "SET gtid_next = '" + g + "'" }
	exec("CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))",
		gtidNext("AUTOMATIC:orders"), "CREATE TABLE app.orders (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))", gtidNext("AUTOMATIC"))
	waitArchived(t, streamer, db)
	var snapPos catalog.Position
	var snapState string
	const batches = 6
	for b := range batches {
		exec(
			fmt.Sprintf("INSERT INTO app.t (v) VALUES ('batch %d')", b),
			gtidNext("AUTOMATIC:orders"),
			fmt.Sprintf("INSERT INTO app.orders (v) VALUES ('batch %d a')", b),
			fmt.Sprintf("INSERT INTO app.orders (v) VALUES ('batch %d b')", b),
			gtidNext("AUTOMATIC:billing"),
			"BEGIN",
			fmt.Sprintf("INSERT INTO app.t (v) VALUES ('billing %d a')", b),
			fmt.Sprintf("INSERT INTO app.orders (v) VALUES ('billing %d b')", b),
			"COMMIT",
			gtidNext(fmt.Sprintf("%s:big:%d", uuid, uint64(1)<<32+1+uint64(b))),
			fmt.Sprintf("INSERT INTO app.t (v) VALUES ('big %d')", b),
			gtidNext("AUTOMATIC"),
			fmt.Sprintf("INSERT INTO app.t (v) VALUES ('batch %d end')", b),
			gtidNext("AUTOMATIC:billing"),
			fmt.Sprintf("INSERT INTO app.t (v) VALUES ('billing %d end')", b),
			gtidNext("AUTOMATIC"),
		)
		if b == 3 {
			exec("FLUSH BINARY LOGS")
		}
		end := waitArchived(t, streamer, db)
		if b == 1 {
			// The server is idle: its state now is the state at end.
			snapPos = end
			if err := conn.QueryRowContext(t.Context(), "SELECT @@global.gtid_executed").Scan(&snapState); err != nil {
				t.Fatal(err)
			}
		}
	}
	var state string
	if err := conn.QueryRowContext(t.Context(), "SELECT @@global.gtid_executed").Scan(&state); err != nil {
		t.Fatal(err)
	}
	t.Logf("gtid_executed %q; at %s it was %q", state, snapPos, snapState)
	tlID := streamer.Status().Timeline
	putManifest(t, st, "20260101T000000Z-0001", tlID, snapPos, snapState)

	// The index: each source's GTIDs, with its tag, in ranges that together
	// are the server's gtid_executed; first and last GTIDs in binlog order.
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(arch.Timelines) != 1 || len(arch.Issues) > 0 {
		t.Fatalf("%d timelines, issues %v", len(arch.Timelines), arch.Issues)
	}
	segs := arch.Timelines[0].Segments
	var merged []catalog.GTIDRange
	var first, last string
	taggedSegs := 0
	for _, s := range segs {
		merged = catalog.MergeGTIDRanges(merged, s.GTIDs)
		if first == "" {
			first = s.FirstGTID
		}
		if s.LastGTID != "" {
			last = s.LastGTID
		}
		if slices.ContainsFunc(s.GTIDs, func(r catalog.GTIDRange) bool { return strings.Count(r.First, ":") == 2 }) {
			taggedSegs++
		}
		if s.UnknownGTIDs != 0 {
			t.Errorf("%s: %d GTIDs could not be read", s.Ref().RecordKey(), s.UnknownGTIDs)
		}
	}
	var got []string
	for _, r := range merged {
		got = append(got, fmt.Sprintf("%s..%s (%d)", r.First, r.Last, r.Count))
	}
	n := batches
	want := []string{
		fmt.Sprintf("%s:1..%s:%d (%d)", uuid, uuid, 2+2*n, 2+2*n),
		fmt.Sprintf("%s:orders:1..%s:orders:%d (%d)", uuid, uuid, 1+2*n, 1+2*n),
		fmt.Sprintf("%s:billing:1..%s:billing:%d (%d)", uuid, uuid, 2*n, 2*n),
		fmt.Sprintf("%s:big:4294967297..%s:big:%d (%d)", uuid, uuid, 4294967296+n, n),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("archived GTIDs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if first != uuid+":1" || last != fmt.Sprintf("%s:billing:%d", uuid, 2*n) {
		t.Errorf("first %s, last %s", first, last)
	}
	set, err := catalog.ParseGTIDSet(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range merged {
		for _, s := range []string{r.First, r.Last} {
			if g, _ := catalog.ParseGTID(s); !set.Contains(g) {
				t.Errorf("%s is not in gtid_executed %s", s, state)
			}
		}
	}
	if taggedSegs < 4 {
		t.Fatalf("only %d segments hold tagged GTIDs: %d segments in all", taggedSegs, len(segs))
	}

	// Whole: no break, no disorder, the manifest's state agrees.
	r, err := Run(t.Context(), st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Damaged || len(r.Objects) > 0 || len(r.Timelines) != 1 || len(r.Timelines[0].Breaks) > 0 || !r.Timelines[0].GTIDs ||
		len(r.Timelines[0].GTIDJumps) > 0 || len(r.Snapshots) != 1 || !r.Snapshots[0].Consistent {
		t.Fatalf("report on the whole archive: %+v", r)
	}

	// A manifest whose state lacks the last orders GTID before its position.
	t.Run("manifest state", func(t *testing.T) {
		other := fileStore(t, t.TempDir())
		copyAll(t, st, other)
		ss, _ := catalog.ParseGTIDSet(snapState)
		var lastOrders catalog.GTID
		for _, g := range ss.Last() {
			if g.Tag == "orders" {
				lastOrders = g
			}
		}
		if lastOrders.Seq < 2 {
			t.Fatalf("no orders GTIDs in %q", snapState)
		}
		lacking := strings.Replace(ss.String(), fmt.Sprintf(":orders:1-%d", lastOrders.Seq), fmt.Sprintf(":orders:1-%d", lastOrders.Seq-1), 1)
		putManifest(t, other, "20260101T000000Z-0002", tlID, snapPos, lacking)
		r, err := Run(t.Context(), other, Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("lacks %s, which the archive has before it", lastOrders)
		if len(r.Snapshots) != 2 || r.Snapshots[0].Consistent != true || r.Snapshots[1].Consistent ||
			!strings.Contains(strings.Join(r.Snapshots[1].Problems, "\n"), want) {
			t.Fatalf("snapshots %+v, want the second refused: %s", r.Snapshots, want)
		}
	})

	// A middle segment deleted by hand: the break names its tagged GTIDs.
	t.Run("segment deleted", func(t *testing.T) {
		i := slices.IndexFunc(segs, func(s *catalog.Segment) bool {
			if s.FileNum != segs[len(segs)-1].FileNum || len(s.GTIDs) < 3 || s == segs[len(segs)-1] {
				return false
			}
			// Every source it holds goes on after it.
			for _, r := range s.GTIDs {
				first, _ := catalog.ParseGTID(r.First)
				k := slices.Index(segs, s)
				if !slices.ContainsFunc(segs[k+1:], func(n *catalog.Segment) bool {
					return slices.ContainsFunc(n.GTIDs, func(nr catalog.GTIDRange) bool {
						g, _ := catalog.ParseGTID(nr.First)
						return g.Source() == first.Source()
					})
				}) {
					return false
				}
			}
			return true
		})
		if i <= 0 {
			t.Fatalf("no segment to delete among %d", len(segs))
		}
		gone := segs[i]
		other := fileStore(t, t.TempDir())
		copyAll(t, st, other)
		for _, key := range []string{gone.Ref().DataKey(), gone.Ref().RecordKey()} {
			if err := other.Delete(t.Context(), key); err != nil {
				t.Fatal(err)
			}
		}
		r, err := Run(t.Context(), other, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for _, rg := range gone.GTIDs {
			if rg.First == rg.Last {
				missing = append(missing, rg.First)
			} else {
				missing = append(missing, rg.First+".."+rg.Last)
			}
		}
		p, nx := segs[i-1], segs[i+1]
		var breaks []string
		for _, b := range r.Timelines[0].Breaks {
			breaks = append(breaks, b.String())
		}
		wantHole := catalog.Hole{After: catalog.Position{File: p.File, Pos: p.End}, Before: catalog.Position{File: nx.File, Pos: nx.Start}}
		if bs := r.Timelines[0].Breaks; !r.Damaged || len(bs) != 1 || bs[0].Hole == nil || *bs[0].Hole != wantHole ||
			!slices.Equal(slices.Sorted(slices.Values(bs[0].Missing)), slices.Sorted(slices.Values(missing))) || len(bs[0].Disorder) > 0 {
			t.Fatalf("breaks:\n%s\nwant one at %s..%s with GTIDs %s missing", strings.Join(breaks, "\n"), wantHole.After, wantHole.Before, strings.Join(missing, ", "))
		}
		if !slices.ContainsFunc(missing, func(m string) bool { return strings.Contains(m, ":orders:") }) {
			t.Errorf("the deleted segment held no orders GTIDs: %v", missing)
		}
		wantBreak := breaks[0]
		t.Logf("deleted %s: %s", gone.Ref().RecordKey(), wantBreak)
	})
}
