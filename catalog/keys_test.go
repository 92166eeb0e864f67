package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Widest numbers the fixed-width keys hold.
const (
	maxKeyTimeline = 999_999
	maxKeyFileNum  = 9_999_999_999
	maxKeyPos      = 999_999_999_999
)

func TestTimelineID(t *testing.T) {
	if got, want := TimelineID(3).String(), "000003"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := TimelineKey(12), "binlog/000012/timeline.json"; got != want {
		t.Errorf("TimelineKey(12) = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		in   string
		want TimelineID // 0: an error
	}{
		{"000003", 3},
		{"3", 3},
		{"999999", 999999},
		{"4294967295", 4294967295},
		{"0", 0},
		{"000000", 0},
		{"", 0},
		{"-1", 0},
		{"+1", 0},
		{"4294967296", 0},
		{"1e3", 0},
		{" 1", 0},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTimelineID(tc.in)
			if tc.want == 0 {
				if !errors.Is(err, ErrBadKey) {
					t.Fatalf("ParseTimelineID(%q) = %d, %v; want ErrBadKey", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseTimelineID(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSegmentKeys(t *testing.T) {
	for _, tc := range []struct {
		ref  SegmentRef
		stem string
	}{
		{SegmentRef{1, 1, 4, 1234, 0}, "binlog/000001/0000000001/000000000004-000000001234"},
		{SegmentRef{7, 42, 1_000_000, 1_000_001, 0}, "binlog/000007/0000000042/000001000000-000001000001"},
		// MySQL and MariaDB go past six digits after mysql-bin.999999.
		{SegmentRef{2, 1_000_000, 4, 5, 0}, "binlog/000002/0001000000/000000000004-000000000005"},
		{SegmentRef{2, 2147483647, 4, 4294967295, 0}, "binlog/000002/2147483647/000000000004-004294967295"},
		{SegmentRef{maxKeyTimeline, maxKeyFileNum, maxKeyPos - 1, maxKeyPos, 0},
			"binlog/999999/9999999999/999999999998-999999999999"},
		{SegmentRef{1, 1, 4, 1234, 7}, "binlog/000001/0000000001/000000000004-000000001234.g0000000007"},
		{SegmentRef{1, 1, 4, 1234, maxGeneration}, "binlog/000001/0000000001/000000000004-000000001234.g9999999999"},
	} {
		t.Run(tc.stem, func(t *testing.T) {
			if got, want := tc.ref.DataKey(), tc.stem+".zst"; got != want {
				t.Errorf("DataKey() = %q, want %q", got, want)
			}
			if got, want := tc.ref.RecordKey(), tc.stem+".json"; got != want {
				t.Errorf("RecordKey() = %q, want %q", got, want)
			}
			for _, isRecord := range []bool{false, true} {
				key := tc.ref.DataKey()
				if isRecord {
					key = tc.ref.RecordKey()
				}
				ref, rec, err := ParseSegmentKey(key)
				if err != nil || ref != tc.ref || rec != isRecord {
					t.Errorf("ParseSegmentKey(%q) = %+v, %v, %v; want %+v, %v", key, ref, rec, err, tc.ref, isRecord)
				}
			}
			if !strings.HasPrefix(tc.ref.DataKey(), TimelinePrefix(tc.ref.Timeline)) {
				t.Errorf("%q is not under %q", tc.ref.DataKey(), TimelinePrefix(tc.ref.Timeline))
			}
		})
	}
}

func TestParseSegmentKeyRejects(t *testing.T) {
	for _, key := range []string{
		"",
		"binlog/",
		"binlog/000001/0000000001/000000000004-000000001234",      // no suffix
		"binlog/000001/0000000001/000000000004-000000001234.zst2", // other suffix
		"binlog/000001/0000000001/000000000004-000000001234.json.tmp",
		"/binlog/000001/0000000001/000000000004-000000001234.zst",
		"snapshots/000001/0000000001/000000000004-000000001234.zst",
		"binlog/000000/0000000001/000000000004-000000001234.zst",              // timeline 0
		"binlog/00001/0000000001/000000000004-000000001234.zst",               // narrow timeline
		"binlog/0000001/0000000001/000000000004-000000001234.zst",             // wide timeline
		"binlog/000001/000000001/000000000004-000000001234.zst",               // narrow file number
		"binlog/000001/00000000001/000000000004-000000001234.zst",             // wide file number
		"binlog/000001/0000000001/00000000004-000000001234.zst",               // narrow start
		"binlog/000001/0000000001/000000000004-0000000001234.zst",             // wide end
		"binlog/000001/0000000001/000000000004_000000001234.zst",              // separator
		"binlog/000001/0000000001/000000001234-000000001234.zst",              // empty range
		"binlog/000001/0000000001/000000001234-000000000004.zst",              // reversed range
		"binlog/000001/000000000x/000000000004-000000001234.zst",              // not a digit
		"binlog/000001/0000000001/+00000000004-000000001234.zst",              // sign
		"binlog/000001/0000000001/-00000000004-000000001234.zst",              // sign
		"binlog/00000x/0000000001/000000000004-000000001234.zst",              // timeline not a digit
		"binlog/000001/0000000001/000000000004-000000001234/.zst",             // extra part
		"binlog/000001/0000000001/x/000000000004-000000001234.zst",            // extra part
		"binlog/000001/000000000004-000000001234.zst",                         // missing part
		"binlog/000001/timeline.json",                                         // a timeline record
		"binlog/000001/0000000001/000000000004-00000000123٤.zst",              // a non-ASCII digit
		"binlog/000001/0000000001/000000000004-000000001234.ZST",              // case
		"binlog/000001/0000000001/000000000004-000000001234.zst.zst",          // doubled suffix
		"binlog/000001/0000000001/000000000004-000000001234.g0000000000.zst",  // generation 0 is written without
		"binlog/000001/0000000001/000000000004-000000001234.g000000007.zst",   // narrow generation
		"binlog/000001/0000000001/000000000004-000000001234.g00000000007.zst", // wide generation
		"binlog/000001/0000000001/000000000004-000000001234.g000000000x.zst",  // not a digit
		"binlog/000001/0000000001/000000000004-000000001234.G0000000007.zst",  // case
		"binlog/000001/0000000001/000000000004-000000001234.g0000000007.g0000000007.zst",
		"binlog/000001/0000000001/000000000004-000000001234g0000000007.zst",
	} {
		t.Run(key, func(t *testing.T) {
			ref, rec, err := ParseSegmentKey(key)
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("ParseSegmentKey(%q) = %+v, %v, %v; want ErrBadKey", key, ref, rec, err)
			}
		})
	}
}

func TestParseTimelineKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want TimelineID // 0: ErrBadKey
	}{
		{"binlog/000001/timeline.json", 1},
		{"binlog/999999/timeline.json", 999999},
		{"binlog/000000/timeline.json", 0},
		{"binlog/1/timeline.json", 0},
		{"binlog/0000001/timeline.json", 0},
		{"binlog/00000a/timeline.json", 0},
		{"binlog/000001/timeline.json/x", 0},
		{"binlog/000001/x/timeline.json", 0},
		{"binlog/000001/timeline.jso", 0},
		{"binlog/000001/", 0},
		{"binlog/000001", 0},
		{"000001/timeline.json", 0},
		{"binlog/000001/0000000001/000000000004-000000001234.json", 0},
		{"", 0},
	} {
		t.Run(tc.key, func(t *testing.T) {
			got, err := ParseTimelineKey(tc.key)
			if tc.want == 0 {
				if !errors.Is(err, ErrBadKey) {
					t.Fatalf("ParseTimelineKey(%q) = %d, %v; want ErrBadKey", tc.key, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseTimelineKey(%q) = %d, %v; want %d", tc.key, got, err, tc.want)
			}
		})
	}
}

// TestKeysSortInArchiveOrder checks that listing order (bytewise key order)
// is archive order: timeline, then file number, then position, including
// where a number gains a digit.
func TestKeysSortInArchiveOrder(t *testing.T) {
	refs := []SegmentRef{ // in archive order
		{1, 1, 4, 999, 0},
		{1, 1, 4, 1000, 0}, // a compacted segment sorts after the first one it covers
		{1, 1, 999, 1000, 0},
		{1, 1, 1000, 1_000_000_000, 0},
		{1, 1, 1_000_000_000, 4_294_967_295, 0},
		{1, 9, 4, 100, 0},
		{1, 10, 4, 100, 0},
		{1, 999_999, 4, 100, 0},
		{1, 1_000_000, 4, 100, 0},
		{1, 1_000_001, 4, 100, 0},
		{9, 1, 4, 100, 0},
		{10, 1, 4, 100, 0},
		{100_000, 1, 4, 100, 0},
	}
	var keys []string
	for _, r := range refs {
		keys = append(keys, r.RecordKey(), r.DataKey()) // ".json" < ".zst"
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	if !slices.Equal(keys, sorted) {
		t.Errorf("keys in archive order:\n%s\nsorted:\n%s", strings.Join(keys, "\n"), strings.Join(sorted, "\n"))
	}
	for i := 1; i < len(refs); i++ {
		if refs[i-1].Timeline != refs[i].Timeline {
			continue // refLess orders the segments of one timeline
		}
		if !refLess(refs[i-1], refs[i]) || refLess(refs[i], refs[i-1]) {
			t.Errorf("refLess disagrees with archive order at %+v, %+v", refs[i-1], refs[i])
		}
	}
	// Every key of a timeline sorts after those of earlier timelines.
	if a, b := TimelineKey(1), (SegmentRef{2, 1, 4, 5, 0}).DataKey(); a >= b {
		t.Errorf("%q sorts after %q", a, b)
	}
}

func TestFileNumber(t *testing.T) {
	for _, tc := range []struct {
		name string
		want uint64
		ok   bool
	}{
		{"mysql-bin.000042", 42, true},
		{"binlog.000001", 1, true},
		{"mariadb-bin.999999", 999999, true},
		{"mariadb-bin.1000000", 1000000, true},
		{"host.example.com-bin.000003", 3, true},
		{"x.0", 0, true},
		{"x.18446744073709551615", 18446744073709551615, true},
		{"x.18446744073709551616", 0, false}, // overflows
		{"", 0, false},
		{"mysql-bin", 0, false},
		{"mysql-bin.", 0, false},
		{"mysql-bin.index", 0, false},
		{"mysql-bin.00004x", 0, false},
		{"mysql-bin.-1", 0, false},
		{"mysql-bin.+1", 0, false},
		{"mysql-bin. 1", 0, false},
		{"mysql-bin.000001/", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FileNumber(tc.name)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("FileNumber(%q) = %d, %v; want %d, ok=%v", tc.name, got, err, tc.want, tc.ok)
			}
		})
	}
}

// fitsKeys reports whether ref's numbers fit the key's fixed widths.
func fitsKeys(ref SegmentRef) bool {
	return ref.Timeline >= 1 && ref.Timeline <= maxKeyTimeline && ref.FileNum <= maxKeyFileNum &&
		ref.Start < ref.End && ref.End <= maxKeyPos
}

func FuzzParseSegmentKey(f *testing.F) {
	f.Add("binlog/000001/0000000001/000000000004-000000001234.zst")
	f.Add("binlog/000001/0000000001/000000000004-000000001234.json")
	f.Add("binlog/999999/9999999999/999999999998-999999999999.zst")
	f.Add("binlog/000001/timeline.json")
	f.Add("binlog/000001/0000000001/000000001234-000000000004.zst")
	f.Add("")
	f.Fuzz(func(t *testing.T, key string) {
		ref, isRecord, err := ParseSegmentKey(key)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v does not wrap ErrBadKey", err)
			}
			return
		}
		// Only the canonical spelling parses: one ref, one key.
		canon := ref.DataKey()
		if isRecord {
			canon = ref.RecordKey()
		}
		if canon != key {
			t.Fatalf("%q parsed as %+v, which is spelled %q", key, ref, canon)
		}
		if !fitsKeys(ref) {
			t.Fatalf("%q parsed as %+v, outside the key's widths", key, ref)
		}
		if _, err := ParseTimelineKey(key); err == nil {
			t.Fatalf("%q is both a segment and a timeline key", key)
		}
	})
}

func FuzzSegmentRefRoundTrip(f *testing.F) {
	f.Add(uint32(1), uint64(1), uint64(4), uint64(1234))
	f.Add(uint32(2), uint64(1_000_000), uint64(4), uint64(5))
	f.Add(uint32(maxKeyTimeline), uint64(maxKeyFileNum), uint64(maxKeyPos-1), uint64(maxKeyPos))
	f.Add(uint32(maxKeyTimeline+1), uint64(maxKeyFileNum+1), uint64(maxKeyPos), uint64(maxKeyPos+1))
	f.Add(uint32(0), uint64(0), uint64(0), uint64(0))
	f.Add(uint32(1), uint64(1), uint64(5), uint64(4))
	f.Fuzz(func(t *testing.T, tl uint32, file, start, end uint64) {
		ref := SegmentRef{Timeline: TimelineID(tl), FileNum: file, Start: start, End: end}
		for _, isRecord := range []bool{false, true} {
			key := ref.DataKey()
			if isRecord {
				key = ref.RecordKey()
			}
			got, rec, err := ParseSegmentKey(key)
			switch {
			case fitsKeys(ref) && (err != nil || got != ref || rec != isRecord):
				t.Fatalf("ParseSegmentKey(%q) = %+v, %v, %v; want %+v, %v", key, got, rec, err, ref, isRecord)
			case !fitsKeys(ref) && err == nil:
				// A number too wide for its field must not read as another ref.
				t.Fatalf("ParseSegmentKey(%q) = %+v for %+v, which does not fit the key", key, got, ref)
			}
		}
		if ref.Timeline >= 1 && ref.Timeline <= maxKeyTimeline {
			if got, err := ParseTimelineKey(TimelineKey(ref.Timeline)); err != nil || got != ref.Timeline {
				t.Fatalf("ParseTimelineKey(%q) = %d, %v", TimelineKey(ref.Timeline), got, err)
			}
		}
	})
}

func FuzzParseTimelineKey(f *testing.F) {
	f.Add("binlog/000001/timeline.json")
	f.Add("binlog/000000/timeline.json")
	f.Add("binlog/1/timeline.json")
	f.Fuzz(func(t *testing.T, key string) {
		id, err := ParseTimelineKey(key)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v does not wrap ErrBadKey", err)
			}
			return
		}
		if id == 0 || TimelineKey(id) != key {
			t.Fatalf("%q parsed as timeline %d, whose key is %q", key, id, TimelineKey(id))
		}
	})
}

func FuzzFileNumber(f *testing.F) {
	f.Add("mysql-bin.000042", uint64(42))
	f.Add("mariadb-bin.1000000", uint64(1))
	f.Add("a.b.c", uint64(0))
	f.Add("", uint64(18446744073709551615))
	f.Fuzz(func(t *testing.T, name string, n uint64) {
		got, err := FileNumber(name)
		if err == nil {
			suffix := name[strings.LastIndexByte(name, '.')+1:]
			if want, _ := strconv.ParseUint(suffix, 10, 64); got != want || strings.TrimLeft(suffix, "0123456789") != "" {
				t.Fatalf("FileNumber(%q) = %d from suffix %q", name, got, suffix)
			}
		}
		// A server's name for file n, whatever its base name, gives back n.
		base := strings.ReplaceAll(name, "/", "")
		for _, width := range []int{1, 6, 20} {
			fn := fmt.Sprintf("%s.%0*d", base, width, n)
			if got, err := FileNumber(fn); err != nil || got != n {
				t.Fatalf("FileNumber(%q) = %d, %v; want %d", fn, got, err, n)
			}
		}
	})
}
