package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// completeStem names the record of how far a timeline is known complete:
//
//	binlog/<timeline>/complete.g<gen>.json
//
// Each writer generation keeps its own, rewritten while the server is quiet.
const completeStem = "complete"

// Complete is a writer's record that the archive of a timeline is complete
// up to a moment: at the server's time At, the server's binlog ended at or
// before Through, and the archive held every byte up to Through. Any moment
// up to At can then be restored, even when the last commit is older: the
// server wrote nothing in between.
type Complete struct {
	Timeline TimelineID `json:"timeline"`
	Gen      Generation `json:"gen"`
	// Through is the server's binlog position the archive had reached.
	Through Position `json:"through"`
	FileNum uint64   `json:"file_num"`
	// At is the server's clock (UTC), read before the position was.
	At time.Time `json:"at"`
	// Written is when the writer stored the record, by its own clock.
	Written time.Time `json:"written"`
}

// Pos is where the record reaches in the archive.
func (c *Complete) Pos() ArchivePos {
	return ArchivePos{Timeline: c.Timeline, FileNum: c.FileNum, Pos: c.Through.Pos}
}

// CompleteKey is the key of generation gen's completeness record for tl.
func CompleteKey(tl TimelineID, gen Generation) string {
	return TimelinePrefix(tl) + completeStem + genSuffix(gen) + segmentRecord
}

// ParseCompleteKey parses a completeness record key.
func ParseCompleteKey(key string) (TimelineID, Generation, error) {
	return parseTimelineFile(key, completeStem)
}

// loadComplete reads the timeline's completeness records and keeps the
// latest one that is not superseded and that the archive reaches. It
// returns the keys of the superseded ones.
func (t *TimelineState) loadComplete(ctx context.Context, st storage.Storage, gens Generations, have []Generation,
	issue func(tl TimelineID, key string, kind IssueKind, format string, args ...any)) (stale []string, err error) {
	end, _ := t.End()
	endNum, _ := FileNumber(end.File)
	for _, g := range have {
		key := CompleteKey(t.ID, g)
		var c Complete
		err := GetJSON(ctx, st, key, &c)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			issue(t.ID, key, kindOf(err), "%v", err)
			continue
		}
		if n, ferr := FileNumber(c.Through.File); c.Timeline != t.ID || c.Gen != g || ferr != nil || n != c.FileNum {
			issue(t.ID, key, IssueBadRecord, "completeness record %s contradicts its key or its position %s", key, c.Through)
			continue
		}
		if _, _, sup := gens.Superseded(g, c.Pos()); sup {
			stale = append(stale, key)
			continue
		}
		if len(t.Segments) == 0 || c.FileNum > endNum || (c.FileNum == endNum && c.Through.Pos > end.Pos) {
			continue // the archive does not reach it (yet)
		}
		if t.Complete == nil || c.At.After(t.Complete.At) {
			cc := c
			t.Complete = &cc
		}
	}
	return stale, nil
}

// PutComplete stores a completeness record, replacing the generation's
// previous one.
func PutComplete(ctx context.Context, st storage.Storage, c *Complete) error {
	if c.Gen == 0 {
		return fmt.Errorf("completeness record of timeline %d: no writer generation", uint32(c.Timeline))
	}
	return PutJSON(ctx, st, CompleteKey(c.Timeline, c.Gen), c, false)
}
