package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

// restoreProgress shows a restore's phases: on a terminal one line per
// phase, redrawn with a bar, rate and ETA; otherwise a log line every 10 s
// and one when a phase ends.
type restoreProgress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	logger interface{ Info(string, ...any) }
	now    func() time.Time

	phase      string
	start      time.Time
	drawn      time.Time
	logged     time.Time
	last       restore.Progress
	lineActive bool
}

func newRestoreProgress(w io.Writer, logger interface{ Info(string, ...any) }) *restoreProgress {
	return &restoreProgress{w: w, tty: cli.IsTerminal(w), logger: logger, now: time.Now}
}

// update takes one report; it is restore.Options.Progress.
func (p *restoreProgress) update(r restore.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if r.Phase != p.phase {
		p.endPhase()
		p.phase, p.start, p.drawn, p.logged = r.Phase, now, time.Time{}, now
	}
	p.last = r
	finished := r.Total > 0 && r.Done >= r.Total
	if p.tty {
		if finished || now.Sub(p.drawn) >= 100*time.Millisecond {
			fmt.Fprintf(p.w, "\r%s", progressLine(r, now.Sub(p.start)))
			p.drawn, p.lineActive = now, true
		}
		return
	}
	if now.Sub(p.logged) >= 10*time.Second {
		p.logged = now
		p.log("restore progress", now)
	}
}

// done ends the last phase's line or log.
func (p *restoreProgress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endPhase()
	p.phase = ""
}

func (p *restoreProgress) endPhase() {
	if p.phase == "" {
		return
	}
	if p.tty {
		if p.lineActive {
			fmt.Fprintf(p.w, "\r%s\n", progressLine(p.last, p.now().Sub(p.start)))
			p.lineActive = false
		}
		return
	}
	p.log("restore phase done", p.now())
}

func (p *restoreProgress) log(msg string, now time.Time) {
	r := p.last
	args := []any{"phase", r.Phase, "bytes", r.Done, "elapsed", now.Sub(p.start).Round(time.Second).String()}
	if r.Total > 0 {
		args = append(args, "total_bytes", r.Total, "percent", fmt.Sprintf("%.1f", 100*float64(r.Done)/float64(r.Total)))
	}
	p.logger.Info(msg, args...)
}

// progressLine renders one phase: name, bar, bytes, rate and ETA.
func progressLine(r restore.Progress, elapsed time.Duration) string {
	const width = 24
	mib := func(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(r.Done) / s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s ", r.Phase)
	if r.Total <= 0 {
		fmt.Fprintf(&b, "%s MiB  %.1f MiB/s  %s", mib(r.Done), rate/(1<<20), elapsed.Round(time.Second))
		return b.String() + "   "
	}
	frac := min(float64(r.Done)/float64(r.Total), 1)
	fill := int(frac * width)
	fmt.Fprintf(&b, "[%s%s] %3.0f%% %s/%s MiB  %.1f MiB/s", strings.Repeat("#", fill), strings.Repeat("-", width-fill),
		100*frac, mib(r.Done), mib(r.Total), rate/(1<<20))
	switch {
	case r.Done >= r.Total:
		fmt.Fprintf(&b, "  done in %s", elapsed.Round(100*time.Millisecond))
	case rate > 0:
		eta := time.Duration(float64(r.Total-r.Done) / rate * float64(time.Second))
		fmt.Fprintf(&b, "  ETA %s", eta.Round(time.Second))
	}
	return b.String() + "   "
}
