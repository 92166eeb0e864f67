package bytesize

import (
	"errors"
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: an error
	}{
		{"0", 0}, {"1048576", 1 << 20}, {"512MiB", 512 << 20}, {"1G", 1 << 30}, {"1GiB", 1 << 30}, {"64MB", 64e6},
		{"1 GiB", 1 << 30}, {" 2K ", 2048}, {"3B", 3}, {"1TB", 1e12}, {"8T", 8 << 40}, {"9223372036854775807", math.MaxInt64},
		{"8388607TiB", 8388607 << 40},
		{"", -1}, {"MiB", -1}, {"-1", -1}, {"+1", -1}, {"1.5G", -1}, {"1 G B", -1}, {"1g", -1}, {"1Gb", -1}, {"0x10", -1},
		{"8388608TiB", -1}, {"9223372036854775808", -1}, {"10000000000G", -1},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.want < 0 {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("Parse(%q) = %d, %v; want ErrSyntax", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"512MiB", "1G", "64MB", "9223372036854775807", "8388608TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("Parse(%q) = %d, negative", s, n)
		}
		if back, err := Parse(Format(n)); err != nil || back != n {
			t.Fatalf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	})
}
