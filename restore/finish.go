package restore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// MarkerFile is written into a restored datadir: which restore produced it.
// The agent reads it to start a new timeline for the restored server.
const MarkerFile = "mysql-pitr-restore.json"

// Marker is the content of MarkerFile.
type Marker struct {
	ID       string             `json:"id"`
	Target   string             `json:"target"`
	Snapshot catalog.SnapshotID `json:"snapshot"`
	Timeline catalog.TimelineID `json:"timeline"`
	// Stop is the first binlog byte of the source not replayed.
	Stop         catalog.Position `json:"stop"`
	Transactions int              `json:"transactions_replayed"`
	LastCommit   time.Time        `json:"last_commit,omitzero"`
	GTIDState    string           `json:"gtid_state,omitempty"`
	Finished     time.Time        `json:"finished"`
}

// marker describes the finished restore, which replayed to stop and left
// the server with GTID state gtid.
func (r *run) marker(stop *Stop, gtid string) Marker {
	var id [6]byte
	_, _ = rand.Read(id[:])
	p, last := r.plan, r.plan
	for last.Then != nil {
		last = last.Then // the stop is on the last timeline replayed
	}
	return Marker{ID: hex.EncodeToString(id[:]), Target: p.Target.String(), Snapshot: p.Snapshot.ID, Timeline: last.Timeline,
		Stop: stop.Position, Transactions: stop.Transactions, LastCommit: stop.LastCommit, GTIDState: gtid, Finished: time.Now().UTC()}
}

// writeMarker records the restore in the datadir it built.
func writeMarker(datadir string, m Marker) error {
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(datadir, MarkerFile), append(b, '\n'), 0o640); err != nil {
		return fmt.Errorf("write restore marker: %w", err)
	}
	return nil
}

// setGTIDState records in the restored server where it stands in the
// source's history, and returns its GTID state: on MariaDB gtid_slave_pos
// becomes the snapshot's position advanced by the replay; on MySQL the
// snapshot's GTID set is added to gtid_purged (the replay's own GTIDs the
// server recorded as it applied them), and the state is gtid_executed.
func (r *run) setGTIDState(ctx context.Context, db *sql.DB, stop *Stop) (string, error) {
	p := r.plan
	if r.flavor == mysqld.MariaDB {
		gtid := mergeGTIDs(p.Snapshot.GTIDSet, stop.GTIDs)
		if gtid != "" {
			if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_slave_pos = ?", gtid); err != nil {
				return "", fmt.Errorf("set gtid_slave_pos: %w", err)
			}
		}
		return gtid, nil
	}
	if p.Snapshot.Method == catalog.MethodLogical && p.Snapshot.GTIDSet != "" {
		if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_purged = CONCAT('+', ?)", p.Snapshot.GTIDSet); err != nil {
			return "", fmt.Errorf("add the snapshot's GTIDs to gtid_purged: %w", err)
		}
	}
	var executed string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_executed").Scan(&executed); err != nil {
		return "", fmt.Errorf("read gtid_executed: %w", err)
	}
	return strings.ReplaceAll(executed, "\n", ""), nil
}
