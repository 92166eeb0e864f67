package restore

import "testing"

func TestStopReplayed(t *testing.T) {
	s := &Stop{Files: []ReplayFile{
		{Name: "bin.000007", From: 1000, To: 5000},
		{Name: "bin.000008", From: 4, To: 2004},
		{Name: "bin.000010", From: 4, To: 104},
	}}
	tests := []struct {
		name string
		file string
		pos  uint64
		want int64
	}{
		{"not started", "", 0, 0},
		{"at the first byte", "bin.000007", 1000, 0},
		{"inside the first file", "bin.000007", 3000, 2000},
		{"end of the first file", "bin.000007", 5000, 4000},
		{"past the range in a file is capped", "bin.000007", 9000, 4000},
		{"start of the second file", "bin.000008", 4, 4000},
		{"inside the second file", "bin.000008", 1004, 5000},
		{"a file between the ranges", "bin.000009", 4, 6000},
		{"at the stop", "bin.000010", 104, 6100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.replayed(tt.file, tt.pos); got != tt.want {
				t.Errorf("replayed(%s, %d) = %d, want %d", tt.file, tt.pos, got, tt.want)
			}
		})
	}
	if got := s.replayBytes(); got != 6100 {
		t.Errorf("replayBytes = %d, want 6100", got)
	}
}
