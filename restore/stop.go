package restore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Stop is where replay ends and what it replays.
type Stop struct {
	// Position is the first byte not replayed: the start of the first
	// transaction after the target, or the end of the archive's last
	// complete transaction.
	Position catalog.Position
	// Transactions counts the transactions replayed after the snapshot.
	Transactions int
	// LastCommit and LastGTID describe the last transaction replayed.
	LastCommit time.Time
	LastGTID   string
	// GTIDs are the last replayed GTID of each MariaDB domain (or MySQL
	// source: a uuid, or a uuid and a tag).
	GTIDs map[string]string
	// Files are the local binlog files replay reads, in order, each with
	// the range to replay.
	Files []ReplayFile
}

// ReplayFile is one binlog file and the part of it to replay.
type ReplayFile struct {
	Name, Path string
	From, To   uint64
}

// findStop reads the fetched binlog files from the snapshot position and
// finds where the target puts the stop, never inside a transaction.
func findStop(p *Plan, files []binlog.FetchResult) (*Stop, error) {
	sf := &stopFinder{plan: p, stop: &Stop{GTIDs: map[string]string{}}}
	if len(p.Held) > 0 {
		held, err := catalog.HeldBy(p.Held...)
		if err != nil {
			return nil, fmt.Errorf("the timeline continues GTIDs %v: %w", p.Held, err)
		}
		sf.held, sf.skipping = held, true
	}
	started := false
	for _, f := range files {
		if !started && f.Name != p.From.File {
			continue
		}
		from := uint64(4)
		if !started {
			from = p.From.Pos
			started = true
		}
		rf, err := sf.scan(f, from)
		if err != nil {
			return nil, err
		}
		if sf.skipping {
			continue // the file holds only transactions replayed already
		}
		if rf.To > rf.From || len(sf.stop.Files) == 0 {
			sf.stop.Files = append(sf.stop.Files, rf)
		}
		if sf.done {
			break
		}
	}
	if !started {
		return nil, fmt.Errorf("the fetched archive does not hold %s", p.From.File)
	}
	if p.Target.Kind == AtPosition && (sf.lastEnd.File != p.Target.Position.File || sf.lastEnd.Pos != p.Target.Position.Pos) {
		return nil, fmt.Errorf("%w: position %s is not the end of a transaction in the archive; the nearest before it is %s",
			ErrRefused, p.Target.Position, sf.lastEnd)
	}
	sf.stop.Position = sf.lastEnd
	return sf.stop, nil
}

// stopFinder reads binlog files in order, counting the transactions the
// restore replays into stop, until the target.
type stopFinder struct {
	plan *Plan
	stop *Stop
	// lastEnd is the end of the last event replayed.
	lastEnd catalog.Position
	// done says the target has been reached.
	done bool
	// held, on a continuation after a failover (Plan.Held), says whether a
	// transaction is the timeline before's; skipping is set until the
	// first that is not: replay starts there.
	held     func(catalog.GTID) bool
	skipping bool
}

// scan reads one file from from, and returns the part of it to replay.
func (sf *stopFinder) scan(f binlog.FetchResult, from uint64) (ReplayFile, error) {
	rf := ReplayFile{Name: f.Name, Path: f.Path, From: from, To: from}
	fh, err := os.Open(f.Path)
	if err != nil {
		return rf, err
	}
	defer fh.Close()
	sc := binlog.NewScanner(fh, 0)
	var tr binlog.Tracker
	sf.lastEnd = catalog.Position{File: f.Name, Pos: from}
	target := sf.plan.legTarget()
	for {
		ev, pos, err := sc.Next()
		if errors.Is(err, io.EOF) {
			return rf, nil
		}
		if err != nil {
			return rf, fmt.Errorf("read %s: %w", f.Name, err)
		}
		tx, err := tr.Feed(ev, pos)
		if err != nil {
			return rf, fmt.Errorf("read %s at %d: %w", f.Name, pos, err)
		}
		if pos < from {
			continue
		}
		end := pos + uint64(len(ev))
		if open, _ := tr.Open(); !open && tx == nil {
			// An event outside any transaction (rotate, gtid list…).
			if target.Kind == AtPosition && target.Position.File == f.Name && end > target.Position.Pos {
				sf.done = true
				return rf, nil
			}
			rf.To, sf.lastEnd = end, catalog.Position{File: f.Name, Pos: end}
			if sf.skipping {
				rf.From = end
			}
			continue
		}
		if tx == nil {
			continue
		}
		if sf.skipping {
			if tx.HasGTID && sf.held(tx.GTID.Catalog()) {
				rf.From, rf.To, sf.lastEnd = tx.End, tx.End, catalog.Position{File: f.Name, Pos: tx.End}
				continue
			}
			sf.skipping = false
			rf.From = tx.Start
		}
		if sf.done, err = afterTarget(target, f.Name, tx); sf.done || err != nil {
			return rf, err
		}
		rf.To, sf.lastEnd = tx.End, catalog.Position{File: f.Name, Pos: tx.End}
		sf.stop.add(tx)
	}
}

// afterTarget reports whether the transaction tx of file comes after the
// target, and refuses a target position inside it.
func afterTarget(t Target, file string, tx *binlog.Txn) (bool, error) {
	switch t.Kind {
	case AtTime:
		return tx.CommitTime.After(t.Time), nil
	case AtPosition:
		if t.Position.File == file && tx.End > t.Position.Pos {
			if tx.Start < t.Position.Pos {
				return false, fmt.Errorf("%w: position %s is inside a transaction (%s:%d to %d); stop at %d or %d",
					ErrRefused, t.Position, file, tx.Start, tx.End, tx.Start, tx.End)
			}
			return true, nil
		}
	}
	return false, nil
}

// combined is the stops of a replay across timelines (see Plan.Then) as
// one: what they all replayed, and where the last one stopped.
func combined(stops []*Stop) *Stop {
	if len(stops) == 1 {
		return stops[0]
	}
	c := &Stop{GTIDs: map[string]string{}}
	for _, s := range stops {
		c.Transactions += s.Transactions
		for k, v := range s.GTIDs {
			c.GTIDs[k] = v
		}
		if s.Transactions > 0 {
			c.LastCommit, c.LastGTID = s.LastCommit, s.LastGTID
		}
		c.Position = s.Position
		c.Files = append(c.Files, s.Files...)
	}
	return c
}

// add counts a replayed transaction.
func (s *Stop) add(tx *binlog.Txn) {
	s.Transactions++
	s.LastCommit = tx.CommitTime
	if tx.HasGTID {
		s.LastGTID = tx.GTID.String()
		s.GTIDs[gtidDomain(tx.GTID)] = s.LastGTID
	}
}

// gtidDomain names the sequence a GTID belongs to: a MariaDB domain, or a
// MySQL source (its uuid, and its tag: each tag numbers its own).
func gtidDomain(g binlog.GTID) string {
	if g.MySQL {
		return g.Catalog().Source()
	}
	return fmt.Sprint(g.Domain)
}

// mergeGTIDs returns a MariaDB GTID position: the snapshot's, with each
// domain the replay advanced replaced by its last GTID.
func mergeGTIDs(snapshot string, replayed map[string]string) string {
	byDomain := map[string]string{}
	for _, g := range strings.Split(snapshot, ",") {
		g = strings.TrimSpace(g)
		if d, _, ok := strings.Cut(g, "-"); ok {
			byDomain[d] = g
		}
	}
	for d, g := range replayed {
		byDomain[d] = g
	}
	out := make([]string, 0, len(byDomain))
	for _, g := range byDomain {
		out = append(out, g)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
