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
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// replicaPoll is how often replay checks the replica's progress.
const replicaPoll = 50 * time.Millisecond

// source is what a replica is pointed at: the restore's binlog server,
// the one-time account, where to start, and the server's certificate, which
// the replica verifies the server against.
type source struct {
	port           int
	user, password string
	file           string
	pos            uint64
	caFile         string
}

// replicaSQL is how one flavor points a replica at a source, replicates to a
// position and forgets the source again.
type replicaSQL struct {
	// changeSource sets host, port, account, TLS and the start coordinates.
	changeSource func(src source) string
	// parallelVars are the global variables parallel sets: read before
	// and set back afterwards, so that a target server keeps its own.
	parallelVars []string
	// parallel sets up parallel apply; run while the replica is stopped.
	parallel func(threads int) []string
	// startUntil starts replication until file:pos.
	startUntil func(file string, pos uint64) string
	status     string
	// Column names in status: the position applied, the position
	// received, and the threads.
	fileCol, posCol, readFileCol, readPosCol, ioRunningCol, sqlRunningCol string
	stop, reset                                                           string
	// workerError, when set, is the query for the error of the parallel
	// worker that failed (MySQL's coordinator reports only that one did).
	workerError string
}

// replicaStatements returns the statements for a flavor: MySQL's in the
// syntax of 8.0.26 and later, MariaDB's as 10.11 and 11.8 take them. The
// replica connects with TLS and verifies the binlog server's certificate:
// MySQL 8.0+ and MariaDB 11.4+ replicas want TLS by default, and whatever
// answers on the port gets to write into the server.
func replicaStatements(flavor string) replicaSQL {
	if flavor == mysqld.MySQL {
		// A channel of its own: RESET REPLICA ALL FOR CHANNEL removes it
		// with its relay logs, where the default channel, which always
		// exists, would be given a new empty relay log; and a target's
		// own replication configuration is not touched.
		const channel = " FOR CHANNEL '" + replayChannel + "'"
		return replicaSQL{
			changeSource: func(src source) string {
				return fmt.Sprintf("CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%d, SOURCE_USER=%s, SOURCE_PASSWORD=%s, "+
					"SOURCE_LOG_FILE=%s, SOURCE_LOG_POS=%d, SOURCE_AUTO_POSITION=0, SOURCE_CONNECT_RETRY=1, "+
					"SOURCE_SSL=1, SOURCE_SSL_CA=%s, SOURCE_SSL_VERIFY_SERVER_CERT=1"+channel,
					src.port, sqlString(src.user), sqlString(src.password), sqlString(src.file), src.pos, sqlString(src.caFile))
			},
			parallelVars: []string{"replica_parallel_workers"},
			parallel: func(threads int) []string {
				return []string{fmt.Sprintf("SET GLOBAL replica_parallel_workers = %d", threads)}
			},
			startUntil: func(file string, pos uint64) string {
				return fmt.Sprintf("START REPLICA UNTIL SOURCE_LOG_FILE=%s, SOURCE_LOG_POS=%d"+channel, sqlString(file), pos)
			},
			status:  "SHOW REPLICA STATUS" + channel,
			fileCol: "Relay_Source_Log_File", posCol: "Exec_Source_Log_Pos",
			readFileCol: "Source_Log_File", readPosCol: "Read_Source_Log_Pos",
			ioRunningCol: "Replica_IO_Running", sqlRunningCol: "Replica_SQL_Running",
			stop: "STOP REPLICA" + channel, reset: "RESET REPLICA ALL" + channel,
			workerError: "SELECT LAST_ERROR_NUMBER, LAST_ERROR_MESSAGE FROM performance_schema.replication_applier_status_by_worker " +
				"WHERE CHANNEL_NAME = '" + replayChannel + "' AND LAST_ERROR_NUMBER <> 0 ORDER BY LAST_ERROR_TIMESTAMP LIMIT 1",
		}
	}
	return replicaSQL{
		changeSource: func(src source) string {
			return fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, "+
				"MASTER_LOG_FILE=%s, MASTER_LOG_POS=%d, MASTER_USE_GTID=no, MASTER_CONNECT_RETRY=1, "+
				"MASTER_SSL=1, MASTER_SSL_CA=%s, MASTER_SSL_VERIFY_SERVER_CERT=1",
				src.port, sqlString(src.user), sqlString(src.password), sqlString(src.file), src.pos, sqlString(src.caFile))
		},
		parallelVars: []string{"slave_parallel_threads", "slave_parallel_mode"},
		parallel: func(threads int) []string {
			return []string{
				fmt.Sprintf("SET GLOBAL slave_parallel_threads = %d", threads),
				"SET GLOBAL slave_parallel_mode = 'optimistic'",
			}
		},
		startUntil: func(file string, pos uint64) string {
			return fmt.Sprintf("START SLAVE UNTIL MASTER_LOG_FILE=%s, MASTER_LOG_POS=%d", sqlString(file), pos)
		},
		status:  "SHOW SLAVE STATUS",
		fileCol: "Relay_Master_Log_File", posCol: "Exec_Master_Log_Pos",
		readFileCol: "Master_Log_File", readPosCol: "Read_Master_Log_Pos",
		ioRunningCol: "Slave_IO_Running", sqlRunningCol: "Slave_SQL_Running",
		stop: "STOP SLAVE", reset: "RESET SLAVE ALL",
	}
}

// replayChannel is the MySQL replication channel a replay uses.
const replayChannel = "mysql_pitr_restore"

// sqlString quotes s as an SQL string literal.
func sqlString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// replayThreads is the number of parallel apply threads for threads asked.
func replayThreads(threads int) int {
	if threads > 0 {
		return threads
	}
	return max(4, runtime.NumCPU())
}

// errUnreached is returned (wrapped) by binlogServerReplay when the
// replica could not read from the binlog server at all: nothing was
// replayed.
var errUnreached = errors.New("the replica could not read from the restore's binlog server")

// binlogServerReplay is the ReplayServer mode: a binlog.Server serves the
// fetched files on a loopback port for the length of the replay, with an
// account made up for it and TLS with a certificate made for it, and the
// server db replicates from it, in parallel, until the stop. Afterwards no
// replication configuration or relay log is left in the datadir, and the
// parallel apply settings are as they were.
type binlogServerReplay struct {
	db       *sql.DB
	flavor   string
	threads  int
	log      *slog.Logger
	progress reporter
}

// replay replicates the stop's range.
func (b *binlogServerReplay) replay(ctx context.Context, stop *Stop) error {
	if nothingToReplay(stop, b.log) {
		return nil
	}
	rp, err := openReplica(ctx, b.db, b.flavor)
	if err != nil {
		return err
	}
	defer rp.conn.Close()
	bs, err := serveBinlog(ctx, stop, rp.gtidMode, b.log)
	if err != nil {
		return err
	}
	defer bs.close()
	first, last := stop.Files[0], stop.Files[len(stop.Files)-1]
	src := source{port: bs.port, user: bs.user, password: bs.password, file: first.Name, pos: first.From, caFile: bs.caFile}
	n := replayThreads(b.threads)
	if err := rp.start(ctx, src, n, last); err != nil {
		return err
	}
	b.log.Info("replaying by replication", "from", first.Name+":"+strconv.FormatUint(first.From, 10),
		"until", last.Name+":"+strconv.FormatUint(last.To, 10), "threads", n, "port", bs.port)
	begin := time.Now()
	werr := b.wait(ctx, rp, src, stop)
	if werr == nil {
		total := stop.replayBytes()
		b.progress.report(PhaseReplay, total, total)
	}
	// Stop and forget the source even after an error, so that a retry on
	// the same datadir starts clean; the first error is the one reported.
	if err := rp.forget(ctx); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	if err := bs.close(); err != nil {
		return err
	}
	b.log.Info("replayed by replication", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// replica is the replaying server, on one connection: the statements are
// few, and a session keeps them in order.
type replica struct {
	conn *sql.Conn
	q    replicaSQL
	// gtidMode is MySQL's gtid_mode, which the binlog server must match.
	gtidMode string
	// saved are the parallel apply variables to set back.
	saved map[string]string
}

// openReplica connects to the replaying server and reads what the replay
// changes or must match.
func openReplica(ctx context.Context, db *sql.DB, flavor string) (*replica, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the replaying server: %w", err)
	}
	rp := &replica{conn: conn, q: replicaStatements(flavor)}
	if flavor == mysqld.MySQL {
		if err := conn.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_mode").Scan(&rp.gtidMode); err != nil {
			conn.Close()
			return nil, fmt.Errorf("read gtid_mode of the replaying server: %w", err)
		}
	}
	if rp.saved, err = globals(ctx, conn, rp.q.parallelVars); err != nil {
		conn.Close()
		return nil, err
	}
	return rp, nil
}

// start points the replica at src and starts it, with threads parallel
// apply threads, until the end of the replay range in until.
func (rp *replica) start(ctx context.Context, src source, threads int, until ReplayFile) error {
	stmts := append([]string{rp.q.changeSource(src)}, rp.q.parallel(threads)...)
	stmts = append(stmts, rp.q.startUntil(until.Name, until.To))
	for _, s := range stmts {
		if _, err := rp.conn.ExecContext(ctx, s); err != nil {
			// The statement is not quoted: it may hold the password.
			return errors.Join(fmt.Errorf("set up replication from the binlog server: %w", err), rp.forget(ctx))
		}
	}
	return nil
}

// servedBinlog is a binlog.Server serving a replay's files on a loopback
// port, and what a replica needs to connect to it.
type servedBinlog struct {
	port           int
	user, password string
	// caFile is the server's certificate, in caDir.
	caFile, caDir string
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	serveErr      error
	closed        bool
}

// serveBinlog serves the stop's files, the last one up to the stop, until
// close.
func serveBinlog(ctx context.Context, stop *Stop, gtidMode string, log *slog.Logger) (*servedBinlog, error) {
	files := make([]binlog.ServedFile, len(stop.Files))
	for i, f := range stop.Files {
		files[i] = binlog.ServedFile{Name: f.Name, Path: f.Path}
	}
	files[len(files)-1].End = stop.Files[len(stop.Files)-1].To
	tlsConfig, cert, err := binlog.NewServerTLS("127.0.0.1")
	if err != nil {
		return nil, err
	}
	caDir, caFile, err := writeCA(cert)
	if err != nil {
		return nil, err
	}
	sb := &servedBinlog{user: "pitr_" + randomHex(4), password: randomHex(16), caFile: caFile, caDir: caDir}
	bs, err := binlog.NewServer(files, binlog.ServerOptions{User: sb.user, Password: sb.password, TLS: tlsConfig, GTIDMode: gtidMode, Logger: log})
	if err != nil {
		os.RemoveAll(caDir)
		return nil, err
	}
	// Loopback only: the replica is on this host, and nothing else may
	// reach the binlog.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(caDir)
		return nil, fmt.Errorf("listen for the binlog server: %w", err)
	}
	sb.port = ln.Addr().(*net.TCPAddr).Port
	sctx, cancel := context.WithCancel(ctx)
	sb.cancel = cancel
	sb.wg.Go(func() { sb.serveErr = bs.Serve(sctx, ln) })
	return sb, nil
}

// writeCA writes the binlog server's certificate into a new directory.
// The certificate is public; the server, which may run as another user (a
// target server on this host), must be able to read it.
func writeCA(cert []byte) (dir, file string, err error) {
	dir, err = os.MkdirTemp("", "pitr-binlog-server-")
	if err != nil {
		return "", "", fmt.Errorf("binlog server certificate: %w", err)
	}
	file = filepath.Join(dir, "ca.pem")
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("binlog server certificate: %w", err)
	}
	if err := os.WriteFile(file, cert, 0o644); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("binlog server certificate: %w", err)
	}
	return dir, file, nil
}

// close stops serving, removes the certificate and returns how serving
// ended; a second call does nothing.
func (sb *servedBinlog) close() error {
	if sb.closed {
		return nil
	}
	sb.closed = true
	sb.cancel()
	sb.wg.Wait()
	os.RemoveAll(sb.caDir)
	return sb.serveErr
}

// forget stops replication, removes its configuration and relay logs, and
// sets the parallel apply variables back.
func (rp *replica) forget(ctx context.Context) error {
	q, saved := rp.q, rp.saved
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var errs []error
	for _, s := range []string{q.stop, q.reset} {
		if _, err := rp.conn.ExecContext(cctx, s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
	}
	for _, v := range q.parallelVars {
		// A number unquoted: an integer variable refuses a string.
		val := saved[v]
		if _, err := strconv.ParseInt(val, 10, 64); err != nil {
			val = sqlString(val)
		}
		if _, err := rp.conn.ExecContext(cctx, "SET GLOBAL "+v+" = "+val); err != nil {
			errs = append(errs, fmt.Errorf("set %s back to %s: %w", v, saved[v], err))
		}
	}
	return errors.Join(errs...)
}

// globals reads global variables.
func globals(ctx context.Context, conn *sql.Conn, names []string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		var v string
		if err := conn.QueryRowContext(ctx, "SELECT @@GLOBAL."+n).Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s: %w", n, err)
		}
		out[n] = v
	}
	return out, nil
}

// wait polls the replica, started at src, until its SQL thread has applied
// exactly up to the stop, and fails on a replication error or a thread that
// stopped short.
func (b *binlogServerReplay) wait(ctx context.Context, rp *replica, src source, stop *Stop) error {
	conn, q := rp.conn, rp.q
	last := stop.Files[len(stop.Files)-1]
	file, pos, total := last.Name, last.To, stop.replayBytes()
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
			errno, msg := st["Last_SQL_Errno"], st["Last_SQL_Error"]
			if q.workerError != "" {
				var n int
				var m string
				if conn.QueryRowContext(ctx, q.workerError).Scan(&n, &m) == nil {
					errno, msg = strconv.Itoa(n), m
				}
			}
			return fmt.Errorf("replay stopped at %s:%s: error %s: %s", st[q.fileCol], st[q.posCol], errno, msg)
		}
		if st["Last_IO_Errno"] != "0" {
			if st[q.readFileCol] == src.file && st[q.readPosCol] == strconv.FormatUint(src.pos, 10) && st[q.posCol] == st[q.readPosCol] {
				return fmt.Errorf("%w: error %s: %s", errUnreached, st["Last_IO_Errno"], st["Last_IO_Error"])
			}
			return fmt.Errorf("replica cannot read from the binlog server: error %s: %s", st["Last_IO_Errno"], st["Last_IO_Error"])
		}
		applied, _ := strconv.ParseUint(st[q.posCol], 10, 64)
		b.progress.report(PhaseReplay, stop.replayed(st[q.fileCol], applied), total)
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
			b.log.Info("replaying", "at", st[q.fileCol]+":"+st[q.posCol], "until", file+":"+want)
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
