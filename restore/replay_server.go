package restore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// replicaPoll is how often replay checks the replica's progress.
const replicaPoll = 50 * time.Millisecond

// replicaSQL is how one flavor points a replica at a source, replicates to a
// position and forgets the source again.
type replicaSQL struct {
	// changeSource sets host, port, account and the start coordinates.
	changeSource func(port int, user, password, file string, pos uint64) string
	// parallel sets up parallel apply; run while the replica is stopped.
	parallel func(threads int) []string
	// startUntil starts replication until file:pos.
	startUntil func(file string, pos uint64) string
	status     string
	// Column names in status.
	fileCol, posCol, ioRunningCol, sqlRunningCol string
	stop, reset                                  string
}

// replicaStatements returns the statements for a flavor. MariaDB's are
// tested against MariaDB 10.11; MySQL's (8.0.26+ syntax) are written from
// MySQL's documentation and untested against a live server.
func replicaStatements(flavor string) replicaSQL {
	if flavor == mysqld.MySQL {
		return replicaSQL{
			changeSource: func(port int, user, password, file string, pos uint64) string {
				return fmt.Sprintf("CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%d, SOURCE_USER='%s', SOURCE_PASSWORD='%s', "+
					"SOURCE_LOG_FILE='%s', SOURCE_LOG_POS=%d, SOURCE_AUTO_POSITION=0, SOURCE_CONNECT_RETRY=1, GET_SOURCE_PUBLIC_KEY=1",
					port, user, password, file, pos)
			},
			parallel: func(threads int) []string {
				return []string{fmt.Sprintf("SET GLOBAL replica_parallel_workers = %d", threads)}
			},
			startUntil: func(file string, pos uint64) string {
				return fmt.Sprintf("START REPLICA UNTIL SOURCE_LOG_FILE='%s', SOURCE_LOG_POS=%d", file, pos)
			},
			status:  "SHOW REPLICA STATUS",
			fileCol: "Relay_Source_Log_File", posCol: "Exec_Source_Log_Pos",
			ioRunningCol: "Replica_IO_Running", sqlRunningCol: "Replica_SQL_Running",
			stop: "STOP REPLICA", reset: "RESET REPLICA ALL",
		}
	}
	return replicaSQL{
		changeSource: func(port int, user, password, file string, pos uint64) string {
			return fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', "+
				"MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d, MASTER_USE_GTID=no, MASTER_CONNECT_RETRY=1",
				port, user, password, file, pos)
		},
		parallel: func(threads int) []string {
			return []string{
				fmt.Sprintf("SET GLOBAL slave_parallel_threads = %d", threads),
				"SET GLOBAL slave_parallel_mode = 'optimistic'",
			}
		},
		startUntil: func(file string, pos uint64) string {
			return fmt.Sprintf("START SLAVE UNTIL MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d", file, pos)
		},
		status:  "SHOW SLAVE STATUS",
		fileCol: "Relay_Master_Log_File", posCol: "Exec_Master_Log_Pos",
		ioRunningCol: "Slave_IO_Running", sqlRunningCol: "Slave_SQL_Running",
		stop: "STOP SLAVE", reset: "RESET SLAVE ALL",
	}
}

// replayThreads is the number of parallel apply threads for threads asked.
func replayThreads(threads int) int {
	if threads > 0 {
		return threads
	}
	return max(4, runtime.NumCPU())
}

// replayServer replays the binlog by replication: a binlog.Server serves
// the fetched files on a loopback port for the length of the replay, with
// an account made up for it, and the temporary server replicates from it,
// in parallel, until the stop. Afterwards no replication configuration or
// relay log is left in the datadir.
func replayServer(ctx context.Context, db *sql.DB, flavor string, stop *Stop, threads int, log *slog.Logger, progress reporter) error {
	if len(stop.Files) == 0 || stop.Transactions == 0 {
		log.Info("nothing to replay after the snapshot")
		return nil
	}
	files := make([]binlog.ServedFile, len(stop.Files))
	for i, f := range stop.Files {
		files[i] = binlog.ServedFile{Name: f.Name, Path: f.Path}
	}
	first, last := stop.Files[0], stop.Files[len(stop.Files)-1]
	files[len(files)-1].End = last.To
	user, password := "pitr_"+randomHex(4), randomHex(16)
	bs, err := binlog.NewServer(files, binlog.ServerOptions{User: user, Password: password, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the binlog server: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var serveErr error
	wg.Go(func() { serveErr = bs.Serve(sctx, ln) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	// One connection: the statements are few, and a session keeps them in order.
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to the replaying server: %w", err)
	}
	defer conn.Close()
	q := replicaStatements(flavor)
	n := replayThreads(threads)
	stmts := append([]string{q.changeSource(port, user, password, first.Name, first.From)}, q.parallel(n)...)
	stmts = append(stmts, q.startUntil(last.Name, last.To))
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			// The statement is not quoted: it may hold the password.
			return fmt.Errorf("set up replication from the binlog server: %w", err)
		}
	}
	log.Info("replaying by replication", "from", first.Name+":"+strconv.FormatUint(first.From, 10),
		"until", last.Name+":"+strconv.FormatUint(last.To, 10), "threads", n, "port", port)
	begin := time.Now()
	total := stop.replayBytes()
	werr := waitReplica(ctx, conn, q, last.Name, last.To, log, func(file string, pos uint64) {
		progress.report(PhaseReplay, stop.replayed(file, pos), total)
	})
	if werr == nil {
		progress.report(PhaseReplay, total, total)
	}
	// Stop and forget the source even after an error, so that a retry on
	// the same datadir starts clean; the first error is the one reported.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer ccancel()
	for _, s := range []string{q.stop, q.reset} {
		if _, err := conn.ExecContext(cctx, s); err != nil && werr == nil {
			werr = fmt.Errorf("%s: %w", s, err)
		}
	}
	if werr != nil {
		return werr
	}
	cancel()
	wg.Wait()
	if serveErr != nil {
		return serveErr
	}
	log.Info("replayed by replication", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// waitReplica polls the replica until its SQL thread has applied exactly up
// to file:pos, and fails on a replication error or a thread that stopped
// short.
func waitReplica(ctx context.Context, conn *sql.Conn, q replicaSQL, file string, pos uint64, log *slog.Logger, at func(file string, pos uint64)) error {
	want := strconv.FormatUint(pos, 10)
	lastReport := time.Now()
	t := time.NewTicker(replicaPoll)
	defer t.Stop()
	for {
		st, err := replicaStatus(ctx, conn, q.status)
		if err != nil {
			return err
		}
		if st == nil {
			return errors.New("replication is not configured on the temporary server")
		}
		if st["Last_SQL_Errno"] != "0" {
			return fmt.Errorf("replay stopped at %s:%s: error %s: %s", st[q.fileCol], st[q.posCol], st["Last_SQL_Errno"], st["Last_SQL_Error"])
		}
		if st["Last_IO_Errno"] != "0" {
			return fmt.Errorf("replica cannot read from the binlog server: error %s: %s", st["Last_IO_Errno"], st["Last_IO_Error"])
		}
		applied, _ := strconv.ParseUint(st[q.posCol], 10, 64)
		at(st[q.fileCol], applied)
		switch {
		case st[q.fileCol] == file && applied == pos:
			return nil
		case st[q.fileCol] > file && applied == binlog.FirstEventPos:
			// The range ends with the file's Rotate, which moved the
			// replica to the next file; the server sends nothing after it.
			return nil
		case st[q.fileCol] > file || st[q.fileCol] == file && applied > pos:
			return fmt.Errorf("replay went past the stop %s:%d to %s:%s", file, pos, st[q.fileCol], st[q.posCol])
		case st[q.sqlRunningCol] == "No":
			return fmt.Errorf("replay stopped at %s:%s before the stop %s:%s", st[q.fileCol], st[q.posCol], file, want)
		}
		if time.Since(lastReport) > 10*time.Second {
			log.Info("replaying", "at", st[q.fileCol]+":"+st[q.posCol], "until", file+":"+want)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// replicaStatus returns the replica status row by column name; nil when no
// replication is configured.
func replicaStatus(ctx context.Context, conn *sql.Conn, query string) (map[string]string, error) {
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", query, err)
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("%s: %w", query, err)
	}
	st := make(map[string]string, len(cols))
	for i, c := range cols {
		st[c] = vals[i].String
	}
	return st, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
