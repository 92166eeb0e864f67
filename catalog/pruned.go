package catalog

import (
	"fmt"
	"strings"
	"time"
)

// prunedFile records, per timeline, where retention cut the archive's head:
//
//	binlog/<timeline>/pruned.json   the first position still archived after a prune
//
// It is written before the segments it accounts for are deleted, so a
// timeline whose head was pruned (or is being pruned) is not mistaken for a
// damaged one.
const prunedFile = "pruned.json"

// Pruned is the record of a prune of a timeline's head: every segment
// before Start was deleted on purpose, because no kept snapshot needs it.
type Pruned struct {
	Timeline TimelineID `json:"timeline"`
	// Start is where the timeline's archive now begins.
	Start Position `json:"start"`
	// Snapshot is the oldest kept snapshot, whose position justified the prune.
	Snapshot SnapshotID `json:"snapshot,omitempty"`
	At       time.Time  `json:"at"`
}

// PrunedKey is the key of a timeline's prune record.
func PrunedKey(tl TimelineID) string { return TimelinePrefix(tl) + prunedFile }

// ParsePrunedKey parses a prune record key.
func ParsePrunedKey(key string) (TimelineID, error) {
	rest, ok := strings.CutPrefix(key, BinlogPrefix)
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	id, name, ok := strings.Cut(rest, "/")
	if !ok || name != prunedFile || len(id) != 6 || !allDigits(id) {
		return 0, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	return ParseTimelineID(id)
}

// ComparePositions orders two positions of one server's binlog: by the
// file's number, then the offset. It returns -1, 0 or +1.
func ComparePositions(a, b Position) int {
	an, _ := FileNumber(a.File)
	bn, _ := FileNumber(b.File)
	switch {
	case an < bn:
		return -1
	case an > bn:
		return 1
	case a.Pos < b.Pos:
		return -1
	case a.Pos > b.Pos:
		return 1
	}
	return 0
}
