package restore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
)

// ErrTargetChanged is wrapped by the error of a restore into a running
// server that failed after it changed the server; the message says what
// the server holds and what to do before running the restore again.
var ErrTargetChanged = errors.New("the target server was changed")

// applyToServer restores a logical snapshot into a running, empty server
// and replays the binlog there. Replay through the built-in binlog server
// needs the target to reach this host's loopback, so a target on another
// host replays with the mysqlbinlog pipeline.
func applyToServer(ctx context.Context, p *Plan, opts Options, work string, begin time.Time) (*Result, error) {
	log := opts.Logger
	if p.Snapshot.Method != catalog.MethodLogical {
		return nil, fmt.Errorf("snapshot %s is %s: only a logical snapshot restores into a running server (use --datadir)", p.Snapshot.ID, p.Snapshot.Method)
	}
	flavor := snapshotFlavor(p.Snapshot)
	conn, err := mysql.NewConnector(opts.Target)
	if err != nil {
		return nil, fmt.Errorf("target server: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	if err := checkTarget(ctx, db, p.Snapshot, flavor); err != nil {
		return nil, fmt.Errorf("target server %s: %w; nothing was changed", opts.Target.Addr, err)
	}
	pl := pipeline{programs: opts.Programs, flavor: flavor, release: p.Snapshot.ServerVersion}
	if opts.Replay == ReplayMysqlbinlog || !loopback(opts.Target) {
		if _, _, err := pl.tools(ctx); err != nil {
			return nil, fmt.Errorf("%w; nothing was changed", err)
		}
	}
	files, err := fetch(ctx, opts.Store, p, filepath.Join(work, "binlog"), opts.Progress)
	if err != nil {
		return nil, err
	}
	stop, err := findStop(p, files)
	if err != nil {
		return nil, err
	}
	log.Info("loading logical snapshot into the target server", "snapshot", string(p.Snapshot.ID))
	if err := snapshot.LoadLogical(ctx, opts.Store, p.Snapshot, opts.Target, snapshot.LoadOptions{Threads: opts.Threads, Logger: log, Progress: loadProgress(log, opts.Progress)}); err != nil {
		return nil, targetChanged(ctx, db, err, flavor, "snapshot "+string(p.Snapshot.ID)+" partly loaded, nothing replayed", false)
	}
	replay := opts.Replay
	if replay == ReplayServer && !loopback(opts.Target) {
		log.Info("the target is on another host: replaying with mysqlbinlog", "target", opts.Target.Addr)
		replay = ReplayMysqlbinlog
	}
	var targetID uint32
	if err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&targetID); err != nil {
		return nil, targetChanged(ctx, db, fmt.Errorf("target server: %w", err), flavor, "snapshot loaded, nothing replayed", false)
	}
	if replay == ReplayServer && targetID == p.Snapshot.ServerID {
		// A replica skips events carrying its own server_id.
		log.Info("the target has the source's server_id: replaying with mysqlbinlog", "server_id", targetID)
		replay = ReplayMysqlbinlog
	}
	if opts.AfterSnapshot != nil {
		if err := opts.AfterSnapshot(ctx, opts.Target); err != nil {
			return nil, targetChanged(ctx, db, err, flavor, "snapshot loaded, nothing replayed", false)
		}
	}
	res := &Result{}
	replayBegin := time.Now()
	if replay == ReplayServer {
		err = replayServer(ctx, db, flavor, stop, opts.Threads, log, opts.Progress)
		if errors.Is(err, errUnreached) {
			// Nothing was replayed. The usual cause: the target runs where
			// it cannot read the binlog server's certificate (another
			// container or user), so it cannot verify the server.
			log.Warn("the target cannot replicate from the restore's binlog server: replaying with mysqlbinlog", "err", err)
			replay = ReplayMysqlbinlog
		}
	}
	if replay == ReplayMysqlbinlog {
		cipher, cerr := mysqltls.Cipher(ctx, db)
		if cerr != nil {
			return nil, targetChanged(ctx, db, fmt.Errorf("target server: %w", cerr), flavor, "snapshot loaded, nothing replayed", false)
		}
		err = replayMysqlbinlog(ctx, opts.Target, clientTLS{opts.TargetTLS.Effective(cipher != ""), flavor}, pl, stop, work, log, opts.Progress)
	}
	if err != nil {
		return nil, targetChanged(ctx, db, err, flavor, "snapshot loaded, replay not completed", true)
	}
	res.ReplayDuration = time.Since(replayBegin)
	if opts.AfterReplay != nil {
		if err := opts.AfterReplay(ctx, opts.Target, stop); err != nil {
			return nil, targetChanged(ctx, db, err, flavor, "snapshot loaded and binlog replayed, GTID state not set", true)
		}
	}
	gtid, err := setGTIDState(ctx, db, flavor, p, stop)
	if err != nil {
		return nil, targetChanged(ctx, db, err, flavor, "snapshot loaded and binlog replayed, GTID state not set", true)
	}
	var idb [6]byte
	_, _ = rand.Read(idb[:])
	res.Marker = Marker{ID: hex.EncodeToString(idb[:]), Target: p.Target.String(), Snapshot: p.Snapshot.ID, Timeline: p.Timeline,
		Stop: stop.Position, Transactions: stop.Transactions, LastCommit: stop.LastCommit, GTIDState: gtid, Finished: time.Now().UTC()}
	res.Duration = time.Since(begin)
	return res, nil
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

// setGTIDState records in the restored server where it stands in the
// source's history, and returns its GTID state: on MariaDB gtid_slave_pos
// becomes the snapshot's position advanced by the replay; on MySQL the
// snapshot's GTID set is added to gtid_purged (the replay's own GTIDs the
// server recorded as it applied them), and the state is gtid_executed.
func setGTIDState(ctx context.Context, db *sql.DB, flavor string, p *Plan, stop *Stop) (string, error) {
	if flavor == mysqld.MariaDB {
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

// targetChanged describes, after err, what a failed restore left in the
// target server and what to do before trying again.
func targetChanged(ctx context.Context, db *sql.DB, err error, flavor, what string, replayed bool) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	dbs := "the snapshot's databases"
	rows, qerr := db.QueryContext(cctx, "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN "+
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
		if flavor == mysqld.MySQL {
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
