package restore

import (
	"context"
	"database/sql"
	"log/slog"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// replayer is a replay mode: it applies the fetched binlog, from the
// snapshot's position to the stop, to the server holding the snapshot, and
// reports PhaseReplay as it goes.
//
// binlogServerReplay (ReplayServer, replay_server.go) has the server
// replicate from a binlog server of the restore's own, in parallel;
// mysqlbinlogReplay (ReplayMysqlbinlog, replay_mysqlbinlog.go) pipes the
// flavor's binlog reader into its command-line client.
type replayer interface {
	replay(ctx context.Context, stop *Stop) error
}

// replayerOn is the replay mode asked for, into the temporary server of a
// datadir restore; the mysqlbinlog pipeline's client connects to it on its
// private socket, without TLS.
func (r *run) replayerOn(srv *tempServer) replayer {
	if r.opts.Replay == ReplayMysqlbinlog {
		return r.byMysqlbinlog(srv.Config(), mysqltls.Settings{Mode: mysqltls.Off})
	}
	return r.byReplication(srv.DB())
}

// byReplication replays into the server db by replication.
func (r *run) byReplication(db *sql.DB) replayer {
	return &binlogServerReplay{db: db, flavor: r.flavor, threads: r.opts.Threads, log: r.log, progress: r.progress}
}

// byMysqlbinlog replays into the server at target with the standard tools,
// whose client connects with the TLS settings tls.
func (r *run) byMysqlbinlog(target *mysql.Config, tls mysqltls.Settings) replayer {
	return &mysqlbinlogReplay{target: target, tls: clientTLS{tls, r.flavor}, tools: r.tools(), work: r.work, log: r.log, progress: r.progress}
}

// nothingToReplay reports, and logs, that the snapshot is already at the
// stop.
func nothingToReplay(stop *Stop, log *slog.Logger) bool {
	if len(stop.Files) == 0 || stop.Transactions == 0 {
		log.Info("nothing to replay after the snapshot")
		return true
	}
	return false
}
