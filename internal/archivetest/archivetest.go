// Package archivetest runs the binlog archive in tests of the packages
// that build on it (restore, retention, verify): a streamer archiving a
// test server into a store, and waiting until the archive has caught up.
package archivetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Stream starts a streamer archiving src into st (flushing every
// flush) and stops it when the test ends.
func Stream(t *testing.T, src *testbed.MariaDB, st storage.Storage, flush time.Duration) *binlog.Streamer {
	t.Helper()
	cfg, err := mysql.ParseDSN(src.PitrDSN())
	if err != nil {
		t.Fatal(err)
	}
	source, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := binlog.OpenSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &binlog.Streamer{Source: source, Store: st, Spool: sp, ServerID: 999, FlushInterval: flush}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("streamer: %v", err)
		}
		source.Close()
		sp.Close()
	})
	return s
}

// WaitArchived waits until the archive holds everything src's binlog holds now.
func WaitArchived(t *testing.T, s *binlog.Streamer, src *testbed.MariaDB) {
	t.Helper()
	end := BinlogEnd(t, src)
	testbed.Eventually(t, 30*time.Second, func() error {
		if _, d, _ := s.Uploader().Durable(); d.File < end.File || d.File == end.File && d.Pos < end.Pos {
			return fmt.Errorf("archive durable up to %s, want %s; streamer %+v", d, end, s.Status())
		}
		return nil
	})
}

// BinlogEnd returns where src's binlog ends now: the end of its last
// transaction, from SHOW BINARY LOGS, which every server has (MySQL 8.4
// dropped SHOW MASTER STATUS).
func BinlogEnd(t *testing.T, src *testbed.MariaDB) catalog.Position {
	t.Helper()
	files := src.BinlogFiles(t)
	if len(files) == 0 {
		t.Fatal("the server has no binlog")
	}
	last := files[len(files)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	return catalog.Position{File: filepath.Base(last), Pos: uint64(fi.Size())}
}
