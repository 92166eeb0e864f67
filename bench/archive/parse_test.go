package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}}
	for _, tt := range tests {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("p%v: got %s, want %s", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("empty: got %s", got)
	}
}

func TestSysbenchTPS(t *testing.T) {
	tests := []struct {
		name, log string
		want      float64
	}{
		{"final report", "SQL statistics:\n    transactions:                        59940  (998.87 per sec.)\n", 998.87},
		{"intervals only", "[ 10s ] thds: 4 tps: 3900.00 qps: 1\n[ 20s ] thds: 4 tps: 4100.00 qps: 1\n", 4000},
		{"nothing", "Threads started!\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sysbench.log")
			if err := os.WriteFile(path, []byte(tt.log), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := sysbenchTPS(path); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
