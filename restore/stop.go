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
	st := &Stop{GTIDs: map[string]string{}}
	started := false
	var lastEnd catalog.Position
	for _, f := range files {
		if !started && f.Name != p.From.File {
			continue
		}
		fh, err := os.Open(f.Path)
		if err != nil {
			return nil, err
		}
		sc := binlog.NewScanner(fh, 0)
		var tr binlog.Tracker
		from := uint64(4)
		if !started {
			from = p.From.Pos
			started = true
		}
		rf := ReplayFile{Name: f.Name, Path: f.Path, From: from, To: from}
		lastEnd = catalog.Position{File: f.Name, Pos: from}
		done := false
		for !done {
			ev, pos, err := sc.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fh.Close()
				return nil, fmt.Errorf("read %s: %w", f.Name, err)
			}
			tx, err := tr.Feed(ev, pos)
			if err != nil {
				fh.Close()
				return nil, fmt.Errorf("read %s at %d: %w", f.Name, pos, err)
			}
			if pos < from {
				continue
			}
			end := pos + uint64(len(ev))
			if open, _ := tr.Open(); !open && tx == nil {
				// An event outside any transaction (rotate, gtid list…).
				if p.Target.Kind == AtPosition && p.Target.Position.File == f.Name && end > p.Target.Position.Pos {
					done = true
					break
				}
				rf.To, lastEnd = end, catalog.Position{File: f.Name, Pos: end}
				continue
			}
			if tx == nil {
				continue
			}
			switch p.Target.Kind {
			case AtTime:
				if tx.CommitTime.After(p.Target.Time) {
					done = true
				}
			case AtPosition:
				if p.Target.Position.File == f.Name && tx.End > p.Target.Position.Pos {
					if tx.Start < p.Target.Position.Pos {
						fh.Close()
						return nil, fmt.Errorf("%w: position %s is inside a transaction (%s:%d to %d); stop at %d or %d",
							ErrRefused, p.Target.Position, f.Name, tx.Start, tx.End, tx.Start, tx.End)
					}
					done = true
				}
			}
			if done {
				break
			}
			rf.To, lastEnd = tx.End, catalog.Position{File: f.Name, Pos: tx.End}
			st.Transactions++
			st.LastCommit = tx.CommitTime
			if tx.HasGTID {
				st.LastGTID = tx.GTID.String()
				st.GTIDs[gtidDomain(tx.GTID)] = st.LastGTID
			}
		}
		fh.Close()
		if rf.To > rf.From || len(st.Files) == 0 {
			st.Files = append(st.Files, rf)
		}
		if done {
			break
		}
	}
	if !started {
		return nil, fmt.Errorf("the fetched archive does not hold %s", p.From.File)
	}
	if p.Target.Kind == AtPosition && (lastEnd.File != p.Target.Position.File || lastEnd.Pos != p.Target.Position.Pos) {
		return nil, fmt.Errorf("%w: position %s is not the end of a transaction in the archive; the nearest before it is %s",
			ErrRefused, p.Target.Position, lastEnd)
	}
	st.Position = lastEnd
	return st, nil
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
