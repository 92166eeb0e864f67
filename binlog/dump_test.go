package binlog

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestDumpSemiSyncAcknowledgements connects as a semi-synchronous replica
// and holds each acknowledgement back: every commit waits exactly until its
// transaction is acknowledged, events keep arriving while an
// acknowledgement is outstanding (the server numbers its packets anew after
// each event it waits on), and the server counts every commit as
// acknowledged rather than timing out.
func TestDumpSemiSyncAcknowledgements(t *testing.T) {
	const hold = 400 * time.Millisecond
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MariaDB118, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) {
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
			// Before semi-synchronous replication is on: without a replica,
			// a commit would wait for the server's timeout.
			db.Exec(t, "CREATE DATABASE semi")
			db.Exec(t, "CREATE TABLE semi.t (id INT PRIMARY KEY AUTO_INCREMENT)")
			status, clients := "Rpl_semi_sync_master_yes_tx", "Rpl_semi_sync_master_clients"
			if f.Family() == "mysql" {
				db.Exec(t, "INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'")
				db.Exec(t, "SET GLOBAL rpl_semi_sync_source_enabled = ON, rpl_semi_sync_source_timeout = 30000")
				status, clients = "Rpl_semi_sync_source_yes_tx", "Rpl_semi_sync_source_clients"
			} else {
				db.Exec(t, "SET GLOBAL rpl_semi_sync_master_enabled = ON, rpl_semi_sync_master_timeout = 30000")
			}
			cfg, err := mysql.ParseDSN(db.DSN())
			if err != nil {
				t.Fatal(err)
			}
			src, err := NewSource(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			info, err := src.Info(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			// From the binlog's end, as a replica that has caught up: the
			// server counts on a semi-synchronous replica only from there.
			logs, err := src.BinaryLogs(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			last, end := logs[len(logs)-1].Name, logs[len(logs)-1].Size
			d, err := src.dialDump(t.Context(), dumpOptions{flavor: info.Flavor, serverID: 4244, heartbeat: time.Second, semiSync: true,
				dial: (&net.Dialer{}).DialContext}, catalog.Position{File: last, Pos: end})
			if err != nil {
				t.Fatal(err)
			}
			defer d.close()

			testbed.Eventually(t, 30*time.Second, func() error {
				var n int
				db.DB(t).QueryRowContext(t.Context(), "SHOW GLOBAL STATUS LIKE '"+clients+"'").Scan(new(string), &n)
				if n != 1 {
					return fmt.Errorf("%s is %d, want 1", clients, n)
				}
				return nil
			})

			// Three commits, the last two started together so that one
			// transaction's events arrive while the other's
			// acknowledgement is held back.
			type commit struct {
				took time.Duration
				err  error
			}
			done := make(chan commit, 3)
			insert := func() {
				begin := time.Now()
				_, err := db.DB(t).ExecContext(t.Context(), "INSERT INTO semi.t VALUES ()")
				done <- commit{time.Since(begin), err}
			}
			go func() {
				insert()
				go insert()
				time.Sleep(50 * time.Millisecond)
				insert()
			}()
			var before int64
			db.DB(t).QueryRowContext(t.Context(), "SHOW GLOBAL STATUS LIKE '"+status+"'").Scan(new(string), &before)

			acks := make(chan catalog.Position, 10)
			ackErr := make(chan error, 1)
			go func() {
				for p := range acks {
					time.Sleep(hold)
					if err := d.ack(p); err != nil {
						ackErr <- err
						return
					}
				}
				ackErr <- nil
			}()
			waited := 0
			for waited < 3 {
				ev, w, err := d.next()
				if err != nil {
					t.Fatalf("after %d acknowledged events: %v", waited, err)
				}
				h, err := ParseHeader(ev)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case h.Type == RotateEvent && h.Artificial():
					if last, end, err = ParseFakeRotate(ev); err != nil {
						t.Fatal(err)
					}
				case h.Artificial():
				case h.NextPos != 0:
					end = uint64(h.NextPos)
				default:
					end += uint64(h.Size)
				}
				if w {
					waited++
					acks <- catalog.Position{File: last, Pos: end}
				}
			}
			close(acks)
			if err := <-ackErr; err != nil {
				t.Fatal(err)
			}
			for range 3 {
				c := <-done
				if c.err != nil {
					t.Fatal(c.err)
				}
				if c.took < hold-50*time.Millisecond || c.took > 10*time.Second {
					t.Errorf("a commit took %s; want about the %s its acknowledgement was held", c.took, hold)
				}
			}
			var after int64
			db.DB(t).QueryRowContext(t.Context(), "SHOW GLOBAL STATUS LIKE '"+status+"'").Scan(new(string), &after)
			if after-before != 3 {
				t.Errorf("%s went from %d to %d; want 3 more acknowledged commits", status, before, after)
			}
		})
	}
}
