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

func TestParseGTIDSet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "", want: nil},
		{in: "0-1-1041", want: []string{"0-1-1041"}},
		{in: "0-1-1041,1-2-7", want: []string{"0-1-1041", "1-2-7"}},
		{in: uuidA + ":1-1041", want: []string{uuidA + ":1041"}},
		{in: uuidA + ":1-1041:1050-1060,\n" + uuidB + ":1-5", want: []string{uuidA + ":1060", uuidB + ":5"}},
		{in: uuidA + ":7", want: []string{uuidA + ":7"}},
		{in: uuidA + ":1-10:orders:1-3", want: []string{uuidA + ":10", uuidA + ":orders:3"}},
		{in: "0-1", err: true},
		{in: uuidA + ":x-5", err: true},
		{in: uuidA, err: true},
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
			var s []string
			for _, g := range got {
				s = append(s, g.String())
			}
			if fmt.Sprint(s) != fmt.Sprint(tc.want) {
				t.Fatalf("ParseGTIDSet(%q) = %q, want %q", tc.in, s, tc.want)
			}
		})
	}
}

// withGTIDs gives a test segment the GTID ranges of the listed transactions.
func (s *Segment) withGTIDs(t *testing.T, txns ...string) *Segment {
	for _, g := range gtids(t, txns...) {
		s.GTIDs = AddGTID(s.GTIDs, g)
	}
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
// parses or is refused, and what parses formats as GTIDs that parse.
func FuzzParseGTIDSet(f *testing.F) {
	for _, s := range []string{"0-1-1041,1-2-7", uuidA + ":1-10:12-20," + uuidB + ":5", uuidA + ":1-10:t:1-3", ",", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseGTIDSet(s)
		if err != nil {
			return
		}
		for _, g := range set {
			if _, err := ParseGTID(g.String()); err != nil {
				t.Fatalf("%q gave %+v, which formats as %q that does not parse: %v", s, g, g.String(), err)
			}
		}
	})
}
