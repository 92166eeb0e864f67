package snapshot

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// digestRows encodes rows as the dump does and digests them in chunks of
// the given sizes (the last chunk takes the rest), merging the chunks'
// digests as a snapshot does.
func digestRows(rows [][][]byte, chunkSizes ...int) rowDigest {
	var total rowDigest
	for len(rows) > 0 {
		n := len(rows)
		if len(chunkSizes) > 0 {
			n, chunkSizes = min(chunkSizes[0], n), chunkSizes[1:]
		}
		var data []byte
		for _, r := range rows[:n] {
			data = appendRow(data, r)
		}
		total.merge(digestOf(data))
		rows = rows[n:]
	}
	return total
}

func TestDigestIgnoresOrderAndChunking(t *testing.T) {
	var rows [][][]byte
	for i := range 500 {
		rows = append(rows, [][]byte{[]byte(fmt.Sprint(i)), []byte(fmt.Sprintf("v%d\tx\n", i%7)), nil})
	}
	// Duplicate rows, as a table without a unique key may hold, count twice.
	rows = append(rows, rows[3], rows[3])
	want := digestRows(rows)
	if want.rows != int64(len(rows)) {
		t.Fatalf("rows = %d, want %d", want.rows, len(rows))
	}
	shuffled := append([][][]byte{}, rows...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	ones := make([]int, len(rows))
	for i := range ones {
		ones[i] = 1
	}
	tests := []struct {
		name   string
		rows   [][][]byte
		chunks []int
	}{
		{"one chunk", rows, nil},
		{"chunks of 1", rows, ones},
		{"uneven chunks", rows, []int{7, 100, 3, 250}},
		{"shuffled", shuffled, nil},
		{"shuffled in chunks", shuffled, []int{1, 1, 1, 50, 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := digestRows(tt.rows, tt.chunks...)
			if got != want {
				t.Errorf("digest = %s (%d rows), want %s (%d rows)", got, got.rows, want, want.rows)
			}
		})
	}
	t.Run("a duplicate row is not cancelled", func(t *testing.T) {
		if got := digestRows(rows[:len(rows)-2]); got.sum == want.sum {
			t.Errorf("dropping two identical rows left the digest unchanged: %s", got)
		}
	})
}

func TestDigestTellsValuesApart(t *testing.T) {
	base := [][]byte{[]byte("42"), []byte("hello world"), []byte("")}
	digest := func(row [][]byte) string { return digestRows([][][]byte{row}).String() }
	want := digest(base)
	if len(want) != len(DigestAlgorithm)+1+16 || want[:len(DigestAlgorithm)+1] != DigestAlgorithm+":" {
		t.Fatalf("digest %q is not %s: and 16 hex digits", want, DigestAlgorithm)
	}
	tests := []struct {
		name string
		row  [][]byte
	}{
		{"one changed byte", [][]byte{[]byte("42"), []byte("hello worle"), []byte("")}},
		{"NULL instead of empty string", [][]byte{[]byte("42"), []byte("hello world"), nil}},
		{"the string \\N instead of empty string", [][]byte{[]byte("42"), []byte("hello world"), []byte(`\N`)}},
		{"a tab moved between fields", [][]byte{[]byte("42\thello"), []byte("world"), []byte("")}},
		{"one field fewer", [][]byte{[]byte("42"), []byte("hello world")}},
	}
	seen := map[string]string{want: "base"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := digest(tt.row)
			if other, dup := seen[got]; dup {
				t.Errorf("digest %s equals that of %s", got, other)
			}
			seen[got] = tt.name
		})
	}
	// NULL, empty string and "\N" differ from each other in one column too.
	null, empty, lit := digest([][]byte{nil}), digest([][]byte{{}}), digest([][]byte{[]byte(`\N`)})
	if null == empty || null == lit || empty == lit {
		t.Errorf("NULL %s, empty %s, \\N %s: want three different digests", null, empty, lit)
	}
}
