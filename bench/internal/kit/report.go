package kit

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Run is one timed run of one tool.
type Run struct {
	Tool       string
	Run, Order int // per tool, and in the alternating sequence; 1-based
	Time       time.Duration
	Usage      Usage
	ServerCPU  time.Duration // of the server the tool read from or wrote to
	Load       Load
	Bytes      int64  // what the run processed: its MB/s is of these
	Stored     int64  // what it left in storage; 0 when not measured
	Note       string // anything else for its line
	Err        error
}

func (r Run) String() string {
	label := fmt.Sprintf("run %d.%d %-22s", r.Order, r.Run, r.Tool)
	if r.Err != nil {
		return fmt.Sprintf("%s FAILED after %.1f s: %v", label, r.Time.Seconds(), r.Err)
	}
	s := fmt.Sprintf("%s %7.2f s %7.1f MB/s  cpu %6.2f s (%4.0f MB/cpu-s)  peak rss %8s  server cpu %6.2f s  %s",
		label, r.Time.Seconds(), MBps(r.Bytes, r.Time), r.Usage.CPU.Seconds(), MBps(r.Bytes, r.Usage.CPU),
		MB(r.Usage.PeakRSS), r.ServerCPU.Seconds(), r.Load)
	if r.Stored > 0 {
		s += "  stored " + MB(r.Stored)
	}
	if r.Note != "" {
		s += "  " + r.Note
	}
	return s
}

// Alternate runs each tool once per round, for rounds rounds, printing
// each run's line, and returns the runs in order. It stops early when ctx
// ends.
func Alternate(ctx context.Context, rounds int, tools []string, run func(order int, tool string) Run) ([]Run, error) {
	var out []Run
	for i := 1; i <= rounds; i++ {
		for _, t := range tools {
			r := run(len(out)+1, t)
			r.Tool, r.Run, r.Order = t, i, len(out)+1
			fmt.Println("  " + r.String())
			out = append(out, r)
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
		}
	}
	return out, nil
}

// Stats are the medians over one tool's successful runs.
type Stats struct {
	Tool                                      string
	OK, Runs                                  int
	Seconds, MBps, CPU, Bytes, Stored, Others float64
	PeakRSS                                   float64 // the largest
}

// Summarize computes a tool's Stats.
func Summarize(runs []Run, tool string) Stats {
	st := Stats{Tool: tool}
	var secs, rate, cpu, bytes, stored, others []float64
	for _, r := range runs {
		if r.Tool != tool {
			continue
		}
		st.Runs++
		if r.Err != nil {
			continue
		}
		st.OK++
		secs = append(secs, r.Time.Seconds())
		rate = append(rate, MBps(r.Bytes, r.Time))
		cpu = append(cpu, r.Usage.CPU.Seconds())
		bytes = append(bytes, float64(r.Bytes))
		stored = append(stored, float64(r.Stored))
		others = append(others, r.Load.Others)
		st.PeakRSS = max(st.PeakRSS, float64(r.Usage.PeakRSS))
	}
	st.Seconds, st.MBps, st.CPU, st.Bytes = Median(secs), Median(rate), Median(cpu), Median(bytes)
	st.Stored, st.Others = Median(stored), Median(others)
	return st
}

// SummarizeAll is Summarize for each tool, printing a median line each.
func SummarizeAll(runs []Run, tools []string) map[string]Stats {
	out := map[string]Stats{}
	for _, t := range tools {
		out[t] = Summarize(runs, t)
		fmt.Printf("  median %s\n", out[t])
	}
	return out
}

// MBperCPU is the MB processed per CPU-second: a tool's efficiency, which
// a busy machine disturbs far less than its throughput.
func (st Stats) MBperCPU() float64 { return st.Bytes / 1e6 / st.CPU }

func (st Stats) String() string {
	stored := ""
	if st.Stored > 0 {
		stored = "  stored " + MB(st.Stored)
	}
	return fmt.Sprintf("%-22s %7.2f s %7.1f MB/s  cpu %6.2f s (%4.0f MB/cpu-s)  peak rss %8s%s  others %.0f%%  (%d of %d runs ok)",
		st.Tool, st.Seconds, st.MBps, st.CPU, st.MBperCPU(), MB(st.PeakRSS), stored, st.Others*100, st.OK, st.Runs)
}

// Result is the Markdown result cell of a tool's medians.
func (st Stats) Result() string {
	if st.OK == 0 {
		return "every run failed"
	}
	s := fmt.Sprintf("%.1f MB/s (%.2f s; CPU %.2f s = %.0f MB/CPU-s; peak RSS %s", st.MBps, st.Seconds, st.CPU, st.MBperCPU(), MB(st.PeakRSS))
	if st.Stored > 0 {
		s += "; stored " + MB(st.Stored)
	}
	return s + fmt.Sprintf("; others used %.0f%% of the machine)", st.Others*100)
}

// Report collects a benchmark's results: lines that say what was measured
// and how, then the table of measures, results and goals.
type Report struct {
	lines []string
	rows  []string
}

// Line adds a line above the table.
func (r *Report) Line(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

// Row adds a measure without a goal.
func (r *Report) Row(measure, format string, args ...any) {
	r.rows = append(r.rows, fmt.Sprintf("| %s | %s | | |", Cell(measure), Cell(fmt.Sprintf(format, args...))))
}

// Goal adds a measure held to a goal.
func (r *Report) Goal(measure, result, goal string, met bool) {
	m := "yes"
	if !met {
		m = "**no**"
	}
	r.rows = append(r.rows, fmt.Sprintf("| %s | %s | %s | %s |", Cell(measure), Cell(result), goal, m))
}

// Ratio adds a ratio held to a lower bound (atLeast) or an upper one; a
// ratio that could not be computed fails its goal.
func (r *Report) Ratio(measure string, v, goal float64, atLeast bool) {
	g, met := fmt.Sprintf("≤ %.2f", goal), v <= goal
	if atLeast {
		g, met = fmt.Sprintf("≥ %.1f", goal), v >= goal
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.Goal(measure, "n/a", g, false)
		return
	}
	r.Goal(measure, fmt.Sprintf("%.2f", v), g, met)
}

// Markdown is the report for bench/README.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	for _, l := range r.lines {
		b.WriteString(l + "  \n")
	}
	b.WriteString("\n| Measure | Result | Goal | Met |\n|---|---|---|---|\n")
	for _, row := range r.rows {
		b.WriteString(row + "\n")
	}
	return b.String()
}
