package benchkit

import (
	"math"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// The command name holds a space and a parenthesis, as names may.
	stat := "4242 (my (agent) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 8 0 100 1000000 2000 18446744073709551615"
	got, err := ParseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := ParseStatCPU("4242 agent S 1"); err == nil {
		t.Error("no error for a line without a command name")
	}
}

func TestParseStatCPUMore(t *testing.T) {
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
			got, err := ParseStatCPU(tt.stat)
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
	got := ParseCPULine("cpu  100 10 50 800 20 5 5 10 0 0")
	want := CPUTimes{Busy: 170, Steal: 10, Total: 1000}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseCPULineMore(t *testing.T) {
	got := ParseCPULine("cpu  100 5 50 800 10 2 3 30 0 0")
	want := CPUTimes{Busy: 160, Steal: 30, Total: 1000}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := ParseCPULine("intr 1 2 3"); got != (CPUTimes{}) {
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
			if got := Median(tt.xs); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMedianMore(t *testing.T) {
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
			if got := Median(tt.xs); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Errorf("Median(nil) = %v, want NaN", got)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{{"1GiB", 1 << 30}, {"200MiB", 200 << 20}, {"1048576", 1 << 20}, {"5 MB", 5e6}}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	if _, err := ParseSize("lots"); err == nil {
		t.Error("no error for a bad size")
	}
}

func TestParseSizeMore(t *testing.T) {
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
			got, err := ParseSize(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("got %d, %v; want %d, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tmysql-pitr\nVmPeak:\t 1300000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\n"
	got, err := ParseStatusKB(status, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(40960 << 10); got != want {
		t.Errorf("got %d, want %d", got, want)
	}
	if _, err := ParseStatusKB(status, "VmSwap"); err == nil {
		t.Error("no error for a missing line")
	}
}
