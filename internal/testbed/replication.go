package testbed

import (
	"fmt"
	"testing"
	"time"
)

// ReplicateFrom makes replica a GTID replica of source, as an operator
// sets one up (read-only, auto-positioned by GTID), and waits until it
// has caught up. The two must have different ServerIDs.
func ReplicateFrom(tb testing.TB, replica, source *MariaDB) {
	tb.Helper()
	replica.Exec(tb, "SET GLOBAL read_only = ON")
	if replica.Flavor().MySQL() {
		replica.Exec(tb, fmt.Sprintf("CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%d, SOURCE_USER='root', SOURCE_PASSWORD='', "+
			"SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, GET_SOURCE_PUBLIC_KEY=1", source.Port()))
		replica.Exec(tb, "START REPLICA")
	} else {
		replica.Exec(tb, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='', "+
			"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", source.Port()))
		replica.Exec(tb, "START SLAVE")
	}
	WaitReplicated(tb, replica, source)
}

// WaitReplicated waits until replica has executed every transaction
// source has.
func WaitReplicated(tb testing.TB, replica, source *MariaDB) {
	tb.Helper()
	q := "SELECT @@GLOBAL.gtid_binlog_pos"
	if source.Flavor().MySQL() {
		q = "SELECT @@GLOBAL.gtid_executed"
	}
	var want string
	if err := source.DB(tb).QueryRowContext(tb.Context(), q).Scan(&want); err != nil {
		tb.Fatal(err)
	}
	Eventually(tb, 30*time.Second, func() error {
		var ok int
		var err error
		if source.Flavor().MySQL() {
			err = replica.DB(tb).QueryRowContext(tb.Context(), "SELECT GTID_SUBSET(?, @@GLOBAL.gtid_executed)", want).Scan(&ok)
		} else {
			var have string
			err = replica.DB(tb).QueryRowContext(tb.Context(), "SELECT @@GLOBAL.gtid_slave_pos").Scan(&have)
			if have == want {
				ok = 1
			}
		}
		if err != nil {
			return err
		}
		if ok != 1 {
			return fmt.Errorf("the replica has not caught up with %s", want)
		}
		return nil
	})
}
