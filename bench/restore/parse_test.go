package main

import (
	"flag"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

func TestParseSummary(t *testing.T) {
	plan := "target:    latest\nsnapshot:  20261127T142926Z-aa60 (logical, …)\n"
	tests := []struct {
		name, stdout string
		want         summary
		ok           bool
	}{
		{"minutes", plan + "restored /d to latest: snapshot 20261127T142926Z-aa60 + 150123 transactions, last committed 2026-11-27T14:29:32Z, stopped at mysql-bin.000005:47733380, in 2m3.5s (replay 1m50.25s)\n",
			summary{Transactions: 150123, Total: 123500 * time.Millisecond, Replay: 110250 * time.Millisecond}, true},
		{"nothing replayed", "restored /d to latest: snapshot X + 0 transactions, last committed -, stopped at mysql-bin.000001:4, in 812ms (replay 0s)\n",
			summary{Total: 812 * time.Millisecond}, true},
		{"a summary without the replay", "restored /d to latest: snapshot X + 5 transactions, last committed -, stopped at f.000001:4, in 1s\n", summary{}, false},
		{"bad duration", "restored /d to latest: snapshot X + 5 transactions, last committed -, stopped at f.000001:4, in 1x (replay 1s)\n", summary{}, false},
		{"no summary", plan, summary{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSummary(tt.stdout)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseLogMarks(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	server := `{"time":"2026-11-27T14:29:39.0Z","level":"INFO","msg":"replay range","from":"mysql-bin.000001:4","stop":"mysql-bin.000001:900","transactions":3}
{"time":"2026-11-27T14:29:40.5Z","level":"INFO","msg":"loading","tables_done":4}
mariadb-install-db: a line that is not JSON
{"time":"2026-11-27T14:29:42.25Z","level":"INFO","msg":"replaying by replication","threads":2}
{"time":"2026-11-27T14:29:47.75Z","level":"INFO","msg":"replayed by replication","took":5500000000}
`
	pipeline := strings.ReplaceAll(strings.ReplaceAll(server, "replaying by replication", "replaying with mysqlbinlog"), "replayed by replication", "replayed with mysqlbinlog")
	want := logMarks{Range: at("2026-11-27T14:29:39Z"), ReplayStart: at("2026-11-27T14:29:42.25Z"), ReplayEnd: at("2026-11-27T14:29:47.75Z")}
	for name, log := range map[string]string{"server": server, "mysqlbinlog": pipeline} {
		t.Run(name, func(t *testing.T) {
			got, err := parseLogMarks(strings.NewReader(log))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Range.Equal(want.Range) || !got.ReplayStart.Equal(want.ReplayStart) || !got.ReplayEnd.Equal(want.ReplayEnd) || got.Nothing {
				t.Errorf("got %+v, want %+v", got, want)
			}
			if err := got.complete(); err != nil {
				t.Errorf("complete: %v", err)
			}
		})
	}
	t.Run("incomplete", func(t *testing.T) {
		for _, log := range []string{
			`{"time":"2026-11-27T14:29:39Z","msg":"replay range"}` + "\n" + `{"time":"2026-11-27T14:29:39Z","msg":"nothing to replay after the snapshot"}`,
			`{"time":"2026-11-27T14:29:39Z","msg":"replay range"}` + "\n" + `{"time":"2026-11-27T14:29:40Z","msg":"replaying by replication"}`,
			`{"time":"2026-11-27T14:29:40Z","msg":"replaying by replication"}` + "\n" + `{"time":"2026-11-27T14:29:41Z","msg":"replayed by replication"}`,
		} {
			m, err := parseLogMarks(strings.NewReader(log))
			if err != nil {
				t.Fatal(err)
			}
			if m.complete() == nil {
				t.Errorf("complete() accepted %+v from\n%s", m, log)
			}
		}
	})
}

func TestBytesAfter(t *testing.T) {
	logs := []benchkit.BinaryLog{{Name: "mysql-bin.000001", Size: 1000}, {Name: "mysql-bin.000002", Size: 5000}, {Name: "mysql-bin.000003", Size: 700}}
	tests := []struct {
		from catalog.Position
		want int64
	}{
		{catalog.Position{File: "mysql-bin.000002", Pos: 1000}, 4000 + 700},
		{catalog.Position{File: "mysql-bin.000001", Pos: 4}, 996 + 5000 + 700},
		{catalog.Position{File: "mysql-bin.000003", Pos: 700}, 0},
		{catalog.Position{File: "no-number", Pos: 4}, 0},
	}
	for _, tt := range tests {
		if got := bytesAfter(logs, tt.from); got != tt.want {
			t.Errorf("bytesAfter(%s) = %d, want %d", tt.from, got, tt.want)
		}
	}
}

func TestParseGTIDSeq(t *testing.T) {
	tests := []struct {
		list string
		want uint64
		ok   bool
	}{
		{"0-1-1234", 1234, true},
		{"0-1-1234,1-1-7", 1241, true},
		{"", 0, true},
		{"0-1", 0, false},
		{"0-1-x", 0, false},
	}
	for _, tt := range tests {
		got, err := parseGTIDSeq(tt.list)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseGTIDSeq(%q) = %d, %v; want %d, ok %v", tt.list, got, err, tt.want, tt.ok)
		}
	}
}

func TestReplayed(t *testing.T) {
	seg := func(file string, start, end uint64, stored int64) *catalog.Segment {
		n, _ := catalog.FileNumber(file)
		return &catalog.Segment{File: file, FileNum: n, Start: start, End: end, StoredSize: stored}
	}
	p := &restore.Plan{
		From: catalog.Position{File: "mysql-bin.000002", Pos: 500},
		Segments: []*catalog.Segment{
			seg("mysql-bin.000002", 4, 1000, 100), // holds the snapshot's position
			seg("mysql-bin.000002", 1000, 3000, 200),
			seg("mysql-bin.000003", 4, 804, 50),
		},
	}
	bytes, stored, segments, files := replayed(p)
	if bytes != 500+2000+800 || stored != 350 || segments != 3 || files != 2 {
		t.Errorf("replayed = %d bytes, %d stored, %d segments, %d files; want 3300, 350, 3, 2", bytes, stored, segments, files)
	}
}

func TestProcParsing(t *testing.T) {
	if got := parseComm("4242 (mariadb-binlog) S 1 4242"); got != "mariadb-binlog" {
		t.Errorf("parseComm = %q", got)
	}
	if got := parseComm("7 (a (b) c) R 1"); got != "a (b) c" {
		t.Errorf("parseComm with parentheses = %q", got)
	}
}

// TestSamplerAccounting checks how a run's CPU is split between log lines
// and programs: a process that ended before the window's end counts with
// its last reading, one that started inside it from zero.
func TestSamplerAccounting(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	s := newTreeSampler(1, time.Second)
	s.series = map[int]*procSeries{
		1: {pid: 1, comm: "mysql-pitr", samples: []procSample{{at(0), sec(0.1), 30 << 20}, {at(1), sec(0.5), 40 << 20}, {at(5), sec(0.9), 45 << 20}}},
		2: {pid: 2, comm: "mariadbd", samples: []procSample{{at(0.5), sec(1), 100 << 20}, {at(2), sec(3), 200 << 20}, {at(4), sec(6), 210 << 20}}},
		3: {pid: 3, comm: "mariadb-binlog", samples: []procSample{{at(2), sec(0.2), 5 << 20}, {at(3), sec(0.7), 6 << 20}}},
		4: {pid: 4, comm: "mariadb-install", samples: []procSample{{at(0), sec(0.3), 2 << 20}}},
	}
	got := s.cpuBetween(at(1), at(4))
	want := map[string]time.Duration{"mysql-pitr": 0, "mariadbd": sec(5), "mariadb-binlog": sec(0.7)}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("cpuBetween[%s] = %s, want %s", p, got[p], w)
		}
	}
	if _, ok := got["other"]; ok {
		t.Errorf("a process that ended before the window counted: %v", got)
	}
	rss := s.peakRSS()
	if rss["mariadbd"] != 210<<20 || rss["mysql-pitr"] != 45<<20 || rss["other"] != 2<<20 {
		t.Errorf("peakRSS = %v", rss)
	}
}

// TestDescendants starts a shell that starts a sleep and finds both below
// this process in /proc.
func TestDescendants(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), "sh", "-c", "sleep 5 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := time.Now().Add(5 * time.Second)
	var last []string
	for {
		pids := descendants(os.Getpid())
		if pids[0] == os.Getpid() && slices.Contains(pids, cmd.Process.Pid) && len(pids) >= 3 {
			s := newTreeSampler(cmd.Process.Pid, time.Second)
			s.sample(time.Now())
			var comms []string
			for _, ps := range s.series {
				comms = append(comms, ps.comm)
			}
			slices.Sort(comms)
			// Between fork and exec the child is still called sh.
			if slices.Equal(comms, []string{"sh", "sleep"}) {
				return
			}
			last = comms
		}
		if time.Now().After(deadline) {
			t.Fatalf("descendants = %v, sampled %v; want this process, the shell %d and its sleep", pids, last, cmd.Process.Pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestApplySmoke(t *testing.T) {
	var cfg config
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	cfg.register(fs)
	if err := fs.Parse([]string{"-smoke", "-runs", "2"}); err != nil {
		t.Fatal(err)
	}
	if err := applySmoke(fs); err != nil {
		t.Fatal(err)
	}
	if cfg.runs != 2 {
		t.Errorf("-runs given explicitly became %d", cfg.runs)
	}
	if cfg.tables != 4 || cfg.tableSize != 10000 || cfg.binlog != 30<<20 || cfg.bufferPool != 256<<20 {
		t.Errorf("smoke settings not applied: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("smoke settings invalid: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	run := func(mode string, total, replay float64, txns int, cpu map[string]time.Duration, err error) restoreRun {
		return restoreRun{Mode: mode, Total: time.Duration(total * 1e9), Replay: time.Duration(replay * 1e9),
			Transactions: txns, ReplayCPU: cpu, PeakRSS: map[string]int64{"mysql-pitr": int64(total) << 20}, Err: err}
	}
	runs := []restoreRun{
		run(modeServer, 10, 6, 500, map[string]time.Duration{"mariadbd": 5e9, "mysql-pitr": 1e9}, nil),
		run(modeMysqlbinlog, 30, 20, 500, nil, nil),
		run(modeServer, 14, 8, 500, map[string]time.Duration{"mariadbd": 7e9}, nil),
		run(modeServer, 12, 7, 500, map[string]time.Duration{"mariadbd": 6e9, "mysql-pitr": 3e9}, nil),
		run(modeServer, 1, 1, 1, nil, os.ErrDeadlineExceeded),
	}
	st := summarize(modeServer, runs)
	if st.OK != 3 || st.Runs != 4 {
		t.Errorf("OK %d of %d, want 3 of 4", st.OK, st.Runs)
	}
	if st.Total != 12 || st.Replay != 7 {
		t.Errorf("medians total %v replay %v, want 12 and 7", st.Total, st.Replay)
	}
	// mysql-pitr used 1, 0 (missing) and 3 s: median 1; the runs used 6, 7
	// and 9 s in all: median 7.
	if st.ReplayCPUBy["mariadbd"] != 6 || st.ReplayCPUBy["mysql-pitr"] != 1 || st.ReplayCPU != 7 {
		t.Errorf("replay CPU %v by %v, want 7 (mariadbd 6, mysql-pitr 1)", st.ReplayCPU, st.ReplayCPUBy)
	}
	if st.PeakRSS["mysql-pitr"] != 14<<20 {
		t.Errorf("peak RSS %v, want the largest run's", st.PeakRSS)
	}
	if st.transactions() != "500" {
		t.Errorf("transactions %q", st.transactions())
	}
	runs = append(runs, run(modeServer, 11, 7, 499, nil, nil))
	if got := summarize(modeServer, runs).transactions(); got != "499–500 (runs disagree)" {
		t.Errorf("disagreeing transactions shown as %q", got)
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct{ got, want string }{
		{rto(42.34), "42.3 s"},
		{rto(754.4), "754 s (12 min 34 s)"},
		{gb(11.2e6), "11.2 MB"},
		{gb(1.0737e9), "1.07 GB"},
		{plural(1, "file"), "1 file"},
		{plural(4, "file"), "4 files"},
		{cell("mariadb-binlog | mariadb"), `mariadb-binlog \| mariadb`},
		{cpuBreakdown(map[string]float64{"mysql-pitr": 0.9, "mariadbd": 80.12, "other": 0.01}), "mariadbd 80.1, mysql-pitr 0.9"},
		{rssBreakdown(map[string]int64{"mysql-pitr": 40e6, "mariadbd": 250e6, "other": 300e6}), "mariadbd 250.0 MB, mysql-pitr 40.0 MB"},
		{settingsText([]setting{{"sync_binlog", "0"}, {"innodb_buffer_pool_size", "134217728"}}), "sync_binlog=0, innodb_buffer_pool_size=128 MiB"},
		{diffChecksums(map[string]int64{"t1": 1, "t2": 5, "t9": 0}, map[string]int64{"t1": 1, "t2": 2, "t3": 3}), "t2 5, source 2; t3 missing; t9 not in the source"},
		{diffChecksums(map[string]int64{"t1": 1}, map[string]int64{"t1": 1}), ""},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
