package catalog

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const (
	uuidA = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	uuidB = "8a94f357-aab4-11df-86ab-c80aa9429563"
)

func TestParseGTID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want GTID
		err  bool
	}{
		{in: "0-1-1041", want: GTID{Domain: 0, Server: 1, Seq: 1041}},
		{in: "7-4294967295-18446744073709551615", want: GTID{Domain: 7, Server: 4294967295, Seq: 18446744073709551615}},
		{in: uuidA + ":23", want: GTID{MySQL: true, UUID: uuidA, Seq: 23}},
		{in: strings.ToUpper(uuidA) + ":23", want: GTID{MySQL: true, UUID: uuidA, Seq: 23}},
		{in: uuidA + ":orders:5", want: GTID{MySQL: true, UUID: uuidA, Tag: "orders", Seq: 5}},
		{in: uuidA + ":Orders_2:5", want: GTID{MySQL: true, UUID: uuidA, Tag: "orders_2", Seq: 5}},
		{in: uuidA + ":" + strings.Repeat("t", 32) + ":9223372036854775806", want: GTID{MySQL: true, UUID: uuidA, Tag: strings.Repeat("t", 32), Seq: 1<<63 - 2}},
		{in: uuidA + ":_:1", want: GTID{MySQL: true, UUID: uuidA, Tag: "_", Seq: 1}},
		{in: uuidA + ":9223372036854775807", err: true},
		{in: uuidA + ":" + strings.Repeat("t", 33) + ":1", err: true},
		{in: uuidA + ":2tag:1", err: true},
		{in: uuidA + ":a-b:1", err: true},
		{in: uuidA + ":a b:1", err: true},
		{in: uuidA + ":a:b:1", err: true},
		{in: "0-1", err: true},
		{in: "0-1-x", err: true},
		{in: "4294967296-1-1", err: true},
		{in: "-1-1", err: true},
		{in: uuidA, err: true},
		{in: uuidA + ":0", err: true},
		{in: uuidA + "::5", err: true},
		{in: "not-a-uuid-at-all-xxxxxxxxxxxxxxxxxxx:5", err: true},
		{in: "", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseGTID(tc.in)
			if tc.err {
				if !errors.Is(err, ErrBadGTID) {
					t.Fatalf("ParseGTID(%q) = %v, %v; want ErrBadGTID", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseGTID(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if back := got.String(); !strings.EqualFold(back, tc.in) {
				t.Errorf("String() = %q, want %q", back, tc.in)
			}
		})
	}
}

func gtids(t *testing.T, ss ...string) []GTID {
	t.Helper()
	var out []GTID
	for _, s := range ss {
		g, err := ParseGTID(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

// TestGTIDSequence feeds transactions in binlog order and checks each
// source's sequence is followed on its own.
func TestGTIDSequence(t *testing.T) {
	for _, tc := range []struct {
		name string
		txns []string
		want []string // the breaks, as GTIDBreak.String
	}{
		{name: "mariadb contiguous", txns: []string{"0-1-1", "0-1-2", "0-1-3"}},
		{name: "mariadb missing numbers", txns: []string{"0-1-1040", "0-1-1201"},
			want: []string{"GTIDs 0-1-1041..0-1-1200 missing"}},
		{name: "mariadb one missing", txns: []string{"0-1-5", "0-1-7"}, want: []string{"GTID 0-1-6 missing"}},
		{name: "mariadb failover keeps the domain's count", txns: []string{"0-1-9", "0-2-10", "0-2-11", "0-1-12"}},
		{name: "mariadb domains interleaved", txns: []string{"0-1-1", "1-1-1", "0-1-2", "1-1-2", "1-1-3", "0-1-3"}},
		{name: "mariadb gap in one domain only", txns: []string{"0-1-1", "1-1-1", "0-1-2", "1-1-5"},
			want: []string{"GTIDs 1-1-2..1-1-4 missing"}},
		{name: "mariadb goes back", txns: []string{"0-1-5", "0-1-3"}, want: []string{"GTID 0-1-3 follows 0-1-5 (the sequence goes back or repeats)"}},
		{name: "mariadb repeats", txns: []string{"0-1-5", "0-1-5"}, want: []string{"GTID 0-1-5 follows 0-1-5 (the sequence goes back or repeats)"}},
		{name: "mysql contiguous", txns: []string{uuidA + ":1", uuidA + ":2"}},
		{name: "mysql missing interval", txns: []string{uuidA + ":100", uuidA + ":151"},
			want: []string{"GTIDs " + uuidA + ":101.." + uuidA + ":150 missing"}},
		{name: "mysql two sources each their own count", txns: []string{uuidA + ":1", uuidB + ":7", uuidA + ":2", uuidB + ":8"}},
		{name: "mysql gap in the second source", txns: []string{uuidA + ":1", uuidB + ":7", uuidA + ":2", uuidB + ":9"},
			want: []string{"GTID " + uuidB + ":8 missing"}},
		{name: "mysql tag is its own sequence", txns: []string{uuidA + ":1", uuidA + ":t:1", uuidA + ":2", uuidA + ":t:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q GTIDSequence
			var got []string
			for _, g := range gtids(t, tc.txns...) {
				if b := q.Next(g); b != nil {
					got = append(got, b.String())
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("breaks %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGTIDRanges(t *testing.T) {
	var a []GTIDRange
	for _, g := range gtids(t, "0-1-1", "1-2-10", "0-1-2", "0-2-3", "1-2-11") {
		a = AddGTID(a, g)
	}
	want := []GTIDRange{{First: "0-1-1", Last: "0-2-3", Count: 3}, {First: "1-2-10", Last: "1-2-11", Count: 2}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("AddGTID ranges %+v, want %+v", a, want)
	}
	var b []GTIDRange
	for _, g := range gtids(t, "2-1-1", "0-2-4", uuidA+":5") {
		b = AddGTID(b, g)
	}
	got := MergeGTIDRanges(a, b)
	want = []GTIDRange{{First: "0-1-1", Last: "0-2-4", Count: 4}, {First: "1-2-10", Last: "1-2-11", Count: 2},
		{First: "2-1-1", Last: "2-1-1", Count: 1}, {First: uuidA + ":5", Last: uuidA + ":5", Count: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MergeGTIDRanges %+v, want %+v", got, want)
	}
	if len(a) != 2 || a[0].Count != 3 {
		t.Fatalf("MergeGTIDRanges changed its input: %+v", a)
	}
}

// mysqlState is gtid_executed as MySQL 9.7 printed it after tagged and
// untagged transactions, GNOs given by hand among them.
const mysqlState = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:7:other:7,\n" +
	"eac47d05-f211-11f1-be3e-02fc00000001:1-4:5000000000:abcdefghijklmnopqrstuvwxyz_01234:1:t:1:tag1:1-2:4294967297:9223372036854775806:tag2:1-2"

// TestParseGTIDSet reads GTID states and formats them back. Where MySQL
// reads the input, the result is what MySQL 9.7 prints for GTID_SUBTRACT of
// the input and the empty set (with ",\n" between uuids).
func TestParseGTIDSet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string   // String()
		last []string // Last()
		err  bool
	}{
		{in: "", want: ""},
		{in: ",,", want: ""},
		{in: "0-1-1041", want: "0-1-1041", last: []string{"0-1-1041"}},
		{in: "0-1-1041,1-2-7", want: "0-1-1041,1-2-7", last: []string{"0-1-1041", "1-2-7"}},
		{in: uuidA + ":1-1041", want: uuidA + ":1-1041", last: []string{uuidA + ":1041"}},
		{in: uuidA + ":1-1041:1050-1060,\n" + uuidB + ":1-5", want: uuidA + ":1-1041:1050-1060," + uuidB + ":1-5",
			last: []string{uuidA + ":1060", uuidB + ":5"}},
		{in: uuidA + ":7", want: uuidA + ":7", last: []string{uuidA + ":7"}},
		{in: uuidA + ":1-10:orders:1-3", want: uuidA + ":1-10:orders:1-3", last: []string{uuidA + ":10", uuidA + ":orders:3"}},
		{in: uuidA + ":orders:1-3", want: uuidA + ":orders:1-3", last: []string{uuidA + ":orders:3"}},
		{in: mysqlState, want: strings.ReplaceAll(mysqlState, "\n", ""), last: []string{
			"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:7", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:other:7",
			"eac47d05-f211-11f1-be3e-02fc00000001:5000000000", "eac47d05-f211-11f1-be3e-02fc00000001:abcdefghijklmnopqrstuvwxyz_01234:1",
			"eac47d05-f211-11f1-be3e-02fc00000001:t:1", "eac47d05-f211-11f1-be3e-02fc00000001:tag1:9223372036854775806",
			"eac47d05-f211-11f1-be3e-02fc00000001:tag2:2"}},
		// As MySQL reads and prints them.
		{in: uuidA + ":1-3:TAG:5", want: uuidA + ":1-3:tag:5", last: []string{uuidA + ":3", uuidA + ":tag:5"}},
		{in: uuidA + ":3-3", want: uuidA + ":3", last: []string{uuidA + ":3"}},
		{in: uuidA + ":1-2:2-5", want: uuidA + ":1-5", last: []string{uuidA + ":5"}},
		{in: uuidA + ":1-3:4-6", want: uuidA + ":1-6", last: []string{uuidA + ":6"}},
		{in: uuidA + ":1:1", want: uuidA + ":1", last: []string{uuidA + ":1"}},
		{in: uuidA + ":1:3:2", want: uuidA + ":1-3", last: []string{uuidA + ":3"}},
		{in: " " + uuidA + " : 1 - 3 ", want: uuidA + ":1-3", last: []string{uuidA + ":3"}},
		{in: uuidA + ":1," + uuidA + ":2", want: uuidA + ":1-2", last: []string{uuidA + ":2"}},
		{in: uuidA + ":tag1:1:tag1:3", want: uuidA + ":tag1:1:3", last: []string{uuidA + ":tag1:3"}},
		{in: uuidA + ":b:1:a:2:1", want: uuidA + ":a:1-2:b:1", last: []string{uuidA + ":a:2", uuidA + ":b:1"}},
		{in: uuidA + ":t:1:5:t:2", want: uuidA + ":t:1-2:5", last: []string{uuidA + ":t:5"}},
		{in: uuidA + ":1:_a9:3", want: uuidA + ":1:_a9:3", last: []string{uuidA + ":1", uuidA + ":_a9:3"}},
		{in: uuidA + ":_:1", want: uuidA + ":_:1", last: []string{uuidA + ":_:1"}},
		{in: uuidA + ":1-9223372036854775806", want: uuidA + ":1-9223372036854775806", last: []string{uuidA + ":9223372036854775806"}},
		{in: uuidA + ":" + strings.Repeat("a", 32) + ":1", want: uuidA + ":" + strings.Repeat("a", 32) + ":1",
			last: []string{uuidA + ":" + strings.Repeat("a", 32) + ":1"}},
		{in: strings.ToUpper(uuidB) + ":1,\n" + uuidA + ":2", want: uuidA + ":2," + uuidB + ":1", last: []string{uuidA + ":2", uuidB + ":1"}},
		{in: "," + uuidA + ":1,,", want: uuidA + ":1", last: []string{uuidA + ":1"}},
		// MySQL refuses these.
		{in: uuidA + ":0", err: true},
		{in: uuidA + ":9223372036854775807", err: true},
		{in: uuidA + ":1a", err: true},
		{in: uuidA + ":a-b:1", err: true},
		{in: uuidA + ":" + strings.Repeat("a", 33) + ":1", err: true},
		{in: uuidA + ":1:", err: true},
		{in: uuidA + "::1", err: true},
		{in: uuidA + ":tag:", err: true},
		{in: uuidA + ":1-2-3", err: true},
		{in: uuidA + ":-3", err: true},
		{in: uuidA + ":1-", err: true},
		{in: uuidA + ":tag 1:1", err: true},
		// MySQL ignores these; no server prints them.
		{in: uuidA, err: true},
		{in: uuidA + ":tag", err: true},
		{in: uuidA + ":1-3:tag", err: true},
		{in: uuidA + ":t1:t2:1", err: true},
		{in: uuidA + ":5-3", err: true},
		// Neither flavor's.
		{in: "0-1", err: true},
		{in: uuidA + ":x-5", err: true},
		{in: "not-a-uuid-at-all-xxxxxxxxxxxxxxxxxxx:5", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseGTIDSet(tc.in)
			if tc.err {
				if !errors.Is(err, ErrBadGTID) {
					t.Fatalf("ParseGTIDSet(%q) = %v, %v; want ErrBadGTID", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := got.String(); s != tc.want {
				t.Errorf("ParseGTIDSet(%q) = %q, want %q", tc.in, s, tc.want)
			}
			var last []string
			for _, g := range got.Last() {
				last = append(last, g.String())
			}
			if fmt.Sprint(last) != fmt.Sprint(tc.last) {
				t.Errorf("Last() = %q, want %q", last, tc.last)
			}
		})
	}
}

func TestGTIDSetContains(t *testing.T) {
	set, err := ParseGTIDSet(mysqlState + ",0-1-40")
	if err != nil {
		t.Fatal(err)
	}
	const u = "eac47d05-f211-11f1-be3e-02fc00000001"
	for _, tc := range []struct {
		gtid string
		want bool
	}{
		{u + ":1", true}, {u + ":4", true}, {u + ":5", false}, {u + ":5000000000", true}, {u + ":4999999999", false},
		{u + ":tag1:1", true}, {u + ":tag1:3", false}, {u + ":tag1:4294967297", true}, {u + ":tag1:9223372036854775806", true},
		{u + ":tag2:2", true}, {u + ":tag2:3", false}, {u + ":t:1", true}, {u + ":other:7", false},
		{"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:other:7", true}, {"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:other:6", false},
		{uuidA + ":1", false}, {"0-1-40", true}, {"0-2-39", true}, {"0-1-41", false}, {"1-1-1", false},
	} {
		if got := set.Contains(gtids(t, tc.gtid)[0]); got != tc.want {
			t.Errorf("Contains(%s) = %v, want %v", tc.gtid, got, tc.want)
		}
	}
}

// withGTIDs gives a test segment the GTID ranges of the listed transactions.
func (s *Segment) withGTIDs(t *testing.T, txns ...string) *Segment {
	for _, g := range gtids(t, txns...) {
		s.GTIDs = AddGTID(s.GTIDs, g)
	}
	return s
}

// withUnknown gives a test segment n GTID events whose GTIDs could not be read.
func (s *Segment) withUnknown(n int) *Segment {
	s.UnknownGTIDs = n
	return s
}

// TestBreaks judges timelines by position and GTID together.
func TestBreaks(t *testing.T) {
	for _, tc := range []struct {
		name      string
		segs      []*Segment
		want      []string // Break.String of each break
		wantJumps int
	}{
		{name: "whole", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, "0-1-1", "0-1-2"),
			testSeg(file1, 100, 200).withGTIDs(t, "0-1-3"),
			testSeg(file2, 4, 50).withPrev(file1, 200).withGTIDs(t, "0-1-4", "1-1-1"),
			testSeg(file2, 50, 60), // no transaction starts here
			testSeg(file2, 60, 90).withGTIDs(t, "1-1-2", "0-1-5"),
		}},
		{name: "a segment deleted mid-chain", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, "0-1-1039", "0-1-1040"),
			testSeg(file1, 300, 400).withGTIDs(t, "0-1-1201"),
		}, want: []string{"gap on timeline 1: GTIDs 0-1-1041..0-1-1200 missing; binlog mysql-bin.000001:100..mysql-bin.000001:300 missing " +
			"between binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000300-000000000400.json"}},
		{name: "a hole before a segment without transactions", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, "0-1-1", "0-1-2"),
			testSeg(file1, 200, 250), // the Rotate
			testSeg(file2, 4, 50).withPrev(file1, 250).withGTIDs(t, "0-1-9"),
		}, want: []string{"gap on timeline 1: GTIDs 0-1-3..0-1-8 missing; binlog mysql-bin.000001:100..mysql-bin.000001:200 missing " +
			"between binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000200-000000000250.json"}},
		{name: "positions meet but GTIDs do not", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":1", uuidA+":2"),
			testSeg(file1, 100, 200).withGTIDs(t, uuidA+":9"),
		}, want: []string{"gap on timeline 1: GTIDs " + uuidA + ":3.." + uuidA + ":8 missing between " +
			"binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000100-000000000200.json"}},
		{name: "a hole without transactions in it", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, "0-1-1"),
			testSeg(file1, 150, 200).withGTIDs(t, "0-1-2"),
		}, want: []string{"gap on timeline 1: binlog mysql-bin.000001:100..mysql-bin.000001:150 missing " +
			"between binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000150-000000000200.json"}},
		{name: "a segment from another server's history", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, "0-1-50"),
			testSeg(file1, 100, 200).withGTIDs(t, "0-2-20"),
		}, want: []string{"gap on timeline 1: GTID 0-2-20 follows 0-1-50 (the sequence goes back or repeats) between " +
			"binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000100-000000000200.json"}},
		{name: "numbers skipped inside one segment are the server's", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, "0-1-1", "0-1-2", "0-1-10"),
			testSeg(file1, 100, 200).withGTIDs(t, "0-1-11"),
		}, wantJumps: 1},
		{name: "tags are sequences of their own", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":1", uuidA+":t1:1", uuidA+":2", uuidA+":t1:2"),
			testSeg(file1, 100, 200).withGTIDs(t, uuidA+":t2:1", uuidA+":3", uuidA+":t1:3"),
			testSeg(file2, 4, 50).withPrev(file1, 200).withGTIDs(t, uuidA+":t2:2", uuidB+":other:9", uuidA+":t1:4"),
		}},
		{name: "a tag's GTIDs missing with a segment", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":1", uuidA+":t1:1", uuidA+":t1:2"),
			testSeg(file1, 300, 400).withGTIDs(t, uuidA+":2", uuidA+":t1:5"),
		}, want: []string{"gap on timeline 1: GTIDs " + uuidA + ":t1:3.." + uuidA + ":t1:4 missing; binlog mysql-bin.000001:100..mysql-bin.000001:300 missing " +
			"between binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000300-000000000400.json"}},
		{name: "positions meet but a tag's GTIDs do not", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":1", uuidA+":t1:1"),
			testSeg(file1, 100, 200).withGTIDs(t, uuidA+":2", uuidA+":t1:3"),
		}, want: []string{"gap on timeline 1: GTIDs " + uuidA + ":t1:2 missing between " +
			"binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000100-000000000200.json"}},
		{name: "a tag's sequence goes back", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":t1:9"),
			testSeg(file1, 100, 200).withGTIDs(t, uuidA+":t1:3"),
		}, want: []string{"gap on timeline 1: GTID " + uuidA + ":t1:3 follows " + uuidA + ":t1:9 (the sequence goes back or repeats) between " +
			"binlog/000001/0000000001/000000000004-000000000100.json and binlog/000001/0000000001/000000000100-000000000200.json"}},
		{name: "GTIDs that could not be read may be the numbers a sequence skips", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":t1:1", uuidA+":1"),
			testSeg(file1, 100, 200).withUnknown(2),
			testSeg(file1, 200, 300).withGTIDs(t, uuidA+":t1:3", uuidA+":2"),
			testSeg(file1, 300, 400).withUnknown(1).withGTIDs(t, uuidA+":t1:5", uuidA+":3"),
			testSeg(file1, 400, 500).withGTIDs(t, uuidA+":t1:6", uuidA+":4"),
		}},
		{name: "GTIDs that could not be read elsewhere do not excuse a gap", segs: []*Segment{
			testSeg(file1, 4, 100).withUnknown(1).withGTIDs(t, uuidA+":t1:1"),
			testSeg(file1, 100, 200).withGTIDs(t, uuidA+":t1:2"),
			testSeg(file1, 200, 300).withGTIDs(t, uuidA+":t1:5"),
		}, want: []string{"gap on timeline 1: GTIDs " + uuidA + ":t1:3.." + uuidA + ":t1:4 missing between " +
			"binlog/000001/0000000001/000000000100-000000000200.json and binlog/000001/0000000001/000000000200-000000000300.json"}},
		{name: "a hole next to GTIDs that could not be read is judged by position only", segs: []*Segment{
			testSeg(file1, 4, 100).withGTIDs(t, uuidA+":t1:1"),
			testSeg(file1, 100, 200).withUnknown(1),
			testSeg(file1, 300, 400).withGTIDs(t, uuidA+":t1:5"),
		}, want: []string{"gap on timeline 1: binlog mysql-bin.000001:200..mysql-bin.000001:300 missing " +
			"between binlog/000001/0000000001/000000000100-000000000200.json and binlog/000001/0000000001/000000000300-000000000400.json"}},
		{name: "numbers skipped inside a segment with GTIDs that could not be read", segs: []*Segment{
			testSeg(file1, 4, 100).withUnknown(1).withGTIDs(t, uuidA+":t1:1", uuidA+":t1:3"),
		}},
		{name: "missing first segment", segs: []*Segment{
			testSeg(file1, 100, 200).withGTIDs(t, "0-1-7"),
		}, want: []string{"gap on timeline 1: binlog mysql-bin.000001:4..mysql-bin.000001:100 missing " +
			"between binlog/000001/timeline.json and binlog/000001/0000000001/000000000100-000000000200.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := &TimelineState{Timeline: Timeline{ID: 1, Start: testPos(file1, 4)}, Segments: tc.segs}
			breaks, jumps := tl.Breaks()
			var got []string
			for _, b := range breaks {
				got = append(got, b.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("breaks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(jumps) != tc.wantJumps {
				t.Fatalf("jumps %+v, want %d", jumps, tc.wantJumps)
			}
			// Holes and Breaks agree on where the positions break.
			n := 0
			for _, b := range breaks {
				if b.Hole != nil {
					n++
				}
			}
			if n != len(tl.Holes()) {
				t.Fatalf("%d breaks with a hole, Holes() finds %d", n, len(tl.Holes()))
			}
		})
	}
}

func TestMissingBetween(t *testing.T) {
	last := gtids(t, uuidA+":10", uuidA+":t1:4", uuidA+":t2:9", uuidB+":3", "0-1-40")
	first := gtids(t, uuidA+":t1:7", uuidA+":11", uuidA+":t2:11", uuidA+":t3:1", uuidB+":other:1", "0-2-45")
	got := MissingBetween(last, first)
	want := []string{uuidA + ":t1:5.." + uuidA + ":t1:6", uuidA + ":t2:10", "0-1-41..0-1-44"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("MissingBetween = %q, want %q", got, want)
	}
}

func TestGTIDRangesWithTags(t *testing.T) {
	var a []GTIDRange
	for _, g := range gtids(t, uuidA+":1", uuidA+":t1:1", uuidA+":2", uuidA+":T1:2", uuidA+":t2:7") {
		a = AddGTID(a, g)
	}
	want := []GTIDRange{{First: uuidA + ":1", Last: uuidA + ":2", Count: 2}, {First: uuidA + ":t1:1", Last: uuidA + ":t1:2", Count: 2},
		{First: uuidA + ":t2:7", Last: uuidA + ":t2:7", Count: 1}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("AddGTID ranges %+v, want %+v", a, want)
	}
	var b []GTIDRange
	for _, g := range gtids(t, uuidA+":t2:8", uuidA+":t1:3", uuidA+":3") {
		b = AddGTID(b, g)
	}
	got := MergeGTIDRanges(a, b)
	want = []GTIDRange{{First: uuidA + ":1", Last: uuidA + ":3", Count: 3}, {First: uuidA + ":t1:1", Last: uuidA + ":t1:3", Count: 3},
		{First: uuidA + ":t2:7", Last: uuidA + ":t2:8", Count: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MergeGTIDRanges %+v, want %+v", got, want)
	}
}

func TestGapsNameMissingGTIDs(t *testing.T) {
	a := &Archive{Timelines: []*TimelineState{
		{Timeline: Timeline{ID: 1, Start: testPos(file1, 4)}, Segments: []*Segment{testSeg(file1, 4, 100).withGTIDs(t, "0-1-1", "0-1-40")}},
		{Timeline: Timeline{ID: 2, Reason: ReasonPurged, Start: testPos(file3, 4)}, Segments: []*Segment{
			{Timeline: 2, File: file3, FileNum: 3, Start: 4, End: 100, SHA256: testSHA, GTIDs: []GTIDRange{{First: "0-1-61", Last: "0-1-70", Count: 10}}}}},
	}}
	gaps := a.Gaps()
	if len(gaps) != 1 || fmt.Sprint(gaps[0].MissingGTIDs) != "[0-1-41..0-1-60]" {
		t.Fatalf("gaps %+v, want one naming 0-1-41..0-1-60", gaps)
	}
}

// FuzzParseGTID checks that what parses formats back to the same GTID.
func FuzzParseGTID(f *testing.F) {
	for _, s := range []string{"0-1-1041", uuidA + ":23", uuidA + ":tag:5", "1-2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGTID(s)
		if err != nil {
			return
		}
		back, err := ParseGTID(g.String())
		if err != nil || back != g {
			t.Fatalf("%q parsed as %+v, which formats as %q and parses as %+v, %v", s, g, g.String(), back, err)
		}
	})
}

// FuzzParseGTIDSet checks that any GTID state a server or a manifest holds
// parses or is refused, and that what parses formats as a set that parses
// back the same, whose last GTIDs parse and are in it.
func FuzzParseGTIDSet(f *testing.F) {
	for _, s := range []string{"0-1-1041,1-2-7", uuidA + ":1-10:12-20," + uuidB + ":5", uuidA + ":1-10:t:1-3", mysqlState,
		uuidA + ":b:1:a:2:1", " " + uuidA + " : 1 - 3 ", uuidA + ":tag", ",", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseGTIDSet(s)
		if err != nil {
			if !errors.Is(err, ErrBadGTID) {
				t.Fatalf("error %v does not wrap ErrBadGTID", err)
			}
			return
		}
		text := set.String()
		back, err := ParseGTIDSet(text)
		if err != nil || !reflect.DeepEqual(back, set) || back.String() != text {
			t.Fatalf("%q parsed as %q, which parses as %q, %v", s, text, back.String(), err)
		}
		for _, g := range set.Last() {
			if p, err := ParseGTID(g.String()); err != nil || p != g {
				t.Fatalf("%q gave %+v, which formats as %q that parses as %+v, %v", s, g, g.String(), p, err)
			}
			if !set.Contains(g) {
				t.Fatalf("%q: its last GTID %s is not in it", s, g)
			}
		}
	})
}

func TestHeldBy(t *testing.T) {
	const uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	held, err := HeldBy("0-1-30,1-2-7", uuid+":40", uuid+":tag:3")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		gtid string
		want bool
	}{
		{"0-1-30", true},
		{"0-1-29", true},
		{"0-1-31", false},
		{"0-2-5", false}, // the same domain, another server: its own sequence
		{"1-2-7", true},
		{"2-1-1", false},
		{uuid + ":40", true},
		{uuid + ":41", false},
		{uuid + ":tag:3", true},
		{uuid + ":tag:4", false},
		{uuid + ":other:1", false},
	} {
		g, err := ParseGTID(c.gtid)
		if err != nil {
			t.Fatal(err)
		}
		if got := held(g); got != c.want {
			t.Errorf("held(%s) = %v, want %v", c.gtid, got, c.want)
		}
	}
	if _, err := HeldBy("0-1-x"); err == nil {
		t.Error("HeldBy accepted 0-1-x")
	}
}
