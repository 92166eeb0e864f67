package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

var testSHA = strings.Repeat("ab", 32)

// validSegment is a record as the writer seals it.
func validSegment() *Segment {
	base := time.Date(2025, 10, 7, 5, 41, 50, 0, time.UTC)
	return &Segment{
		Timeline: 1, File: "mysql-bin.000003", FileNum: 3, Start: 4, End: 9022, TxnEnd: 9022,
		Events: 120, Transactions: 29,
		FirstEventTime: base, LastEventTime: base.Add(time.Minute),
		FirstCommitTime: base.Add(111065 * time.Microsecond), LastCommitTime: base.Add(time.Minute + 406679*time.Microsecond),
		FirstGTID: "0-1-1", LastGTID: "0-1-29",
		LastEvent:  EventRef{Pos: 8999, Size: 23, CRC32C: 0xdeadbeef},
		SHA256:     testSHA,
		StoredSize: 2100, ServerVersion: "10.11.19-MariaDB-log",
		ArchivedAt: base.Add(2 * time.Minute),
		Prev:       &Position{File: "mysql-bin.000002", Pos: 1234},
		FileEnds:   true,
		OpenTxn:    json.RawMessage(`{"start":8900,"begun":true}`),
	}
}

func TestSegmentValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(s *Segment)
		ok     bool
	}{
		{"as sealed", func(*Segment) {}, true},
		{"no complete transaction", func(s *Segment) { s.TxnEnd = 0 }, true},
		{"txn_end inside", func(s *Segment) { s.TxnEnd = 5 }, true},
		{"file number past six digits", func(s *Segment) { s.File, s.FileNum = "mysql-bin.1000000", 1000000 }, true},
		{"zero timeline", func(s *Segment) { s.Timeline = 0 }, false},
		{"no file", func(s *Segment) { s.File = "" }, false},
		{"empty range", func(s *Segment) { s.End = s.Start }, false},
		{"reversed range", func(s *Segment) { s.Start, s.End = 100, 50 }, false},
		{"starts inside the magic", func(s *Segment) { s.Start = 3 }, false},
		{"txn_end at the start", func(s *Segment) { s.TxnEnd = s.Start }, false},
		{"txn_end past the end", func(s *Segment) { s.TxnEnd = s.End + 1 }, false},
		{"short sha256", func(s *Segment) { s.SHA256 = testSHA[:63] }, false},
		{"no sha256", func(s *Segment) { s.SHA256 = "" }, false},
		{"file number disagrees", func(s *Segment) { s.FileNum = 4 }, false},
		{"file name without a number", func(s *Segment) { s.File = "mysql-bin" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSegment()
			tc.change(s)
			if err := s.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSegmentRecordRoundTrip(t *testing.T) {
	ctx := t.Context()
	st := storagetest.NewMemory()
	want := validSegment()
	key := want.Ref().RecordKey()
	if err := PutJSON(ctx, st, key, want, true); err != nil {
		t.Fatal(err)
	}
	var got Segment
	if err := GetJSON(ctx, st, key, &got); err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, want), mustJSON(t, &got); !bytes.Equal(a, b) {
		t.Errorf("read back\n%s\nwrote\n%s", b, a)
	}
	if !got.LastCommitTime.Equal(want.LastCommitTime) || got.LastCommitTime.Nanosecond() != want.LastCommitTime.Nanosecond() {
		t.Errorf("last commit time %v, want %v", got.LastCommitTime, want.LastCommitTime)
	}

	// An index record is written once: a second create fails.
	if err := PutJSON(ctx, st, key, want, true); !errors.Is(err, storage.ErrExist) {
		t.Errorf("second create: %v, want ErrExist", err)
	}
	if err := GetJSON(ctx, st, want.Ref().DataKey(), &got); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("missing key: %v, want ErrNotExist", err)
	}
	st.Corrupt(key)
	if err := GetJSON(ctx, st, key, &got); err == nil {
		t.Error("a corrupted record was read without error")
	}
	if err := PutJSON(ctx, st, "bad.json", map[string]any{"x": make(chan int)}, false); err == nil {
		t.Error("encoding a channel succeeded")
	}
	if err := st.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, key, strings.NewReader("{not json"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := GetJSON(ctx, st, key, &got); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("GetJSON of bad JSON = %v, want an error naming the key", err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzSegmentJSON decodes arbitrary index records. A record that Validate
// accepts must describe a real byte range, survive encoding, and never be
// filed under another segment's key.
func FuzzSegmentJSON(f *testing.F) {
	f.Add(mustJSON(f, validSegment()))
	s := validSegment()
	s.Prev, s.OpenTxn, s.FirstCommitTime, s.LastCommitTime = nil, nil, time.Time{}, time.Time{}
	f.Add(mustJSON(f, s))
	f.Add([]byte(`{"timeline":1,"file":"b.000001","file_num":1,"start":4,"end":5,"sha256":"` + testSHA + `"}`))
	f.Add([]byte(`{"timeline":1,"file":"b.10000000000","file_num":10000000000,"start":4,"end":5,"sha256":"` + testSHA + `"}`))
	f.Add([]byte(`{"timeline":1,"file":"b.1","file_num":1,"start":18446744073709551614,"end":18446744073709551615}`))
	f.Add([]byte(`{"open_txn":[1,2,3],"prev":null}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Segment
		if json.Unmarshal(data, &s) != nil {
			return
		}
		if s.Validate() != nil {
			return
		}
		if s.Size() == 0 || s.Size() > s.End {
			t.Fatalf("valid record of %d bytes: [%d,%d)", s.Size(), s.Start, s.End)
		}
		if s.TxnEnd != 0 && (s.TxnEnd <= s.Start || s.TxnEnd > s.End) {
			t.Fatalf("valid record with txn_end %d outside [%d,%d)", s.TxnEnd, s.Start, s.End)
		}
		// Keys: the record's own key gives back its ref, or does not parse
		// at all (numbers wider than the key) - never another segment's.
		ref := s.Ref()
		for _, key := range []string{ref.DataKey(), ref.RecordKey()} {
			if got, _, err := ParseSegmentKey(key); err == nil && got != ref {
				t.Fatalf("record %+v filed under %q, which parses as %+v", ref, key, got)
			}
		}
		// Encoding keeps a valid record valid and in place.
		var again Segment
		if err := json.Unmarshal(mustJSON(t, &s), &again); err != nil {
			t.Fatal(err)
		}
		if err := again.Validate(); err != nil || again.Ref() != ref {
			t.Fatalf("re-decoded record %+v: %v", again.Ref(), err)
		}
	})
}

func TestManifestValidateServerSettings(t *testing.T) {
	base := time.Date(2025, 10, 7, 5, 41, 50, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		lowerCase int
		pageSize  int
		ok        bool
	}{
		{"not recorded", 0, 0, true},
		{"the defaults", 0, 16384, true},
		{"lower case names, small pages", 1, 8192, true},
		{"lower_case_table_names 2", 2, 65536, true},
		{"lower_case_table_names 3", 3, 16384, false},
		{"negative lower_case_table_names", -1, 16384, false},
		{"page size not a power of two", 0, 12288, false},
		{"page size too small", 0, 2048, false},
		{"page size too large", 0, 131072, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Manifest{ID: "20251007T054150Z-0001", Method: MethodPhysical, Binlog: Position{File: "binlog.000001", Pos: 865},
				Started: base, Finished: base.Add(time.Minute), LowerCaseTableNames: tc.lowerCase, InnoDBPageSize: tc.pageSize}
			if err := m.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
