package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// ErrTargetChanged is wrapped by the error of a restore into a running
// server that failed after it changed the server; the message says what
// the server holds and what to do before running the restore again.
var ErrTargetChanged = errors.New("the target server was changed")

// targetServer is a running server a logical snapshot is restored into.
// Replay through the built-in binlog server needs it to reach this host's
// loopback, so a target on another host replays with the mysqlbinlog
// pipeline.
type targetServer struct {
	r  *run
	db *sql.DB
}

// What a failed restore left in the target server (see changed).
const (
	loadedNothingReplayed = "snapshot loaded, nothing replayed"
	replayedNoGTIDState   = "snapshot loaded and binlog replayed, GTID state not set"
)

// openTarget connects to the target server and refuses, before anything
// is fetched or changed, one the restore could not complete in.
func (r *run) openTarget(ctx context.Context) (*targetServer, error) {
	m := r.plan.Snapshot
	if m.Method != catalog.MethodLogical {
		return nil, fmt.Errorf("snapshot %s is %s: only a logical snapshot restores into a running server (use --datadir)", m.ID, m.Method)
	}
	conn, err := mysql.NewConnector(r.opts.Target)
	if err != nil {
		return nil, fmt.Errorf("target server: %w", err)
	}
	t := &targetServer{r: r, db: sql.OpenDB(conn)}
	if err := checkTarget(ctx, t.db, m, r.flavor); err != nil {
		t.close()
		return nil, fmt.Errorf("target server %s: %w; nothing was changed", r.opts.Target.Addr, err)
	}
	if r.opts.Replay == ReplayMysqlbinlog || !loopback(r.opts.Target) {
		if _, _, err := r.tools().find(ctx); err != nil {
			t.close()
			return nil, fmt.Errorf("%w; nothing was changed", err)
		}
	}
	return t, nil
}

// close closes the restore's connections to the target.
func (t *targetServer) close() { t.db.Close() }

// load is the snapshot step into a target server: it loads the logical
// snapshot.
func (t *targetServer) load(ctx context.Context) error {
	id := string(t.r.plan.Snapshot.ID)
	t.r.log.Info("loading logical snapshot into the target server", "snapshot", id)
	if err := t.r.loadLogical(ctx, t.r.opts.Target); err != nil {
		return t.changed(ctx, err, "snapshot "+id+" partly loaded, nothing replayed", false)
	}
	return nil
}

// replayMode is the replay mode asked for, unless the target cannot
// replicate from the restore's binlog server: it is on another host, or
// has the source's server_id (a replica skips events carrying its own).
func (t *targetServer) replayMode(ctx context.Context) (string, error) {
	r := t.r
	mode := r.opts.Replay
	if mode == ReplayServer && !loopback(r.opts.Target) {
		r.log.Info("the target is on another host: replaying with mysqlbinlog", "target", r.opts.Target.Addr)
		mode = ReplayMysqlbinlog
	}
	var targetID uint32
	if err := t.db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&targetID); err != nil {
		return "", t.changed(ctx, fmt.Errorf("target server: %w", err), loadedNothingReplayed, false)
	}
	if mode == ReplayServer && targetID == r.plan.Snapshot.ServerID {
		r.log.Info("the target has the source's server_id: replaying with mysqlbinlog", "server_id", targetID)
		mode = ReplayMysqlbinlog
	}
	return mode, nil
}

// replay is the replay step into a target server, in mode. A replication
// that cannot reach the binlog server at all has replayed nothing, and the
// replay falls back to the mysqlbinlog pipeline: the usual cause is a
// target that runs where it cannot read the binlog server's certificate
// (another container or user), so it cannot verify the server.
func (t *targetServer) replay(ctx context.Context, mode string, stop *Stop) error {
	r := t.r
	if mode == ReplayServer {
		err := r.byReplication(t.db).replay(ctx, stop)
		if !errors.Is(err, errUnreached) {
			return t.incomplete(ctx, err)
		}
		r.log.Warn("the target cannot replicate from the restore's binlog server: replaying with mysqlbinlog", "err", err)
	}
	cipher, err := mysqltls.Cipher(ctx, t.db)
	if err != nil {
		return t.changed(ctx, fmt.Errorf("target server: %w", err), loadedNothingReplayed, false)
	}
	return t.incomplete(ctx, r.byMysqlbinlog(r.opts.Target, r.opts.TargetTLS.Effective(cipher != "")).replay(ctx, stop))
}

// incomplete describes a replay that failed with err; nil stays nil.
func (t *targetServer) incomplete(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	return t.changed(ctx, err, "snapshot loaded, replay not completed", true)
}

// checkTarget refuses, before anything is fetched or changed, a target the
// restore could not complete in: one holding databases, of the other
// family, that refuses LOAD DATA LOCAL (MySQL's default since 8.0), or that
// cannot take the archive's GTIDs.
func checkTarget(ctx context.Context, db *sql.DB, m *catalog.Manifest, flavor string) error {
	var n int
	err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name NOT IN "+
		"('mysql', 'information_schema', 'performance_schema', 'sys')").Scan(&n)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("it holds %d databases: restore into an empty server", n)
	}
	var version string
	var localInfile bool
	if err := db.QueryRowContext(ctx, "SELECT VERSION(), @@GLOBAL.local_infile").Scan(&version, &localInfile); err != nil {
		return err
	}
	if got := programs.FamilyOf(version); got != flavor {
		return fmt.Errorf("it is %s, the snapshot is of %s %s: restore into a server of the snapshot's family", version, flavor, m.ServerVersion)
	}
	if !localInfile {
		// The load streams each table with LOAD DATA LOCAL INFILE, as
		// MySQL Shell's loadDump does; the target's files are never read.
		return errors.New("local_infile is OFF (MySQL's default since 8.0): the snapshot loads with LOAD DATA LOCAL INFILE; " +
			"turn it on for the restore (SET GLOBAL local_infile = ON) and off again afterwards")
	}
	if flavor != mysqld.MySQL || m.GTIDSet == "" {
		return nil
	}
	var mode, overlap string
	err = db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_mode, GTID_SUBTRACT(?, GTID_SUBTRACT(?, @@GLOBAL.gtid_executed))", m.GTIDSet, m.GTIDSet).Scan(&mode, &overlap)
	if err != nil {
		return err
	}
	if mode != "ON" && mode != "ON_PERMISSIVE" {
		return fmt.Errorf("gtid_mode is %s: the archive's transactions carry GTIDs; run it with gtid_mode=ON and enforce_gtid_consistency=ON, as the source", mode)
	}
	if overlap != "" {
		return fmt.Errorf("it has executed GTIDs of the snapshot (%s): restore into a server that never replicated from the source", overlap)
	}
	return nil
}

// changed describes, after err, what a failed restore left in the target
// server and what to do before trying again.
func (t *targetServer) changed(ctx context.Context, err error, what string, replayed bool) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	dbs := "the snapshot's databases"
	rows, qerr := t.db.QueryContext(cctx, "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN "+
		"('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1")
	if qerr == nil {
		var names []string
		for rows.Next() {
			var n string
			if rows.Scan(&n) == nil {
				names = append(names, "`"+n+"`")
			}
		}
		rows.Close()
		if len(names) > 0 {
			dbs = "databases " + strings.Join(names, ", ")
		}
	}
	reset := ""
	if replayed {
		// Transactions replayed in part are recorded in the server's GTID
		// state; a second replay would skip them (MySQL) or be refused
		// as out of order (MariaDB with gtid_strict_mode).
		if t.r.flavor == mysqld.MySQL {
			reset = ", and clear its GTID state (RESET BINARY LOGS AND GTIDS; RESET MASTER before MySQL 8.4)"
		} else {
			reset = ", and reset its GTID position (RESET MASTER; SET GLOBAL gtid_slave_pos = '')"
		}
	}
	return fmt.Errorf("%w; %w: %s: drop %s and the accounts the snapshot created%s before running the restore again",
		err, ErrTargetChanged, what, dbs, reset)
}

// loopback reports whether the server is on this host's loopback or socket.
func loopback(cfg *mysql.Config) bool {
	if cfg.Net == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
