//go:build bench

// Measurements, not tests: run with go test -tags bench -run NAME -v ./snapshot/

package snapshot

import (
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestLogicalSpeed measures dump and load of one million rows. It is
// skipped unless MYSQL_PITR_SPEED=1, to keep the package's tests short.
func TestLogicalSpeed(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dst := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	logicalExec(t, src,
		"CREATE DATABASE sp",
		"CREATE TABLE sp.t (id INT PRIMARY KEY, a VARCHAR(64), b BIGINT, c DATETIME(6), d DECIMAL(12,2), KEY (b))",
		"INSERT INTO sp.t SELECT seq, MD5(seq), seq * 31, '2020-01-01' + INTERVAL seq SECOND, seq / 7 FROM sp.seq_1_to_1000000",
		"ANALYZE TABLE sp.t")
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := TakeLogical(t.Context(), LogicalOptions{Source: logicalConfig(t, src.PitrDSN()), Storage: st,
		ChunkRows: 100_000, SkipUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	dump := time.Since(start)
	start = time.Now()
	if err := LoadLogical(t.Context(), st, m, logicalConfig(t, dst.DSN()), LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	mb := float64(m.Bytes) / (1 << 20)
	t.Logf("1M rows, %.1f MiB (%.1f MiB stored): dump %s (%.1f MiB/s), load %s (%.1f MiB/s), writes blocked %s",
		mb, float64(m.StoredBytes)/(1<<20), dump, mb/dump.Seconds(), load, mb/load.Seconds(), m.WritesBlocked)
	logicalCompareChecksums(t, src.DB(t), dst.DB(t))
}
