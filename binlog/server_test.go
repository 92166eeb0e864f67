package binlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBinlogServer serves files on a loopback port until the test ends and
// returns the port; log receives the server's debug log.
func startBinlogServer(t *testing.T, files []ServedFile, log io.Writer) int {
	t.Helper()
	s, err := NewServer(files, ServerOptions{User: "repl", Password: "secret-pw",
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// txnEnds returns the end and GTID of every transaction in a binlog file.
func txnEnds(t *testing.T, path string) ([]uint64, []string) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := NewScanner(fh, 0)
	var tr Tracker
	var ends []uint64
	var gtids []string
	for {
		ev, pos, err := sc.Next()
		if errors.Is(err, io.EOF) {
			return ends, gtids
		}
		if err != nil {
			t.Fatal(err)
		}
		tx, err := tr.Feed(ev, pos)
		if err != nil {
			t.Fatal(err)
		}
		if tx != nil {
			ends = append(ends, tx.End)
			gtids = append(gtids, tx.GTID.String())
		}
	}
}

// slaveStatus returns SHOW SLAVE STATUS as a map, nil when replication is not configured.
func slaveStatus(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query("SHOW SLAVE STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		return nil
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for i, c := range cols {
		m[c] = vals[i].String
	}
	return m
}

// leg is one run of replication.
type leg struct {
	// from is where replication starts in the served file.
	from uint64
	// until is the UNTIL position in the served file; the replica must end
	// at reachFile:reachPos.
	until     uint64
	reachFile string
	reachPos  uint64
	// heartbeats is how many heartbeats (one a second) the replica must
	// receive, connected and idle, after reaching the end.
	heartbeats int
}

// replicateTo points the replica at the binlog server, replicates the leg
// and removes the replication configuration.
func replicateTo(t *testing.T, db *sql.DB, port int, file string, l leg) {
	t.Helper()
	for _, q := range []string{
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='repl', MASTER_PASSWORD='secret-pw', "+
			"MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d, MASTER_USE_GTID=no, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1", port, file, l.from),
		"SET GLOBAL slave_parallel_threads = 4",
		"SET GLOBAL slave_parallel_mode = 'optimistic'",
		fmt.Sprintf("START SLAVE UNTIL MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d", file, l.until),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	beatsAtEnd := -1 // heartbeats received when the replica reached the end
	testbed.Eventually(t, 60*time.Second, func() error {
		st := slaveStatus(t, db)
		if st["Last_SQL_Errno"] != "0" || st["Last_IO_Errno"] != "0" {
			t.Fatalf("replication error: io %s %s; sql %s %s", st["Last_IO_Errno"], st["Last_IO_Error"], st["Last_SQL_Errno"], st["Last_SQL_Error"])
		}
		if st["Relay_Master_Log_File"] != l.reachFile || st["Exec_Master_Log_Pos"] != strconv.FormatUint(l.reachPos, 10) {
			return fmt.Errorf("replica did not reach %s:%d: %v", l.reachFile, l.reachPos, st)
		}
		if st["Slave_IO_Running"] != "Yes" {
			t.Fatalf("I/O thread is %q at the end", st["Slave_IO_Running"])
		}
		var n string
		var beats int
		if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Slave_received_heartbeats'").Scan(&n, &beats); err != nil {
			t.Fatal(err)
		}
		if beatsAtEnd < 0 {
			beatsAtEnd = beats
		}
		if got := beats - beatsAtEnd; got < l.heartbeats {
			return fmt.Errorf("%d heartbeats received idle at the end, want %d", got, l.heartbeats)
		}
		return nil
	})
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if st := slaveStatus(t, db); st != nil {
		t.Fatalf("SHOW SLAVE STATUS after RESET SLAVE ALL: %v", st)
	}
}

// checksumsOf returns CHECKSUM TABLE of every user table.
func checksumsOf(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables
		WHERE table_schema LIKE 'd\_%' AND table_type = 'BASE TABLE' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	var out []string
	for _, n := range names {
		var name string
		var sum sql.NullString
		if err := db.QueryRow("CHECKSUM TABLE "+n+" EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out = append(out, name+"="+sum.String)
	}
	return strings.Join(out, " ")
}

// TestServerReplicatesRecordedBinlog points a real MariaDB replica at the
// binlog server serving a recorded MariaDB binlog, in two legs (from the
// start to a transaction in the middle, then from there, a position inside
// the file, to the end), and compares the tables with the same file
// applied by mariadb-binlog | mariadb.
func TestServerReplicatesRecordedBinlog(t *testing.T) {
	client := testbed.Binary(t, "mariadb", testbed.MariaDBInstall)
	dumpTool := testbed.Binary(t, "mariadb-binlog", testbed.MariaDBInstall)
	const name = "mysql-bin.000002" // the recorded file's name on its server
	for _, tc := range []struct{ name, path string }{
		{"crc32", "testdata/mariadb-10.11-crc32.binlog.000001"},
		{"none", "testdata/mariadb-10.11-none.binlog.000001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ends, gtids := txnEnds(t, tc.path)
			if len(ends) < 10 {
				t.Fatalf("only %d transactions in %s", len(ends), tc.path)
			}
			mid, last := len(ends)/2, len(ends)-1
			replica := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 2})
			db := replica.DB(t)
			var log syncBuffer
			size := fileSize(t, tc.path)
			for _, l := range []struct {
				leg
				end  uint64 // serving end, 0 for the whole file
				gtid string // gtid_slave_pos after the leg
			}{
				// From the start to a transaction in the middle.
				{leg{from: FirstEventPos, until: ends[mid], reachFile: name, reachPos: ends[mid]}, ends[mid], gtids[mid]},
				// From inside the file to the last transaction.
				{leg{from: ends[mid], until: ends[last], reachFile: name, reachPos: ends[last]}, ends[last], gtids[last]},
				// The rest: the Rotate the file ends with moves the replica to
				// the next file, where heartbeats must find it, idle.
				{leg{from: ends[last], until: size, reachFile: "mysql-bin.000003", reachPos: 4, heartbeats: 2}, 0, gtids[last]},
			} {
				port := startBinlogServer(t, []ServedFile{{Name: name, Path: tc.path, End: l.end}}, &log)
				replicateTo(t, db, port, name, l.leg)
				var pos string
				if err := db.QueryRow("SELECT @@GLOBAL.gtid_slave_pos").Scan(&pos); err != nil {
					t.Fatal(err)
				}
				if pos != l.gtid {
					t.Errorf("gtid_slave_pos after replicating to %s:%d = %q, want %q", l.reachFile, l.reachPos, pos, l.gtid)
				}
			}

			if testing.Verbose() {
				var qs []string
				for _, l := range strings.Split(log.String(), "\n") {
					_, q, ok := strings.Cut(l, " query=")
					if uq, err := strconv.Unquote(q); err == nil {
						q = uq
					}
					if ok && !slices.Contains(qs, q) {
						qs = append(qs, q)
					}
				}
				t.Logf("queries the replica sent:\n%s", strings.Join(qs, "\n"))
			}

			// The workload's XA transactions reuse a sequence number, which a
			// client replaying them trips over in strict mode; replication does not.
			ref := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 3, ExtraArgs: []string{"--gtid-strict-mode=OFF"}})
			dump := exec.CommandContext(t.Context(), dumpTool, "--no-defaults", "--stop-position="+strconv.FormatUint(ends[last], 10), tc.path)
			apply := exec.CommandContext(t.Context(), client, "--no-defaults", "--binary-mode", "--socket="+ref.Socket(), "-uroot")
			apply.Stdin, _ = dump.StdoutPipe()
			// Both programs write to it at once.
			var stderr syncBuffer
			apply.Stderr, dump.Stderr = &stderr, &stderr
			if err := apply.Start(); err != nil {
				t.Fatal(err)
			}
			if err := dump.Run(); err != nil {
				t.Fatalf("mariadb-binlog: %v: %s", err, stderr.String())
			}
			if err := apply.Wait(); err != nil {
				t.Fatalf("mariadb: %v: %s", err, stderr.String())
			}
			got, want := checksumsOf(t, db), checksumsOf(t, ref.DB(t))
			if got == "" || got != want {
				t.Errorf("replicated tables differ from mariadb-binlog's:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestServerRefusesUnknownFile checks that a dump request for a file the
// server does not hold ends in the error a source would give, not a hang.
func TestServerRefusesUnknownFile(t *testing.T) {
	dump := testbed.Binary(t, "mariadb-binlog", testbed.MariaDBInstall)
	var log syncBuffer
	path := "testdata/mariadb-10.11-crc32.binlog.000001"
	port := startBinlogServer(t, []ServedFile{{Name: "mysql-bin.000002", Path: path}}, &log)
	for _, tc := range []struct {
		name, file string
		wantErr    string
	}{
		{"known file", "mysql-bin.000002", ""},
		{"unknown file", "mysql-bin.000009", "Could not find first log file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), dump, "--no-defaults", "--read-from-remote-server", "--host=127.0.0.1",
				"--port="+strconv.Itoa(port), "--user=repl", "--password=secret-pw", tc.file)
			out, err := cmd.CombinedOutput()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("mariadb-binlog: %v: %s", err, childout.Last(string(out), 5, " | "))
				}
				local, err := exec.CommandContext(t.Context(), dump, "--no-defaults", path).Output()
				if err != nil {
					t.Fatal(err)
				}
				if n := strings.Count(string(out), "\n# at "); n != strings.Count(string(local), "\n# at ") {
					t.Errorf("remote read shows %d events, the local file %d", n, strings.Count(string(local), "\n# at "))
				}
				return
			}
			if err == nil || !strings.Contains(string(out), tc.wantErr) {
				t.Fatalf("got %v: %s; want an error containing %q", err, childout.Last(string(out), 5, " | "), tc.wantErr)
			}
		})
	}
}

func fileSize(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Size())
}

// TestPacketWriterSplitsLargePayloads checks the framing of payloads around
// the 16 MiB packet limit.
func TestPacketWriterSplitsLargePayloads(t *testing.T) {
	const maxPayload = 1<<24 - 1
	for _, tc := range []struct {
		name string
		size int // event size; the payload is one byte more
		want []int
	}{
		{"small", 100, []int{101}},
		{"just under", maxPayload - 2, []int{maxPayload - 1}},
		{"exactly the limit", maxPayload - 1, []int{maxPayload, 0}},
		{"one byte over", maxPayload, []int{maxPayload, 1}},
		{"two full packets and an empty one", maxPayload - 1 + maxPayload, []int{maxPayload, maxPayload, 0}},
		{"20 MiB", 20 << 20, []int{maxPayload, 20<<20 + 1 - maxPayload}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := make([]byte, tc.size)
			for i := range ev {
				ev[i] = byte(i)
			}
			var out bytes.Buffer
			w := &packetWriter{w: bufio.NewWriter(&out), seq: 1}
			if err := w.event(ev); err != nil {
				t.Fatal(err)
			}
			if err := w.w.Flush(); err != nil {
				t.Fatal(err)
			}
			b := out.Bytes()
			var sizes []int
			var payload []byte
			for seq := byte(1); len(b) > 0; seq++ {
				n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16
				if b[3] != seq {
					t.Fatalf("packet %d has sequence %d", seq, b[3])
				}
				sizes = append(sizes, n)
				payload = append(payload, b[4:4+n]...)
				b = b[4+n:]
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tc.want) {
				t.Errorf("packet sizes %v, want %v", sizes, tc.want)
			}
			if payload[0] != 0 || !bytes.Equal(payload[1:], ev) {
				t.Errorf("payload is not an OK byte and the event")
			}
		})
	}
}

// TestServerTLS connects to a binlog server that offers TLS: a client that
// verifies its certificate against the one NewServerTLS returned logs in,
// with MySQL's caching_sha2_password for a MySQL source; one that does not
// take TLS is refused before it can ask for anything;
// one that trusts other roots fails verification.
func TestServerTLS(t *testing.T) {
	for _, tc := range []struct {
		name, file string
	}{
		{"mariadb source", "testdata/mariadb-10.11-crc32.binlog.000001"},
		{"mysql source", "testdata/mysql-8.0.11.binlog.000001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.file); err != nil {
				t.Fatalf("the recorded binlog %s is part of the repository: %v", tc.file, err)
			}
			cfg, cert, err := NewServerTLS("127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewServer([]ServedFile{{Name: "mysql-bin.000001", Path: tc.file}}, ServerOptions{User: "repl", Password: "secret-pw", TLS: cfg})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, ln) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			})
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(cert) {
				t.Fatal("the certificate is not PEM")
			}
			connect := func(tlsCfg *tls.Config) error {
				c := gomysql.NewConfig()
				c.User, c.Passwd, c.Net, c.Addr = "repl", "secret-pw", "tcp", ln.Addr().String()
				c.AllowNativePasswords = true
				c.TLS = tlsCfg
				conn, err := gomysql.NewConnector(c)
				if err != nil {
					return err
				}
				db := sql.OpenDB(conn)
				defer db.Close()
				var v sql.NullString
				return db.QueryRowContext(t.Context(), "SELECT @@GLOBAL.server_id").Scan(&v)
			}
			if err := connect(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); err != nil {
				t.Errorf("a client verifying the server's certificate: %v", err)
			}
			// With mysql_native_password the refusal comes once the client
			// has authenticated; caching_sha2_password already refuses to
			// take the password in plaintext without an RSA key.
			if err := connect(nil); err == nil {
				t.Error("a client without TLS connected")
			} else {
				t.Logf("a client without TLS: %v", err)
			}
			if err := connect(&tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"}); err == nil {
				t.Error("a client trusting other roots connected")
			}
		})
	}
}
