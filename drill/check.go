package drill

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
)

// maxReasons bounds the table mismatches a reason lists.
const maxReasons = 5

// checkTables compares the restored tables with the manifest of a logical
// snapshot: each must exist, with the recorded row count and, when the
// manifest records one, the same row digest. It returns how many tables it
// checked. Tables with estimated row counts (physical snapshots) are not
// checked.
func checkTables(ctx context.Context, srv *mysql.Config, m *catalog.Manifest) (int, error) {
	var want []catalog.TableInfo
	for _, t := range m.Tables {
		if !t.RowsEstimated {
			want = append(want, t)
		}
	}
	if len(want) == 0 {
		return 0, nil
	}
	present, err := listTables(ctx, srv)
	if err != nil {
		return 0, err
	}
	var problems []string
	var found []catalog.TableInfo
	for _, t := range want {
		if present[t.Schema+"."+t.Name] {
			found = append(found, t)
		} else {
			problems = append(problems, fmt.Sprintf("table %s.%s is missing", t.Schema, t.Name))
		}
	}
	got, err := snapshot.DigestTables(ctx, srv, found)
	if err != nil {
		return 0, fmt.Errorf("digest the restored tables: %w", err)
	}
	for i, w := range found {
		g := got[i]
		switch {
		case g.Rows != w.Rows:
			problems = append(problems, fmt.Sprintf("table %s.%s has %d rows, the manifest records %d", w.Schema, w.Name, g.Rows, w.Rows))
		case comparableDigest(w.Digest) && g.Digest != w.Digest:
			problems = append(problems, fmt.Sprintf("table %s.%s rows digest to %s, the manifest records %s", w.Schema, w.Name, g.Digest, w.Digest))
		}
	}
	if len(problems) == 0 {
		return len(want), nil
	}
	more := ""
	if len(problems) > maxReasons {
		more = fmt.Sprintf("; and %d more", len(problems)-maxReasons)
		problems = problems[:maxReasons]
	}
	return len(want), fmt.Errorf("snapshot %s does not hold what its manifest records, after loading and before replay: %s%s",
		m.ID, strings.Join(problems, "; "), more)
}

// comparableDigest reports whether a recorded digest is one DigestTables computes.
func comparableDigest(d string) bool {
	return strings.HasPrefix(d, snapshot.DigestAlgorithm+":")
}

// listTables returns the restored server's user tables as "schema.table".
func listTables(ctx context.Context, srv *mysql.Config) (map[string]bool, error) {
	db, err := open(srv)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "+
		"WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')")
	if err != nil {
		return nil, fmt.Errorf("list the restored tables: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return nil, fmt.Errorf("list the restored tables: %w", err)
		}
		out[s+"."+t] = true
	}
	return out, rows.Err()
}

func open(cfg *mysql.Config) (*sql.DB, error) {
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connection settings: %w", err)
	}
	return sql.OpenDB(c), nil
}

// lastArchivedGTID returns the GTID of the last transaction the plan's
// segment records place at or before the target, as the index records it
// ("" when no segment records one, as on a server without GTIDs).
// Segments that go past the target are passed over, so for a time or
// position target this may be a transaction somewhat before the last one
// replayed: GTID states only grow, so holding it is still required.
func lastArchivedGTID(p *restore.Plan) string {
	for i := len(p.Segments) - 1; i >= 0; i-- {
		s := p.Segments[i]
		if s.LastGTID == "" {
			continue
		}
		switch p.Target.Kind {
		case restore.AtTime:
			if s.LastCommitTime.After(p.Target.Time) {
				continue
			}
		case restore.AtPosition:
			tn, _ := catalog.FileNumber(p.Target.Position.File)
			if s.FileNum > tn || (s.FileNum == tn && s.TxnEnd > p.Target.Position.Pos) {
				continue
			}
		}
		return s.LastGTID
	}
	return ""
}

// checkGTID reads the restored server's GTID state after replay and checks
// that it holds want, the last archived transaction's GTID. The state is
// what the server applied (MariaDB gtid_slave_pos and gtid_binlog_pos,
// MySQL gtid_executed) together with the snapshot's own GTID set, which a
// logical load does not put into the server. It returns the server's state.
func checkGTID(ctx context.Context, srv *mysql.Config, m *catalog.Manifest, want string) (string, error) {
	db, err := open(srv)
	if err != nil {
		return "", err
	}
	defer db.Close()
	flavor := gomysql.MariaDBFlavor
	var states []string
	if m.Flavor == string(binlog.MySQL) {
		flavor = gomysql.MySQLFlavor
		var executed string
		if err := db.QueryRowContext(ctx, "SELECT @@global.gtid_executed").Scan(&executed); err != nil {
			return "", fmt.Errorf("read the restored server's GTID state: %w", err)
		}
		states = append(states, executed)
	} else {
		var slave, bin string
		if err := db.QueryRowContext(ctx, "SELECT @@global.gtid_slave_pos, @@global.gtid_binlog_pos").Scan(&slave, &bin); err != nil {
			return "", fmt.Errorf("read the restored server's GTID state: %w", err)
		}
		states = append(states, slave)
		if bin != "" {
			states = append(states, bin)
		}
	}
	state := strings.Join(states, ",")
	if want == "" {
		return state, nil
	}
	ok, err := gtidHeld(flavor, want, append(states, m.GTIDSet))
	if err != nil {
		return state, err
	}
	if !ok {
		return state, fmt.Errorf("after replay the restored server's GTID state %q (with snapshot %s's %q) lacks %s, the last archived transaction's GTID: the archive's binlog does not reach what its index records",
			state, m.ID, m.GTIDSet, want)
	}
	return state, nil
}

// gtidHeld reports whether any of the GTID sets holds the GTID want.
func gtidHeld(flavor, want string, sets []string) (bool, error) {
	w, err := gomysql.ParseGTIDSet(flavor, want)
	if err != nil {
		return false, fmt.Errorf("the index's last GTID %q: %w", want, err)
	}
	for _, s := range sets {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		set, err := gomysql.ParseGTIDSet(flavor, s)
		if err != nil {
			return false, fmt.Errorf("GTID set %q: %w", s, err)
		}
		if set.Contain(w) {
			return true, nil
		}
	}
	return false, nil
}
