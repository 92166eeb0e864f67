//go:build bench && linux

package physical

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestThroughput compares Take with the tool piped through
// zstd -1 into a file by hand, on a sysbench dataset of about 500 MB. It runs
// only with PITR_PHYS_BENCH=1: it takes minutes. PITR_PHYS_BENCH_ROWS sets
// rows per table (4 tables; default 500000) and PITR_PHYS_BENCH_CONC the
// compression concurrency (default DefaultConcurrency).
func TestThroughput(t *testing.T) {
	tool := testbed.Binary(t, "mariadb-backup", testbed.MariaDBInstall)
	sysbench := testbed.Binary(t, "sysbench", "apt-get install sysbench")
	zstdCLI := testbed.Binary(t, "zstd", "apt-get install zstd")
	rows := 500000
	if v, err := strconv.Atoi(os.Getenv("PITR_PHYS_BENCH_ROWS")); err == nil {
		rows = v
	}
	conc, _ := strconv.Atoi(os.Getenv("PITR_PHYS_BENCH_CONC"))

	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{ExtraArgs: []string{"--innodb-buffer-pool-size=1G"}})
	src.Exec(t, "CREATE DATABASE sbtest")
	begin := time.Now()
	out, err := exec.CommandContext(t.Context(), sysbench, "oltp_read_write", "--db-driver=mysql",
		"--mysql-host=127.0.0.1", "--mysql-port="+strconv.Itoa(src.Port()), "--mysql-user=root", "--mysql-db=sbtest",
		"--tables=4", "--table-size="+strconv.Itoa(rows), "--threads=4", "prepare").CombinedOutput()
	if err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	var dataMB float64
	src.DB(t).QueryRowContext(t.Context(), "SELECT SUM(data_length+index_length)/1048576 FROM information_schema.tables WHERE table_schema='sbtest'").Scan(&dataMB)
	t.Logf("sysbench prepare: %d rows x 4 tables, %.0f MB of tables, in %s", rows, dataMB, time.Since(begin))

	// Root has no password; both runs use the same account and address.
	cfg, err := mysql.ParseDSN(src.DSN())
	if err != nil {
		t.Fatal(err)
	}
	source, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()

	// Let InnoDB finish flushing what prepare wrote, so each run copies
	// about the same redo; then one untimed run warms the page cache.
	src.Exec(t, "SET GLOBAL innodb_max_dirty_pages_pct = 0")
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		var name string
		var dirty int
		src.DB(t).QueryRowContext(t.Context(), "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty)
		if dirty == 0 {
			break
		}
	}
	warm, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Take(t.Context(), Options{Source: source, Storage: warm, TempDir: t.TempDir(), Concurrency: conc}); err != nil {
		t.Fatal(err)
	}

	var ours, hand, oursCPU, handCPU []time.Duration
	var oursBytes, handBytes int64
	for i := range 3 {
		// Ours.
		dir := t.TempDir()
		st, err := file.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		cpu0 := cpuTime()
		start := time.Now()
		m, err := Take(t.Context(), Options{Source: source, Storage: st, TempDir: t.TempDir(), Concurrency: conc})
		if err != nil {
			t.Fatal(err)
		}
		d, cpu := time.Since(start), cpuTime()-cpu0
		ours, oursCPU = append(ours, d), append(oursCPU, cpu)
		oursBytes = m.StoredBytes
		t.Logf("run %d Take: %s (cpu %s), %d bytes -> %d stored, writes blocked %s", i+1, d, cpu, m.Bytes, m.StoredBytes, m.WritesBlocked)
		os.RemoveAll(dir)

		// By hand: the same tool, piped through zstd -1 into a file, then
		// fsynced as the file store does.
		dir = t.TempDir()
		target := filepath.Join(dir, "target")
		os.Mkdir(target, 0o700)
		outFile := filepath.Join(dir, "backup.xbstream.zst")
		script := tool + " --no-defaults --backup --stream=xbstream --target-dir=" + target +
			" --host=127.0.0.1 --port=" + strconv.Itoa(src.Port()) + " --protocol=tcp --user=root 2>" + filepath.Join(dir, "log") +
			" | " + zstdCLI + " -1 -q > " + outFile + " && sync " + outFile
		cpu0 = cpuTime()
		start = time.Now()
		if out, err := exec.CommandContext(t.Context(), "bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("by hand: %v\n%s\n%s", err, out, log)
		}
		d, cpu = time.Since(start), cpuTime()-cpu0
		hand, handCPU = append(hand, d), append(handCPU, cpu)
		fi, _ := os.Stat(outFile)
		handBytes = fi.Size()
		t.Logf("run %d by hand: %s (cpu %s), %d bytes stored", i+1, d, cpu, fi.Size())
		os.RemoveAll(dir)
	}
	for _, s := range [][]time.Duration{ours, hand, oursCPU, handCPU} {
		slices.Sort(s)
	}
	t.Logf("median Take %s (cpu %s, stored %d), by hand %s (cpu %s, stored %d): overhead %.1f%% wall, %.1f%% cpu",
		ours[1], oursCPU[1], oursBytes, hand[1], handCPU[1], handBytes,
		100*(float64(ours[1])/float64(hand[1])-1), 100*(float64(oursCPU[1])/float64(handCPU[1])-1))
}

// cpuTime is the CPU time of this process and its reaped children (the
// tool, and the shell pipeline with its tool and zstd), user plus system.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}
