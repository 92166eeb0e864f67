package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// putSegment stores b as the segment [start, start+len(b)) of file, with a
// record as the writer makes it, and returns the record.
func putSegment(t *testing.T, st storage.Storage, file string, start uint64, b []byte) *catalog.Segment {
	t.Helper()
	n, err := catalog.FileNumber(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	seg := &catalog.Segment{Timeline: 1, File: file, FileNum: n, Start: start, End: start + uint64(len(b)), SHA256: hex.EncodeToString(sum[:])}
	var z bytes.Buffer
	enc, err := zstd.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(b)
	enc.Close()
	if _, err := st.Put(t.Context(), seg.Ref().DataKey(), &z, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return seg
}

// mysqlGTIDEvent builds a MySQL Gtid event for uuid:gno ending at next.
func mysqlGTIDEvent(uuid string, gno uint64, next uint32) []byte {
	u, _ := hex.DecodeString(strings.ReplaceAll(uuid, "-", ""))
	body := []byte{1}
	body = append(body, u...)
	body = binary.LittleEndian.AppendUint64(body, gno)
	body = append(body, 2)
	body = append(body, make([]byte, 16)...) // last_committed, sequence_number
	ev := make([]byte, binlog.HeaderSize, binlog.HeaderSize+len(body))
	ev[4] = byte(binlog.GTIDEvent)
	binary.LittleEndian.PutUint32(ev[5:], 1)
	binary.LittleEndian.PutUint32(ev[9:], uint32(binlog.HeaderSize+len(body)))
	binary.LittleEndian.PutUint32(ev[13:], next)
	return append(ev, body...)
}

// TestReadSegmentGTIDs reads the GTIDs out of real and built binlog bytes,
// both flavors, and refuses bytes filed at another position.
func TestReadSegmentGTIDs(t *testing.T) {
	st := storagetest.NewMemory()
	const uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"

	// MySQL: three transactions 7, 8, 9 of one source.
	var mysqlBytes []byte
	for gno := uint64(7); gno <= 9; gno++ {
		ev := mysqlGTIDEvent(uuid, gno, 0)
		binary.LittleEndian.PutUint32(ev[13:], uint32(4+len(mysqlBytes)+len(ev)))
		mysqlBytes = append(mysqlBytes, ev...)
	}
	// MariaDB: a file recorded from a live server (magic dropped: a segment starts at 4).
	mariadb, err := os.ReadFile("../binlog/testdata/mariadb-10.11-crc32.binlog.000001")
	if err != nil {
		t.Fatal(err)
	}
	mariadb = mariadb[4:]
	// MySQL 9.7 with tagged GTIDs (binlog/testdata/README.md), and the same
	// with tag1:2's event (at 1126) in a form this version cannot read: a
	// message that says a reader must know its field 13.
	tagged, err := os.ReadFile("../binlog/testdata/mysql-9.7-tagged-crc32.binlog.000001")
	if err != nil {
		t.Fatal(err)
	}
	tagged = tagged[4:]
	unreadable := bytes.Clone(tagged)
	ev := unreadable[1126-4:]
	ev = ev[:binary.LittleEndian.Uint32(ev[9:])]
	if ev[4] != byte(binlog.GTIDTaggedEvent) || ev[binlog.HeaderSize+2] != 0 {
		t.Fatalf("no tagged event at 1126: % x", ev[:binlog.HeaderSize+3])
	}
	ev[binlog.HeaderSize+2] = 13 << 1
	binary.LittleEndian.PutUint32(ev[len(ev)-4:], crc32.ChecksumIEEE(ev[:len(ev)-4]))
	const tu, other = "a913b5db-f212-11f1-a0ac-02fc00000001", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	taggedRanges := func(tag1 int) string {
		return tu + ":1.." + tu + ":5 (6), " + tu + ":tag1:1.." + tu + ":tag1:3 (" + fmt.Sprint(tag1) + "), " +
			tu + ":tag2:1.." + tu + ":tag2:3 (3), " +
			tu + ":abcdefghijklmnopqrstuvwxyz_01234:1.." + tu + ":abcdefghijklmnopqrstuvwxyz_01234:1 (1), " +
			other + ":other:7.." + other + ":other:7 (1), " + other + ":7.." + other + ":7 (1), " +
			tu + ":empty:1.." + tu + ":empty:1 (1), " + tu + ":t:1.." + tu + ":t:1 (1)"
	}

	for _, tc := range []struct {
		name    string
		file    string
		start   uint64
		bytes   []byte
		want    string // the ranges, "first..last (count)"
		unknown int    // GTID events whose GTID cannot be read
		issue   string // or the issue's detail
	}{
		{name: "mysql tagged and untagged", file: "binlog.000002", start: 4, bytes: tagged, want: taggedRanges(5)},
		{name: "mysql tagged event that cannot be read", file: "binlog.000002", start: 4, bytes: unreadable, want: taggedRanges(4), unknown: 1},
		{name: "mysql uuid:gno", file: "binlog.000001", start: 4, bytes: mysqlBytes, want: uuid + ":7.." + uuid + ":9 (3)"},
		{name: "mariadb domain-server-seq", file: "mysql-bin.000001", start: 4, bytes: mariadb, want: "0-1-1..0-1-88 (88)"},
		{name: "bytes filed at another position", file: "binlog.000002", start: 104, bytes: mysqlBytes,
			issue: "ends at 65 by its header, not at 165"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg := putSegment(t, st, tc.file, tc.start, tc.bytes)
			res, err := readSegment(t.Context(), st, seg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.issue != "" {
				if res.issue == nil || res.issue.Kind != catalog.IssueCorrupt || !strings.Contains(res.issue.Detail, tc.issue) {
					t.Fatalf("issue %+v, want a corrupt one saying %q", res.issue, tc.issue)
				}
				return
			}
			if res.issue != nil {
				t.Fatalf("issue %+v", res.issue)
			}
			var got []string
			for _, r := range res.gtids {
				got = append(got, fmt.Sprintf("%s..%s (%d)", r.First, r.Last, r.Count))
			}
			if strings.Join(got, ", ") != tc.want || res.unknown != tc.unknown {
				t.Fatalf("GTIDs %s and %d unknown, want %s and %d", strings.Join(got, ", "), res.unknown, tc.want, tc.unknown)
			}
		})
	}
}
