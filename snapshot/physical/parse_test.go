package physical

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func TestParseToolVersion(t *testing.T) {
	tests := []struct {
		name, tool, out string
		wantServer      string
		wantLabel       string
		wantErr         bool
	}{
		{
			name: "mariadb-backup 10.11", tool: "mariadb-backup",
			out:        "mariadb-backup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)\n",
			wantServer: "10.11.19-MariaDB", wantLabel: "mariadb-backup 10.11.19-MariaDB",
		},
		{
			name: "mariabackup 10.6 with a warning first", tool: "mariabackup",
			out:        "mariabackup: unknown variable 'foo'\nmariabackup based on MariaDB server 10.6.21-MariaDB Linux (x86_64)\n",
			wantServer: "10.6.21-MariaDB", wantLabel: "mariabackup 10.6.21-MariaDB",
		},
		{
			name: "xtrabackup 8.0", tool: "xtrabackup",
			out:        "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64) (revision id: 6beb4b49)\n",
			wantServer: "8.0.35", wantLabel: "xtrabackup 8.0.35-30 (8.0.35)",
		},
		{name: "not a backup tool", tool: "mariabackup", out: "GNU bash, version 5.2.15\n", wantErr: true},
		{name: "empty", tool: "mariabackup", out: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseToolVersion(tt.tool, tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got.Server != tt.wantServer || got.Label != tt.wantLabel {
				t.Errorf("got %+v, want server %q label %q", got, tt.wantServer, tt.wantLabel)
			}
		})
	}
}

func TestCheckVersion(t *testing.T) {
	tests := []struct {
		name, tool, server string
		wantErr            bool
	}{
		{"same release", "10.11.19-MariaDB", "10.11.19-MariaDB-0+deb12u1-log", false},
		{"other patch", "10.11.6-MariaDB", "10.11.19-MariaDB-log", false},
		{"handshake prefix", "10.11.6-MariaDB", "5.5.5-10.11.19-MariaDB", false},
		{"older minor", "10.6.21-MariaDB", "10.11.19-MariaDB-log", true},
		{"newer major", "11.4.2-MariaDB", "10.11.19-MariaDB-log", true},
		{"minor prefix is not a match", "10.1.48-MariaDB", "10.11.19-MariaDB", true},
		{"mysql", "8.0.35", "8.0.36", false},
		{"mysql 8.4 server, 8.0 tool", "8.0.35", "8.4.0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkVersion("/usr/bin/mariabackup", toolVersion{Server: tt.tool}, tt.server)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrToolVersion) {
				t.Errorf("err = %v, want ErrToolVersion", err)
			}
			for _, v := range []string{tt.tool, tt.server} {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("err = %q, does not name version %s", err, v)
				}
			}
		})
	}
}

// log1011 is what mariadb-backup 10.11.19 printed around its locks and at
// its end during a streamed backup (files elided).
const log1011 = `[00] 2026-11-27 12:16:34 Starting BACKUP STAGE START
[00] 2026-11-27 12:16:34 Acquiring BACKUP LOCKS...
[00] 2026-11-27 12:16:34 Acquired locks for BACKUP STAGE START
[00] 2026-11-27 12:16:34 Finished BACKUP STAGE START
[00] 2026-11-27 12:16:34 Starting BACKUP STAGE FLUSH
[00] 2026-11-27 12:16:34 Finished BACKUP STAGE FLUSH
[00] 2026-11-27 12:16:34 Started BACKUP STAGE BLOCK_DDL
[00] 2026-11-27 12:16:34 Acquired locks for BACKUP STAGE BLOCK_DDL
[00] 2026-11-27 12:16:34 Finished BACKUP STAGE BLOCK_DDL
[00] 2026-11-27 12:16:34 Starting BACKUP STAGE BLOCK_COMMIT
[00] 2026-11-27 12:16:34 Acquired locks for BACKUP STAGE BLOCK_COMMIT
[00] 2026-11-27 12:16:35 Streaming xtrabackup_binlog_info
[00] 2026-11-27 12:16:35 Executing FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS...
[00] 2026-11-27 12:16:35 Finishing BACKUP STAGE BLOCK_COMMIT
[00] 2026-11-27 12:16:35 Starting BACKUP STAGE END
[00] 2026-11-27 12:16:35 Executing BACKUP STAGE END
[00] 2026-11-27 12:16:35 All tables unlocked
[00] 2026-11-27 12:16:35 Backup created in directory '/tmp/physcratch/bt/'
[00] 2026-11-27 12:16:35 MySQL binlog position: filename 'mysql-bin.000002', position '1645', GTID of the last change '0-7-7'
[00] 2026-11-27 12:16:35 Streaming backup-my.cnf
[00] 2026-11-27 12:16:35 Redo log (from LSN 44894 to 48264) was copied.
[00] 2026-11-27 12:16:35 completed OK!
`

func TestToolLog(t *testing.T) {
	tests := []struct {
		name       string
		log        string
		wantFound  bool
		wantPos    catalog.Position
		wantGTID   string
		wantDone   bool
		wantLocked bool
		// commit, ddl and unlock are the 0-based lines the lock marks are on
		commit, ddl, unlock int
	}{
		{
			name: "mariadb 10.11", log: log1011,
			wantFound: true, wantPos: catalog.Position{File: "mysql-bin.000002", Pos: 1645}, wantGTID: "0-7-7",
			wantDone: true, wantLocked: true, commit: 9, ddl: 6, unlock: 16,
		},
		{
			name:      "multi-domain gtid",
			log:       "[00] 2026-11-27 12:16:35 MySQL binlog position: filename 'mariadb-bin.000096', position '568', GTID of the last change '0-1-2,1-2-9'\n",
			wantFound: true, wantPos: catalog.Position{File: "mariadb-bin.000096", Pos: 568}, wantGTID: "0-1-2,1-2-9",
		},
		{
			name:      "no gtid state",
			log:       "[00] 2026-11-27 12:16:35 MySQL binlog position: filename 'binlog.000003', position '157'\n",
			wantFound: true, wantPos: catalog.Position{File: "binlog.000003", Pos: 157},
		},
		{
			name: "mysql gtid set over lines",
			log: "MySQL binlog position: filename 'binlog.000003', position '157', GTID of the last change '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n" +
				"4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3'\n" +
				"completed OK!\n",
			wantFound: true, wantPos: catalog.Position{File: "binlog.000003", Pos: 157},
			wantGTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3",
			wantDone: true,
		},
		{
			name:       "xtrabackup with FTWRL",
			log:        "Executing FLUSH NO_WRITE_TO_BINLOG TABLES...\nExecuting FLUSH TABLES WITH READ LOCK...\nStarting to backup non-InnoDB tables and files\nAll tables unlocked\ncompleted OK!\n",
			wantDone:   true,
			wantLocked: true, commit: 1, ddl: -1, unlock: 3,
		},
		{name: "binlog disabled, failed", log: "[00] 2026-11-27 12:16:34 Error: cannot connect\n"},
	}
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s toolLog
			for i, l := range strings.Split(strings.TrimSuffix(tt.log, "\n"), "\n") {
				s.line(at(i), l)
			}
			if s.found != tt.wantFound || s.pos != tt.wantPos || s.gtid != tt.wantGTID {
				t.Errorf("got found=%v pos=%s gtid=%q, want %v %s %q", s.found, s.pos, s.gtid, tt.wantFound, tt.wantPos, tt.wantGTID)
			}
			if s.completed != tt.wantDone {
				t.Errorf("completed = %v, want %v", s.completed, tt.wantDone)
			}
			lt := s.locks(at(1000))
			if lt.Seen != tt.wantLocked {
				t.Fatalf("locks seen = %v, want %v", lt.Seen, tt.wantLocked)
			}
			if !tt.wantLocked {
				return
			}
			if want := at(tt.unlock).Sub(at(tt.commit)); lt.Commits != want {
				t.Errorf("commits blocked %s, want %s", lt.Commits, want)
			}
			if tt.ddl >= 0 {
				if want := at(tt.unlock).Sub(at(tt.ddl)); lt.DDL != want {
					t.Errorf("ddl blocked %s, want %s", lt.DDL, want)
				}
			}
		})
	}
}

func TestToolLogTailIsBounded(t *testing.T) {
	var s toolLog
	long := strings.Repeat("x", 10*toolLogLineMax)
	for range 10 * toolLogTailLines {
		s.line(time.Now(), long)
	}
	s.line(time.Now(), "the end")
	tail := s.Tail()
	if !strings.HasSuffix(tail, "the end") {
		t.Errorf("tail does not end with the last line")
	}
	if max := toolLogTailLines * (toolLogLineMax + 8); len(tail) > max {
		t.Errorf("tail is %d bytes, want at most %d", len(tail), max)
	}
}

func FuzzToolLog(f *testing.F) {
	for _, l := range strings.Split(log1011, "\n") {
		f.Add(l)
	}
	f.Add("MySQL binlog position: filename 'a', position '99999999999999999999999'")
	f.Add("MySQL binlog position: filename 'a', position '4', GTID of the last change '")
	f.Fuzz(func(t *testing.T, line string) {
		var s toolLog
		s.line(time.Now(), line)
		s.line(time.Now(), line)
		_ = s.locks(time.Now())
		if s.found && s.pos.File == "" {
			t.Errorf("found a position with an empty file in %q", line)
		}
	})
}

// TestDefaultsFile checks that the client library reads back the
// password exactly, whatever characters it holds.
func TestDefaultsFile(t *testing.T) {
	printDefaults := testbed.Binary(t, "my_print_defaults", "apt-get install mariadb-client")
	tests := []struct{ name, password string }{
		{"hex", "0123456789abcdef"},
		{"comment and separators", `p#ss;word with spaces`},
		{"quotes and backslashes", `a"b'c\d\\e\n`},
		{"leading and trailing space", "  pad  "},
		{"newline and tab", "line1\nline2\tx"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, err := defaultsFile(t.TempDir(), tt.password)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("mode %o, want 600", got)
			}
			out, err := exec.CommandContext(t.Context(), printDefaults, "--defaults-file="+path, "client").Output()
			if err != nil {
				t.Fatalf("my_print_defaults: %v", err)
			}
			got := strings.TrimSuffix(string(out), "\n")
			if want := "--password=" + tt.password; got != want {
				t.Errorf("read back %q, want %q", got, want)
			}
		})
	}
}

// TestParts checks the stream is cut at part boundaries, each part's
// size and checksum are of its uncompressed bytes, and the parts concatenate
// to the stream.
func TestParts(t *testing.T) {
	const part = 1 << 20
	tests := []struct {
		name      string
		size      int
		wantParts int
	}{
		{"one byte", 1, 1},
		{"exactly one part", part, 1},
		{"one byte over", part + 1, 2},
		{"several parts", 3*part + 12345, 4},
	}
	for _, workers := range []int{1, 2, 4} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%d workers/%s", workers, tt.name), func(t *testing.T) {
				st := storagetest.NewMemory()
				id := catalog.NewSnapshotID(time.Now())
				p, err := newPartWriter(t.Context(), st, id, formatXbstream, part, zstd.SpeedFastest, workers)
				if err != nil {
					t.Fatal(err)
				}
				data := make([]byte, tt.size)
				for i := range data {
					data[i] = byte(i*7 + i/1000)
				}
				// Odd-sized writes cross part boundaries inside one Write.
				for rest := data; len(rest) > 0; {
					n := min(len(rest), 300001)
					if _, err := p.Write(rest[:n]); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				if len(p.objects) != tt.wantParts {
					t.Fatalf("%d parts, want %d", len(p.objects), tt.wantParts)
				}
				var joined bytes.Buffer
				for i, o := range p.objects {
					if o.Name != xbstreamPart(i+1) {
						t.Errorf("part %d is named %s", i+1, o.Name)
					}
					rc, err := st.Open(t.Context(), catalog.SnapshotObjectKey(id, o.Name))
					if err != nil {
						t.Fatal(err)
					}
					dec, err := zstd.NewReader(rc)
					if err != nil {
						t.Fatal(err)
					}
					b, err := io.ReadAll(dec)
					dec.Close()
					rc.Close()
					if err != nil {
						t.Fatal(err)
					}
					sum := sha256.Sum256(b)
					if int64(len(b)) != o.Size || hex.EncodeToString(sum[:]) != o.SHA256 {
						t.Errorf("part %s: %d bytes sha %s, recorded %d %s", o.Name, len(b), hex.EncodeToString(sum[:]), o.Size, o.SHA256)
					}
					joined.Write(b)
				}
				if !bytes.Equal(joined.Bytes(), data) {
					t.Errorf("parts do not concatenate to the stream")
				}
			})
		}
	}
}

// TestPartsStoreFailure checks a failed Put surfaces as the writer's
// error and that nothing is stored under the failed key.
func TestPartsStoreFailure(t *testing.T) {
	mem := storagetest.NewMemory()
	st := &failingStore{Storage: mem, failKey: xbstreamPart(2)}
	id := catalog.NewSnapshotID(time.Now())
	p, err := newPartWriter(context.Background(), st, id, formatXbstream, 1<<20, zstd.SpeedFastest, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Write(make([]byte, 3<<20))
	if !errors.Is(err, errPhysInjected) {
		t.Fatalf("write: %v, want the injected error", err)
	}
	p.Abort(err)
	objs, err := mem.List(t.Context(), catalog.SnapshotPrefixOf(id))
	if err != nil {
		t.Fatal(err)
	}
	// Part 2 failed; the part after it may have been stored while part 2's
	// Put was finishing (they overlap), as an orphan of this partial snapshot.
	for _, o := range objs {
		if filepath.Base(o.Key) == xbstreamPart(2) {
			t.Errorf("the failed part was stored: %v", objs)
		}
	}
	if len(objs) == 0 || filepath.Base(objs[0].Key) != xbstreamPart(1) {
		t.Errorf("stored %v, want part 1 first", objs)
	}
}

var errPhysInjected = errors.New("injected put failure")

// failingStore fails the Put of keys ending in failKey, after reading part
// of the input as a real upload would.
type failingStore struct {
	storage.Storage
	failKey string
}

func (s *failingStore) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if strings.HasSuffix(key, s.failKey) {
		_, _ = io.CopyN(io.Discard, r, 4096)
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, errPhysInjected)
	}
	return s.Storage.Put(ctx, key, r, opts)
}

func TestRedactGrants(t *testing.T) {
	tests := []struct{ in, want string }{
		{"GRANT RELOAD ON *.* TO `pitr`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'",
			"GRANT RELOAD ON *.* TO `pitr`@`%` IDENTIFIED BY PASSWORD <redacted>"},
		{"GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED VIA ed25519 USING 'abcdef'", "GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED VIA ed25519 USING <redacted>"},
		{"CREATE USER x IDENTIFIED WITH caching_sha2_password AS '$A$005$xyz'", "CREATE USER x IDENTIFIED WITH caching_sha2_password AS <redacted>"},
		{"[00] 2026-11-27 12:16:35 Connecting to server", "[00] 2026-11-27 12:16:35 Connecting to server"},
	}
	for _, tt := range tests {
		if got := redactGrants(tt.in); got != tt.want {
			t.Errorf("redactGrants(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
