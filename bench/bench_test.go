package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

func TestFlags(t *testing.T) {
	for name, newScenario := range scenarios {
		t.Run(name, func(t *testing.T) {
			sc := newScenario()
			fs := flag.NewFlagSet(name, flag.ContinueOnError)
			c := sc.flags(fs)
			if err := fs.Parse([]string{"-smoke", "-runs", "2", "-server", "mysql-9.7"}); err != nil {
				t.Fatal(err)
			}
			if err := applySmoke(fs, sc.smoke()); err != nil {
				t.Fatal(err)
			}
			if err := c.validate(); err != nil || sc.validate() != nil {
				t.Fatalf("smoke settings invalid: %v, %v", err, sc.validate())
			}
			if c.runs != 2 || !c.flavor.MySQL() || c.tableSize >= 100000 {
				t.Errorf("-runs given explicitly became %d, flavor %s, smoke table size %d", c.runs, c.flavor, c.tableSize)
			}
			c.server = "postgres"
			if c.validate() == nil {
				t.Error("an unknown -server is valid")
			}
		})
	}
}

func TestParseSummary(t *testing.T) {
	tests := []struct {
		name, stdout string
		txns         int
		replay       time.Duration
		ok           bool
	}{
		{"minutes", "target: latest\nrestored /d to latest: snapshot 20261127T142926Z-aa60 + 150123 transactions, last committed 2026-11-27T14:29:32Z, stopped at mysql-bin.000005:47733380, in 2m3.5s (replay 1m50.25s)\n",
			150123, 110250 * time.Millisecond, true},
		{"nothing replayed", "restored /d to latest: snapshot X + 0 transactions, last committed -, stopped at binlog.000001:4, in 812ms (replay 0s)\n", 0, 0, true},
		{"no replay", "restored /d to latest: snapshot X + 5 transactions, last committed -, stopped at f.000001:4, in 1s\n", 0, 0, false},
		{"bad duration", "restored /d to latest: snapshot X + 5 transactions, last committed -, stopped at f.000001:4, in 1s (replay 1x)\n", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txns, replay, err := parseSummary(tt.stdout)
			if (err == nil) != tt.ok || txns != tt.txns || replay != tt.replay {
				t.Errorf("got %d, %s, %v; want %d, %s, ok %v", txns, replay, err, tt.txns, tt.replay, tt.ok)
			}
		})
	}
}

func TestParseLogMarks(t *testing.T) {
	server := `{"time":"2026-11-27T14:29:39.0Z","level":"INFO","msg":"replay range","transactions":3}
mariadb-install-db: a line that is not JSON
{"time":"2026-11-27T14:29:42.25Z","level":"INFO","msg":"replaying by replication","threads":2}
{"time":"2026-11-27T14:29:47.75Z","level":"INFO","msg":"replayed by replication"}
`
	pipeline := strings.ReplaceAll(strings.ReplaceAll(server, "replaying by replication", "replaying with mysqlbinlog"), "replayed by replication", "replayed with mysqlbinlog")
	for name, log := range map[string]string{"server": server, "mysqlbinlog": pipeline} {
		m, err := parseLogMarks(strings.NewReader(log))
		if err != nil || m.start.Sub(m.rng) != 3250*time.Millisecond || m.end.Sub(m.start) != 5500*time.Millisecond {
			t.Errorf("%s: got %+v, %v", name, m, err)
		}
	}
	for _, log := range []string{
		`{"time":"2026-11-27T14:29:39Z","msg":"replay range"}` + "\n" + `{"time":"2026-11-27T14:29:39Z","msg":"nothing to replay after the snapshot"}`,
		`{"time":"2026-11-27T14:29:39Z","msg":"replay range"}` + "\n" + `{"time":"2026-11-27T14:29:40Z","msg":"replaying by replication"}`,
	} {
		if _, err := parseLogMarks(strings.NewReader(log)); err == nil {
			t.Errorf("no error for\n%s", log)
		}
	}
}

func TestReplayed(t *testing.T) {
	seg := func(file string, start, end uint64, stored int64) *catalog.Segment {
		n, _ := catalog.FileNumber(file)
		return &catalog.Segment{File: file, FileNum: n, Start: start, End: end, StoredSize: stored}
	}
	p := &restore.Plan{From: catalog.Position{File: "mysql-bin.000002", Pos: 500}, Segments: []*catalog.Segment{
		seg("mysql-bin.000002", 4, 1000, 100), // holds the snapshot's position
		seg("mysql-bin.000002", 1000, 3000, 200),
		seg("mysql-bin.000003", 4, 804, 50),
	}}
	if got, want := replayedBy(p), (replayed{bytes: 500 + 2000 + 800, stored: 350, files: 2}); got != want {
		t.Errorf("replayedBy = %+v, want %+v", got, want)
	}
}

func TestRestoreSummary(t *testing.T) {
	r := &restoreBench{details: map[int]*replayRun{}}
	add := func(order int, mode string, total, replay float64, txns int, cpu map[string]time.Duration, err error) kit.Run {
		r.details[order] = &replayRun{replay: time.Duration(replay * 1e9), transactions: txns, replayCPU: cpu,
			peakRSS: map[string]int64{"mysql-pitr": int64(total) << 20}}
		return kit.Run{Tool: mode, Order: order, Time: time.Duration(total * 1e9), Err: err}
	}
	runs := []kit.Run{
		add(1, modeServer, 10, 6, 500, map[string]time.Duration{"mariadbd": 5e9, "mysql-pitr": 1e9}, nil),
		add(2, modeMysqlbinlog, 30, 20, 500, nil, nil),
		add(3, modeServer, 14, 8, 500, map[string]time.Duration{"mariadbd": 7e9}, nil),
		add(4, modeServer, 12, 7, 500, map[string]time.Duration{"mariadbd": 6e9, "mysql-pitr": 3e9}, nil),
		add(5, modeServer, 1, 1, 1, nil, os.ErrDeadlineExceeded),
	}
	st := r.summarize(modeServer, runs)
	// mysql-pitr used 1, 0 (missing) and 3 s: median 1; the runs used 6, 7
	// and 9 s in all: median 7.
	if st.ok != 3 || st.total != 12 || st.replay != 7 || st.replayCPU != 7 || st.cpuBy["mariadbd"] != 6e9 || st.cpuBy["mysql-pitr"] != 1e9 ||
		st.rss["mysql-pitr"] != 14<<20 || st.transactions() != "500" {
		t.Errorf("summarize = %+v", st)
	}
	runs = append(runs, add(6, modeServer, 11, 7, 499, nil, nil))
	if got := r.summarize(modeServer, runs).transactions(); got != "499–500 (runs disagree)" {
		t.Errorf("disagreeing transactions shown as %q", got)
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct{ got, want string }{
		{rto(42.34), "42.3 s"},
		{rto(754.4), "754 s (12 min 34 s)"},
		{breakdown(map[string]time.Duration{"mysql-pitr": 9e8, "mysqld": 80.12e9, "other": 1e9, "mysql": 1e7}), "mysqld 80.1, mysql-pitr 0.9"},
		{breakdown(map[string]int64{"mysql-pitr": 40e6, "mariadbd": 250e6, "other": 300e6}), "mariadbd 250.0 MB, mysql-pitr 40.0 MB"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestClonePhases(t *testing.T) {
	log := filepath.Join(t.TempDir(), "mysql-pitr.log")
	lines := `{"time":"2026-11-27T14:00:01Z","msg":"cloning"}
{"time":"2026-11-27T14:00:03.5Z","msg":"cloned"}
{"time":"2026-11-27T14:00:05Z","msg":"the clone is consistent with"}
{"time":"2026-11-27T14:00:09Z","msg":"stored the clone"}
`
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := clonePhases(log, 10*time.Second), "clone 2.50 s, finish 1.50 s, store 4.00 s, the rest 2.00 s"; got != want {
		t.Errorf("clonePhases = %q, want %q", got, want)
	}
}

func TestFellBack(t *testing.T) {
	on := binlog.SemiSyncState{Available: true, Enabled: true, On: true, Clients: 1, WaitPoint: "AFTER_SYNC"}
	state := func(st binlog.SemiSyncState, yes int64, txns uint64) semiState {
		return semiState{SemiSyncState: st, yes: yes, txns: txns}
	}
	before := state(on, 100, 1000)
	with := func(f func(*binlog.SemiSyncState)) binlog.SemiSyncState { st := on; f(&st); return st }
	tests := []struct {
		name  string
		async bool
		after semiState
		valid bool
	}{
		{"every commit waited", false, state(on, 600, 1500), true},
		// MySQL waits once for a group commit.
		{"group commits", false, state(on, 300, 1500), true},
		{"fell back", false, state(with(func(s *binlog.SemiSyncState) { s.OffTimes = 1 }), 400, 1500), false},
		{"a commit not acknowledged", false, state(with(func(s *binlog.SemiSyncState) { s.NoTx = 1 }), 599, 1500), false},
		{"off at the end", false, state(with(func(s *binlog.SemiSyncState) { s.On = false }), 600, 1500), false},
		{"after commit", false, state(with(func(s *binlog.SemiSyncState) { s.WaitPoint = "AFTER_COMMIT" }), 600, 1500), false},
		{"no commit waited", false, state(on, 100, 1500), false},
		{"async", true, state(binlog.SemiSyncState{Available: true}, 100, 1500), true},
		{"async with semi-sync on", true, state(on, 100, 1500), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fellBack(tt.async, before, tt.after); (got == "") != tt.valid {
				t.Errorf("fellBack = %q, want valid %v", got, tt.valid)
			}
		})
	}
}

func TestAckFlags(t *testing.T) {
	parse := func(args ...string) (*ackBench, error) {
		a := &ackBench{}
		fs := flag.NewFlagSet("ack", flag.ContinueOnError)
		a.flags(fs)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return a, a.validate()
	}
	a, err := parse("-configs", "spool, async", "-load-threads", "8,2")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.cfgs, []string{cfgAsync, cfgSpool}; !slices.Equal(got, want) {
		t.Errorf("configurations %q, want %q (the rounds' order)", got, want)
	}
	if got, want := a.loads, []int{8, 2}; !slices.Equal(got, want) {
		t.Errorf("loads %v, want %v", got, want)
	}
	if a, _ := parse(); len(a.cfgs) != len(ackConfigs) {
		t.Errorf("by default %q, want every configuration", a.cfgs)
	}
	for _, bad := range [][]string{{"-configs", "spool,semi"}, {"-load-threads", "4,0"}, {"-duration", "10ms"}} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%q is valid", bad)
		}
	}
}
