package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/restore"
)

func TestProgressLine(t *testing.T) {
	tests := []struct {
		name    string
		p       restore.Progress
		elapsed time.Duration
		want    []string
	}{
		{"half way", restore.Progress{Phase: restore.PhaseDownload, Done: 50 << 20, Total: 100 << 20}, 5 * time.Second,
			[]string{"download", "[############------------]", " 50%", "50.0/100.0 MiB", "10.0 MiB/s", "ETA 5s"}},
		{"finished", restore.Progress{Phase: restore.PhaseReplay, Done: 8 << 20, Total: 8 << 20}, 2 * time.Second,
			[]string{"replay", "100%", "8.0/8.0 MiB", "done in 2s"}},
		{"unknown total", restore.Progress{Phase: restore.PhaseSnapshot, Done: 3 << 20}, time.Second,
			[]string{"snapshot", "3.0 MiB", "3.0 MiB/s"}},
		{"nothing yet", restore.Progress{Phase: restore.PhaseReplay, Total: 1 << 20}, 0,
			[]string{"[------------------------]", "0%"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := progressLine(tt.p, tt.elapsed)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("progressLine = %q, want it to contain %q", got, w)
				}
			}
			if strings.Contains(got, "ETA") && tt.p.Done >= tt.p.Total {
				t.Errorf("a finished phase shows an ETA: %q", got)
			}
		})
	}
}

// TestRestoreProgressTerminal checks each phase ends on its own line with
// its final figures, and redraws are throttled.
func TestRestoreProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	clock := time.Unix(1000, 0)
	p := &restoreProgress{w: &out, tty: true, logger: discardInfo{}, now: func() time.Time { return clock }}
	for i := int64(1); i <= 100; i++ {
		clock = clock.Add(10 * time.Millisecond)
		p.update(restore.Progress{Phase: restore.PhaseDownload, Done: i << 20, Total: 100 << 20})
	}
	p.update(restore.Progress{Phase: restore.PhaseReplay, Done: 0, Total: 10 << 20})
	clock = clock.Add(time.Second)
	p.update(restore.Progress{Phase: restore.PhaseReplay, Done: 10 << 20, Total: 10 << 20})
	p.done()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want one per phase:\n%q", len(lines), out.String())
	}
	final := func(l string) string { return l[strings.LastIndex(l, "\r")+1:] }
	if f := final(lines[0]); !strings.Contains(f, "download") || !strings.Contains(f, "100.0/100.0 MiB") {
		t.Errorf("download line ends %q", f)
	}
	if f := final(lines[1]); !strings.Contains(f, "replay") || !strings.Contains(f, "done in") {
		t.Errorf("replay line ends %q", f)
	}
	if n := strings.Count(lines[0], "\r"); n > 15 {
		t.Errorf("download redrawn %d times in 1 s; want about 10", n)
	}
}

// TestRestoreProgressLog checks the non-terminal form: a log line every
// 10 s and one at each phase's end.
func TestRestoreProgressLog(t *testing.T) {
	clock := time.Unix(1000, 0)
	var logged []string
	p := &restoreProgress{w: &bytes.Buffer{}, logger: recordInfo{&logged}, now: func() time.Time { return clock }}
	for i := int64(0); i <= 30; i++ {
		p.update(restore.Progress{Phase: restore.PhaseSnapshot, Done: i, Total: 30})
		clock = clock.Add(time.Second)
	}
	p.done()
	want := []string{"restore progress", "restore progress", "restore progress", "restore phase done"}
	if strings.Join(logged, ",") != strings.Join(want, ",") {
		t.Errorf("logged %v, want %v", logged, want)
	}
}

type discardInfo struct{}

func (discardInfo) Info(string, ...any) {}

type recordInfo struct{ msgs *[]string }

func (r recordInfo) Info(msg string, _ ...any) { *r.msgs = append(*r.msgs, msg) }
