package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// DrillPrefix is the prefix of the restore drill records:
//
//	drills/<UTC time, fixed width>.json   one record per drill, when it started
//
// Keys sort by time, so the last key is the latest drill.
const DrillPrefix = "drills/"

// drillTimeFormat is the key's time: fixed width, microseconds, UTC.
const drillTimeFormat = "20060102T150405.000000Z"

// DrillKey is the key of the record of a drill started at t.
func DrillKey(t time.Time) string {
	return DrillPrefix + t.UTC().Format(drillTimeFormat) + ".json"
}

// ParseDrillKey returns the start time a drill record's key names.
func ParseDrillKey(key string) (time.Time, error) {
	rest, ok := strings.CutPrefix(key, DrillPrefix)
	if !ok {
		return time.Time{}, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	ts, ok := strings.CutSuffix(rest, ".json")
	if !ok || len(ts) != len(drillTimeFormat) {
		return time.Time{}, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	t, err := time.Parse(drillTimeFormat, ts)
	if err != nil || t.Format(drillTimeFormat) != ts {
		return time.Time{}, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	return t, nil
}

// Drill is the record of one restore drill: a restore of the archive into
// scratch space, checked against what the archive says it holds.
type Drill struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Target is the restore target ("latest" or a time).
	Target string `json:"target"`
	// Snapshot is the snapshot restored (empty when planning failed).
	Snapshot SnapshotID `json:"snapshot,omitempty"`
	Method   string     `json:"method,omitempty"`
	// Success is set when the restore completed and every check passed;
	// otherwise Reason says what failed.
	Success bool   `json:"success"`
	Reason  string `json:"reason,omitempty"`
	// RestoreDuration is how long the restore took, from planning to the
	// restored server's shutdown: the drill's measure of recovery time.
	RestoreDuration time.Duration `json:"restore_duration_ns"`
	// RestoredBytes is the snapshot's data plus the binlog replayed, uncompressed.
	RestoredBytes int64 `json:"restored_bytes"`
	// FetchedBytes is what the restore read from storage.
	FetchedBytes int64 `json:"fetched_bytes"`
	// TablesChecked counts the tables whose rows (and digests) were compared
	// with the manifest at the snapshot's position.
	TablesChecked int `json:"tables_checked"`
	// Transactions counts the transactions replayed after the snapshot;
	// Stop is where replay stopped.
	Transactions int       `json:"transactions_replayed"`
	Stop         *Position `json:"stop,omitempty"`
	// LastGTID is the last archived transaction's GTID the drill looked for
	// after replay, and GTIDState the restored server's GTID state.
	LastGTID  string `json:"last_gtid,omitempty"`
	GTIDState string `json:"gtid_state,omitempty"`
	// Host names where the drill ran.
	Host string `json:"host,omitempty"`
}

// WriteDrill stores the record, create-only, under DrillKey(d.Started).
func WriteDrill(ctx context.Context, st storage.Storage, d *Drill) error {
	if d.Started.IsZero() {
		return errors.New("drill record: start time is zero")
	}
	return PutJSON(ctx, st, DrillKey(d.Started), d, true)
}

// maxDrillsScanned bounds how far back LastDrills reads for a success.
const maxDrillsScanned = 100

// LastDrills returns the latest drill record and the latest successful one
// (the same record when the latest succeeded). Either is nil when there is
// none; a success older than the last 100 drills is not looked for.
func LastDrills(ctx context.Context, st storage.Storage) (last, lastSuccess *Drill, err error) {
	objs, err := st.List(ctx, DrillPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", DrillPrefix, err)
	}
	var keys []string
	for _, o := range objs {
		if _, err := ParseDrillKey(o.Key); err == nil {
			keys = append(keys, o.Key)
		}
	}
	for i := len(keys) - 1; i >= 0 && i >= len(keys)-maxDrillsScanned; i-- {
		var d Drill
		if err := GetJSON(ctx, st, keys[i], &d); err != nil {
			return nil, nil, err
		}
		if last == nil {
			last = &d
		}
		if d.Success {
			return last, &d, nil
		}
	}
	return last, nil, nil
}
