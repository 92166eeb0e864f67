package main

import (
	"math"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want time.Duration
		ok   bool
	}{
		{"plain", "42 (mysql-pitr) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 8 0", 1750 * time.Millisecond, true},
		{"name with spaces and parens", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0", 70 * time.Millisecond, true},
		{"no name", "7 R 1", 0, false},
		{"short", "7 (x) R 1 2", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseCPULine(t *testing.T) {
	got := parseCPULine("cpu  100 5 50 800 10 2 3 30 0 0")
	want := cpuTimes{busy: 160, steal: 30, total: 1000}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := parseCPULine("intr 1 2 3"); got != (cpuTimes{}) {
		t.Errorf("not a cpu line: got %+v", got)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"one", []float64{7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.xs); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct{ got, want string }{
		{ms(754 * time.Microsecond), "0.75 ms"},
		{ms(120 * time.Millisecond), "120 ms"},
		{cell("mariadb-dump | zstd"), `mariadb-dump \| zstd`},
		{slug("mariadb-dump | zstd"), "mariadb-dump-zstd"},
		{slug("mariadb < dump.sql"), "mariadb-dump-sql"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"2GiB", 2 << 30, true},
		{"512MiB", 512 << 20, true},
		{"1048576", 1 << 20, true},
		{"-1", 0, false},
		{"lots", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("got %d, %v; want %d, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}
