package binlog

import (
	"context"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// lagLoop measures how far the durable archive trails the server's binlog
// every LagPoll (see measureLag).
func (s *Streamer) lagLoop(ctx context.Context) {
	t := time.NewTicker(s.LagPoll)
	defer t.Stop()
	var st lagState
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.measureLag(ctx, &st)
	}
}

// lagState is what lagLoop carries from one measurement to the next.
type lagState struct {
	samples  []lagSample // the server's binlog end at earlier polls, not yet durable
	lastMark time.Time   // when the archive was last recorded complete
}

// lagSample is where the server's binlog ended at a moment.
type lagSample struct {
	at       time.Time
	num, pos uint64
}

// durableAt reports whether the durable position dur, in file number
// durNum, has reached the sample.
func (sm lagSample) durableAt(dur catalog.Position, durNum uint64) bool {
	return dur.File != "" && (durNum > sm.num || (durNum == sm.num && dur.Pos >= sm.pos))
}

// measureLag measures how far the durable archive trails the server's
// binlog: in bytes, and in seconds as the age of the oldest server
// position that is not yet durable (to the poll interval's resolution).
// When nothing trails, it records every CompleteInterval how far the
// archive is complete.
func (s *Streamer) measureLag(ctx context.Context, st *lagState) {
	// The server's clock is read before its binlog's end: everything
	// committed by then lies before that end.
	var serverNow time.Time
	wantMark := s.CompleteInterval > 0 && time.Since(st.lastMark) >= s.CompleteInterval
	if wantMark {
		var err error
		if serverNow, err = s.src().Now(ctx); err != nil {
			wantMark = false
		}
	}
	logs, err := s.src().BinaryLogs(ctx)
	if err != nil || len(logs) == 0 {
		return
	}
	now := time.Now()
	durTL, dur, _ := s.up.Durable()
	durNum, _ := catalog.FileNumber(dur.File)
	lag := bytesAfter(logs, dur)
	endLog := logs[len(logs)-1]
	endNum, _ := catalog.FileNumber(endLog.Name)
	end := lagSample{at: now, num: endNum, pos: endLog.Size}
	st.samples = append(st.samples, end)
	// Drop samples the archive has reached; the oldest left is the lag's start.
	i := 0
	for i < len(st.samples) && st.samples[i].durableAt(dur, durNum) {
		i++
	}
	st.samples = st.samples[i:]
	var lagSec float64
	if lag > 0 && len(st.samples) > 0 {
		lagSec = now.Sub(st.samples[0].at).Seconds()
	}
	if lag == 0 {
		st.samples = st.samples[:0]
		if wantMark && dur.File != "" && durTL == s.currentTimeline() && end.durableAt(dur, durNum) {
			if s.markComplete(ctx, catalog.Position{File: endLog.Name, Pos: endLog.Size}, serverNow) {
				st.lastMark = time.Now()
			}
		}
	}
	s.mu.Lock()
	s.lagBytes, s.lagSeconds = int64(lag), lagSec
	s.mu.Unlock()
	if s.Metrics != nil {
		s.Metrics.LagBytes.Set(float64(lag))
		s.Metrics.LagSeconds.Set(lagSec)
	}
}

// bytesAfter counts the bytes of the server's binlogs logs after the
// position dur (all of them when dur is no position).
func bytesAfter(logs []BinaryLog, dur catalog.Position) uint64 {
	var lag uint64
	found := dur.File == ""
	for _, l := range logs {
		switch {
		case l.Name == dur.File:
			found = true
			if l.Size > dur.Pos {
				lag += l.Size - dur.Pos
			}
		case found:
			lag += l.Size
		}
	}
	return lag
}

// markComplete records that the archive holds the server's whole binlog,
// up to end, as of the server time serverNow. It reports whether that was
// recorded.
func (s *Streamer) markComplete(ctx context.Context, end catalog.Position, serverNow time.Time) bool {
	if err := s.up.PutComplete(ctx, end, serverNow); err != nil {
		if ctx.Err() == nil {
			s.Logger.Warn("record how far the archive is complete", "err", err)
		}
		return false
	}
	s.mu.Lock()
	s.completeAt = serverNow
	s.mu.Unlock()
	if s.Metrics != nil {
		s.Metrics.CompleteAt.Set(float64(serverNow.UnixMicro()) / 1e6)
	}
	return true
}
