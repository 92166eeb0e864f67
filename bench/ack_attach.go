package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/kit"
	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// sourceVar and replicaVar name a semi-synchronous setting of the source
// and of the replica: rpl_semi_sync_master_X and rpl_semi_sync_slave_X on
// MariaDB, rpl_semi_sync_source_X and rpl_semi_sync_replica_X on MySQL.
func (a *ackBench) sourceVar(x string) string {
	if a.flavor.MySQL() {
		return "rpl_semi_sync_source_" + x
	}
	return "rpl_semi_sync_master_" + x
}

func (a *ackBench) replicaVar(x string) string {
	if a.flavor.MySQL() {
		return "rpl_semi_sync_replica_" + x
	}
	return "rpl_semi_sync_slave_" + x
}

// execAll runs statements in order on a server's root pool. Errors name the
// statement's first words only: CHANGE MASTER holds a password.
func execAll(ctx context.Context, s *kit.Server, stmts ...string) error {
	for _, q := range stmts {
		if _, err := s.DB.ExecContext(ctx, q); err != nil {
			f := strings.Fields(q)
			return fmt.Errorf("%s: %w", strings.Join(f[:min(len(f), 3)], " "), err)
		}
	}
	return nil
}

// setUpSource gives the source the semi-synchronous settings the agent
// documents (AFTER_SYNC: MariaDB's default is AFTER_COMMIT), turned off
// until a run attaches its replica.
func (a *ackBench) setUpSource(ctx context.Context) error {
	var stmts []string
	if a.flavor.MySQL() {
		stmts = append(stmts, "INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'")
	}
	stmts = append(stmts, fmt.Sprintf("SET GLOBAL %s = OFF, %s = AFTER_SYNC, %s = %d",
		a.sourceVar("enabled"), a.sourceVar("wait_point"), a.sourceVar("timeout"), a.timeout.Milliseconds()))
	if err := execAll(ctx, a.src, stmts...); err != nil {
		return err
	}
	cfg, err := mysql.ParseDSN(a.src.DSN())
	if err != nil {
		return err
	}
	a.semi, err = binlog.NewSource(cfg)
	return err
}

// setUpReplica makes the second server a semi-synchronous replica of the
// source with GTID auto-positioning, as the pitr account (which has
// REPLICATION SLAVE), not yet started. It connects over TLS when the
// source offers it, as the agent does by default.
func (a *ackBench) setUpReplica(ctx context.Context) error {
	tls, err := a.sourceOffersTLS(ctx)
	if err != nil {
		return err
	}
	on := map[bool]int{false: 0, true: 1}[tls]
	var stmts []string
	if a.flavor.MySQL() {
		auth := "SOURCE_SSL = 1"
		if !tls {
			// caching_sha2_password needs the server's key without TLS.
			auth = "SOURCE_SSL = 0, GET_SOURCE_PUBLIC_KEY = 1"
		}
		stmts = append(stmts, "INSTALL PLUGIN rpl_semi_sync_replica SONAME 'semisync_replica.so'",
			fmt.Sprintf("CHANGE REPLICATION SOURCE TO SOURCE_HOST = '127.0.0.1', SOURCE_PORT = %d, SOURCE_USER = '%s', SOURCE_PASSWORD = '%s', SOURCE_AUTO_POSITION = 1, %s",
				a.src.Port(), testbed.PitrUser, a.src.PitrPassword(), auth))
	} else {
		stmts = append(stmts, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %d, MASTER_USER = '%s', MASTER_PASSWORD = '%s', MASTER_USE_GTID = slave_pos, MASTER_SSL = %d",
			a.src.Port(), testbed.PitrUser, a.src.PitrPassword(), on))
	}
	stmts = append(stmts, "SET GLOBAL "+a.replicaVar("enabled")+" = ON")
	if a.syncRelayLog >= 0 {
		stmts = append(stmts, "SET GLOBAL sync_relay_log = "+strconv.Itoa(a.syncRelayLog))
	}
	kit.Logf("replica: GTID auto-position, TLS %v, sync_relay_log %s", tls, a.relayLogSync())
	return execAll(ctx, a.replica, stmts...)
}

// relayLogSync describes the stock replica's sync_relay_log.
func (a *ackBench) relayLogSync() string {
	if a.syncRelayLog < 0 {
		return "the server's default"
	}
	return strconv.Itoa(a.syncRelayLog)
}

// sourceOffersTLS connects as the agent does by default (TLS preferred)
// and reports whether the connection is encrypted.
func (a *ackBench) sourceOffersTLS(ctx context.Context) (bool, error) {
	cfg, err := mysql.ParseDSN(a.src.PitrDSN())
	if err != nil {
		return false, err
	}
	if err := (mysqltls.Settings{}).Apply(cfg); err != nil {
		return false, err
	}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return false, err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	cipher, err := mysqltls.Cipher(ctx, db)
	return cipher != "", err
}

// detached turns the source's semi-synchronous replication off once a
// replica has left, and ends the binlog dump thread the replica had: a
// dump thread notices that its replica is gone only when it next writes,
// up to a heartbeat period later, and until then the source counts it as a
// semi-synchronous client.
func (a *ackBench) detached(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	if err := a.setSemiSync(ctx, false); err != nil {
		return err
	}
	rows, err := a.src.DB.QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
	if err != nil {
		return fmt.Errorf("list binlog dump threads: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("list binlog dump threads: %w", err)
	}
	for _, id := range ids {
		// One that ended meanwhile is no error.
		a.src.DB.ExecContext(ctx, "KILL "+strconv.FormatInt(id, 10))
	}
	return kit.Poll(ctx, time.Minute, 100*time.Millisecond, func() error {
		st, err := a.semi.SemiSync(ctx)
		if err == nil && st.Clients != 0 {
			err = fmt.Errorf("the source still counts %d semi-synchronous replicas", st.Clients)
		}
		return err
	})
}

// setSemiSync turns the source's semi-synchronous replication on or off.
// It is on only while a replica is attached: with none, every commit
// would wait for the whole timeout.
func (a *ackBench) setSemiSync(ctx context.Context, on bool) error {
	v := map[bool]string{false: "OFF", true: "ON"}[on]
	return execAll(ctx, a.src, "SET GLOBAL "+a.sourceVar("enabled")+" = "+v)
}

// subject is what a run attached to the source: nothing, the stock
// replica or an agent.
type subject struct {
	cpu    func() time.Duration // 0 without a subject
	agent  *kit.Agent
	detach func() error
}

// attach connects the configuration's replica to the source and returns
// once the source waits for it for every commit.
func (a *ackBench) attach(ctx context.Context, b *bench, cfg string) (*subject, error) {
	none := func() time.Duration { return 0 }
	switch cfg {
	case cfgAsync:
		return &subject{cpu: none, detach: func() error { return nil }}, a.setSemiSync(ctx, false)
	case cfgStock, cfgStockIO:
		return a.attachStock(ctx, cfg == cfgStockIO)
	}
	return a.attachAgent(ctx, b, cfg)
}

// attachStock starts the stock replica's threads and waits until it has
// applied everything the source wrote while it was stopped. With ioOnly
// its applier (the SQL thread) is stopped then: it keeps receiving and
// acknowledging, as a replica on a machine of its own would, without
// taking the source's CPU and disk to apply.
func (a *ackBench) attachStock(ctx context.Context, ioOnly bool) (*subject, error) {
	sub := &subject{cpu: a.replica.CPU, detach: func() error {
		return errors.Join(execAll(context.WithoutCancel(ctx), a.replica, "STOP REPLICA"), a.detached(ctx))
	}}
	if err := a.setSemiSync(ctx, true); err != nil {
		return nil, err
	}
	if err := execAll(ctx, a.replica, "START REPLICA"); err != nil {
		return nil, errors.Join(err, sub.detach())
	}
	err := a.waitApplied(ctx)
	if err == nil && ioOnly {
		err = execAll(ctx, a.replica, "STOP REPLICA SQL_THREAD")
	}
	if err == nil {
		err = a.waitSemiSyncOn(ctx)
	}
	if err != nil {
		return nil, errors.Join(err, sub.detach())
	}
	return sub, nil
}

// waitApplied waits until the replica has applied the source's GTID state,
// with the server's own wait function.
func (a *ackBench) waitApplied(ctx context.Context) error {
	set, err := a.src.GTIDState(ctx)
	if err != nil {
		return err
	}
	q, timedOut := "SELECT MASTER_GTID_WAIT(?, ?)", -1
	if a.flavor.MySQL() {
		q, timedOut = "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)", 1
	}
	var res int
	if err := a.replica.DB.QueryRowContext(ctx, q, set, int(catchUpTimeout.Seconds())).Scan(&res); err != nil {
		return fmt.Errorf("wait for the replica to apply %s: %w", set, err)
	}
	if res == timedOut {
		st, _ := a.replica.ReplicaStatus(ctx)
		return fmt.Errorf("the replica has not applied %s after %s (IO error %q, SQL error %q)", set, catchUpTimeout, st["Last_IO_Error"], st["Last_SQL_Error"])
	}
	return nil
}

// waitSemiSyncOn waits until the source waits for one semi-synchronous
// replica at AFTER_SYNC.
func (a *ackBench) waitSemiSyncOn(ctx context.Context) error {
	return kit.Poll(ctx, time.Minute, 100*time.Millisecond, func() error {
		st, err := a.semi.SemiSync(ctx)
		switch {
		case err != nil:
			return err
		case !st.On || st.Clients != 1 || st.WaitPoint != "AFTER_SYNC":
			return fmt.Errorf("the source's semi-synchronous replication is not on with one replica at AFTER_SYNC: %+v", st)
		}
		return nil
	})
}

// agentServerIDs are the agents' --server-id, apart from the servers' 1
// and 2.
var agentServerIDs = map[string]uint32{cfgSpool: 101, cfgStorage: 102}

// attachAgent starts an agent with the configuration's --ack on the
// configuration's own archive and spool, which every run of it continues,
// and waits until it has archived what the source wrote while it was away
// and says RPO 0 holds.
func (a *ackBench) attachAgent(ctx context.Context, b *bench, cfg string) (*subject, error) {
	dir := filepath.Join(b.dir, kit.Slug(cfg))
	archive := filepath.Join(dir, "archive")
	if err := os.MkdirAll(archive, 0o755); err != nil {
		return nil, err
	}
	end, err := a.src.BinlogEnd(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.setSemiSync(ctx, true); err != nil {
		return nil, err
	}
	ag, err := kit.StartAgent(b.mp, a.src, "file://"+archive, nil, dir, agentServerIDs[cfg], binlog.DefaultFlushInterval,
		"--ack", string(ackModes[cfg]))
	if err != nil {
		return nil, errors.Join(err, a.setSemiSync(ctx, false))
	}
	sub := &subject{cpu: func() time.Duration { return kit.PidCPU(ag.Pid()) }, agent: ag, detach: func() error {
		ag.Stop(30 * time.Second)
		return a.detached(ctx)
	}}
	begin := time.Now()
	err = ag.WaitDurable(ctx, end, 50*time.Millisecond, catchUpTimeout, nil)
	kit.Logf("  %s archived %s in %.1f s", cfg, end, time.Since(begin).Seconds())
	if err == nil {
		err = kit.Poll(ctx, time.Minute, 100*time.Millisecond, func() error {
			st, err := ag.ReadStatus(ctx)
			switch {
			case err != nil:
				return err
			case st.Binlog.Ack == nil:
				return errors.New("/status has no ack section")
			case !st.Binlog.Ack.RPOZero:
				return fmt.Errorf("RPO 0 does not hold: %s", st.Binlog.Ack.Problem)
			}
			return nil
		})
	}
	kit.Logf("  %s: RPO 0 after %.1f s", cfg, time.Since(begin).Seconds())
	if err == nil {
		err = a.waitSemiSyncOn(ctx)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("%w:\n%s", err, ag.LogTail(10)), sub.detach())
	}
	return sub, nil
}
