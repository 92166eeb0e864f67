package kit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestMedianPercentile(t *testing.T) {
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := Median(tt.xs); got != tt.want {
			t.Errorf("Median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0.1: time.Millisecond} {
		if got := Percentile(ds, p); got != want {
			t.Errorf("p%v = %s, want %s", p, got, want)
		}
	}
	if Percentile(nil, 99) != 0 {
		t.Error("Percentile(nil) is not 0")
	}
}

func TestProcParsing(t *testing.T) {
	// The command name holds a space and a parenthesis, as names may.
	cpu, err := ParseStatCPU("4242 (my (agent) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 8 0 100")
	if err != nil || cpu != 3250*time.Millisecond {
		t.Errorf("ParseStatCPU = %s, %v; want 3.25s", cpu, err)
	}
	for _, bad := range []string{"7 R 1", "7 (x) R 1 2"} {
		if _, err := ParseStatCPU(bad); err == nil {
			t.Errorf("ParseStatCPU(%q) gave no error", bad)
		}
	}
	status := "Name:\tmysql-pitr\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\n"
	if got, err := ParseStatusKB(status, "VmHWM"); err != nil || got != 40960<<10 {
		t.Errorf("ParseStatusKB = %d, %v", got, err)
	}
	if _, err := ParseStatusKB(status, "VmSwap"); err == nil {
		t.Error("ParseStatusKB found a missing line")
	}
	if got, want := ParseCPULine("cpu  100 5 50 800 10 2 3 30 0 0"), (CPUTimes{Busy: 160, Steal: 30, Total: 1000}); got != want {
		t.Errorf("ParseCPULine = %+v, want %+v", got, want)
	}
	if got := ParseCPULine("intr 1 2 3"); got != (CPUTimes{}) {
		t.Errorf("ParseCPULine of another line = %+v", got)
	}
}

func TestProgramName(t *testing.T) {
	root := "/r/usr/lib64/ld-linux-x86-64.so.2\x00--library-path\x00/r/usr/lib\x00/r/usr/sbin/mysqld\x00--no-defaults\x00"
	tests := []struct{ stat, cmdline, want string }{
		{"7 (mariadb-binlog) S 1", "", "mariadb-binlog"},
		{"7 (a (b) c) R 1", "", "a (b) c"},
		{"7 (ld-linux-x86-64) S 1", root, "mysqld"},
		{"7 (ld-linux-x86-64) S 1", "", "ld-linux-x86-64"}, // a server that hid its command line
	}
	for _, tt := range tests {
		if got := ProgramName(tt.stat, []byte(tt.cmdline)); got != tt.want {
			t.Errorf("ProgramName(%q, %q) = %q, want %q", tt.stat, tt.cmdline, got, tt.want)
		}
	}
}

// TestTreeSampler checks how a run's CPU is split between two times and
// programs: a process that ended before the window's end counts with its
// last reading, one that started inside it from zero.
func TestTreeSampler(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	s := NewTreeSampler(time.Second, "mysql-pitr", "mariadbd", "mariadb-binlog")
	s.series = map[int]*procSeries{
		1: {prog: "mysql-pitr", samples: []procSample{{at(0), sec(0.1), 30 << 20}, {at(1), sec(0.5), 40 << 20}, {at(5), sec(0.9), 45 << 20}}},
		2: {prog: "mariadbd", samples: []procSample{{at(0.5), sec(1), 100 << 20}, {at(2), sec(3), 200 << 20}, {at(4), sec(6), 210 << 20}}},
		3: {prog: "mariadb-binlog", samples: []procSample{{at(2), sec(0.2), 5 << 20}, {at(3), sec(0.7), 6 << 20}}},
		4: {prog: "mariadb-install", samples: []procSample{{at(0), sec(0.3), 2 << 20}}},
	}
	got := s.CPUBetween(at(1), at(4))
	want := map[string]time.Duration{"mariadbd": sec(5), "mariadb-binlog": sec(0.7)}
	if len(got) != len(want) || got["mariadbd"] != want["mariadbd"] || got["mariadb-binlog"] != want["mariadb-binlog"] {
		t.Errorf("CPUBetween = %v, want %v", got, want)
	}
	if rss := s.PeakRSS(); rss["mariadbd"] != 210<<20 || rss["mysql-pitr"] != 45<<20 || rss["other"] != 2<<20 || s.MaxRSS() != 210<<20 {
		t.Errorf("PeakRSS = %v, MaxRSS = %d", rss, s.MaxRSS())
	}
}

// TestDescendants starts a shell that starts a sleep and finds both below
// this process in /proc.
func TestDescendants(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), "sh", "-c", "sleep 5 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	testbed.Eventually(t, 5*time.Second, func() error {
		s := NewTreeSampler(time.Second)
		s.Add(cmd.Process.Pid)
		var progs []string
		for _, ps := range s.series {
			progs = append(progs, ps.prog)
		}
		slices.Sort(progs)
		// Between fork and exec the child is still called sh.
		if !slices.Equal(progs, []string{"sh", "sleep"}) {
			return fmt.Errorf("sampled %v, want the shell and its sleep", progs)
		}
		if d := Descendants(os.Getpid()); d[0] != os.Getpid() {
			return fmt.Errorf("descendants of this process %v, want it first", d)
		}
		return nil
	})
}

func TestPipeline(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	if err := os.WriteFile(in, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := Pipeline(t.Context(), []Stage{
		{Argv: []string{"sh", "-c", "sleep 0.2; exec tr a-z A-Z"}, Log: filepath.Join(dir, "tr.log")},
		{Argv: []string{"sed", "s/$/!/"}, Log: filepath.Join(dir, "sed.log")},
	}, in, out)
	if got, _ := os.ReadFile(out); err != nil || string(got) != "HELLO!\n" || u.PeakRSS <= 0 {
		t.Errorf("Pipeline = %q, %+v, %v", got, u, err)
	}
	// A failing first stage fails the pipeline and names its log's end.
	_, err = Pipeline(t.Context(), []Stage{
		{Argv: []string{"sh", "-c", "echo broken >&2; exit 3"}, Log: filepath.Join(dir, "sh.log")},
		{Argv: []string{"cat"}, Log: filepath.Join(dir, "cat.log")},
	}, "", out)
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("failing pipeline: %v", err)
	}
}

func TestCountGTIDs(t *testing.T) {
	tests := []struct {
		set  string
		want uint64
		ok   bool
	}{
		{"0-1-1234", 1234, true},
		{"0-1-1234,1-1-7", 1241, true},
		{"", 0, true},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:3", 9, true},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:pitr:1-10", 15, true},
		{"0-1", 0, false},
		{"0-1-x", 0, false},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:5-1", 0, false},
	}
	for _, tt := range tests {
		got, err := CountGTIDs(tt.set)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("CountGTIDs(%q) = %d, %v; want %d, ok %v", tt.set, got, err, tt.want, tt.ok)
		}
	}
}

func TestPositions(t *testing.T) {
	pos := func(f string, p uint64) catalog.Position { return catalog.Position{File: f, Pos: p} }
	for _, tt := range []struct {
		a, b catalog.Position
		want bool
	}{
		{pos("binlog.000002", 100), pos("binlog.000002", 100), true},
		{pos("binlog.000002", 99), pos("binlog.000002", 100), false},
		{pos("binlog.000003", 4), pos("binlog.000002", 900), true},
		{pos("binlog.000002", 900), pos("binlog.000010", 4), false},
		{catalog.Position{}, pos("binlog.000001", 4), false},
		{catalog.Position{}, catalog.Position{}, true},
	} {
		if got := PosAtLeast(tt.a, tt.b); got != tt.want {
			t.Errorf("PosAtLeast(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	logs := []BinaryLog{{"mysql-bin.000001", 1000}, {"mysql-bin.000002", 5000}, {"mysql-bin.000003", 700}}
	for _, tt := range []struct {
		from catalog.Position
		want int64
	}{
		{pos("mysql-bin.000002", 1000), 4000 + 700},
		{pos("mysql-bin.000001", 4), 996 + 5000 + 700},
		{pos("mysql-bin.000003", 700), 0},
		{pos("no-number", 4), 0},
	} {
		if got := BytesAfter(logs, tt.from); got != tt.want {
			t.Errorf("BytesAfter(%s) = %d, want %d", tt.from, got, tt.want)
		}
	}
	if TotalSize(logs) != 6700 {
		t.Errorf("TotalSize = %d", TotalSize(logs))
	}
}

func TestLogs(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, log string
		want      float64
	}{
		{"final report", "SQL statistics:\n    transactions:                        59940  (998.87 per sec.)\n", 998.87},
		{"intervals only", "[ 10s ] thds: 4 tps: 3900.00 qps: 1\n[ 20s ] thds: 4 tps: 4100.00 qps: 1\n", 4000},
		{"nothing", "Threads started!\n", 0},
	} {
		path := filepath.Join(dir, tt.name)
		if err := os.WriteFile(path, []byte(tt.log), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := SysbenchTPS(path); got != tt.want {
			t.Errorf("SysbenchTPS(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
	times, err := LogTimes(strings.NewReader(`{"time":"2026-11-27T14:29:39.5Z","level":"INFO","msg":"cloned","took":1}
mysqld: a line that is not JSON
{"time":"2026-11-27T14:29:41Z","level":"INFO","msg":"stored the clone"}
`))
	if err != nil || len(times) != 2 || times["cloned"].Sub(times["stored the clone"]) != -1500*time.Millisecond {
		t.Errorf("LogTimes = %v, %v", times, err)
	}
}

func TestReport(t *testing.T) {
	runs := []Run{
		{Tool: "a", Time: 2 * time.Second, Bytes: 100e6, Usage: Usage{CPU: time.Second, PeakRSS: 10e6}, Stored: 40e6},
		{Tool: "b", Time: 4 * time.Second, Bytes: 100e6, Usage: Usage{CPU: 4 * time.Second, PeakRSS: 5e6}},
		{Tool: "a", Time: 4 * time.Second, Bytes: 100e6, Usage: Usage{CPU: 3 * time.Second, PeakRSS: 30e6}, Stored: 60e6},
		{Tool: "a", Err: os.ErrDeadlineExceeded},
	}
	a := Summarize(runs, "a")
	if a.OK != 2 || a.Runs != 3 || a.Seconds != 3 || a.MBps != 37.5 || a.CPU != 2 || a.PeakRSS != 30e6 || a.Stored != 50e6 || a.MBperCPU() != 50 {
		t.Errorf("Summarize = %+v", a)
	}
	var r Report
	r.Line("Dataset: %d rows.", 5)
	r.Row("Capture, mariadb-binlog | zstd -1", "%s", "1 | 2")
	r.Ratio("ratio", 1.5, 2, true)
	r.Ratio("overhead", math.NaN(), 0.1, false)
	want := "Dataset: 5 rows.  \n\n| Measure | Result | Goal | Met |\n|---|---|---|---|\n" +
		"| Capture, mariadb-binlog \\| zstd -1 | 1 \\| 2 | | |\n| ratio | 1.50 | ≥ 2.0 | **no** |\n| overhead | n/a | ≤ 0.10 | **no** |\n"
	if got := r.Markdown(); got != want {
		t.Errorf("Markdown:\n%s\nwant:\n%s", got, want)
	}
	if Slug("mariadb-dump | zstd") != "mariadb-dump-zstd" || Slug("mysql < dump.sql") != "mysql-dump-sql" {
		t.Error("Slug")
	}
	if Ms(754*time.Microsecond) != "0.75 ms" || Ms(120*time.Millisecond) != "120 ms" || Plural(1, "run") != "1 run" || Plural(3, "run") != "3 runs" {
		t.Error("formatting")
	}
}

func TestSysbenchLatency(t *testing.T) {
	// The tail of a sysbench 1.0.20 run with --histogram --percentile=99:
	// 100 transactions.
	out := `Threads started!

Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.630 |                                         1
       1.007 |**                                       12
       1.025 |******                                   37
       1.044 |*****                                    30
       2.148 |*                                        19
       8.581 |*                                        1

SQL statistics:
Latency (ms):
         min:                                    0.63
         avg:                                    1.90
         max:                                    8.60
         99th percentile:                        %s
`
	dir := t.TempDir()
	write := func(p99 string) string {
		path := filepath.Join(dir, "sysbench-"+p99+".log")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(out, p99)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	l, err := SysbenchLatency(write("2.15"))
	if err != nil {
		t.Fatal(err)
	}
	// The 50th transaction is in the third bucket (1+12+37 = 50); the 99th
	// in the fifth; the 1st in the first.
	for p, want := range map[float64]float64{50: 1.025, 99: 2.148, 1: 0.630, 100: 8.581} {
		if got := l.Percentile(p); got != want || l.Count != 100 {
			t.Errorf("p%v = %v of %d, want %v of 100", p, got, l.Count, want)
		}
	}
	if _, err := SysbenchLatency(write("8.58")); err == nil {
		t.Error("a histogram that disagrees with sysbench's own percentile is accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "none.log"), []byte("Threads started!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := SysbenchLatency(filepath.Join(dir, "none.log")); err == nil {
		t.Error("a log without a histogram is accepted")
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(t.Context(), time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return fmt.Errorf("try %d", n)
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("Poll = %v after %d tries, want nil after 3", err, n)
	}
	err := Poll(t.Context(), 20*time.Millisecond, time.Millisecond, func() error { return errors.New("never") })
	if err == nil || !strings.Contains(err.Error(), "never") {
		t.Errorf("Poll that never succeeds = %v, want its last error", err)
	}
}
