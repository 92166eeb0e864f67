//go:build linux

package physical

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// testRestoreRejects checks that damaged snapshots and occupied
// datadirs are refused before the datadir is touched, and that an intact
// snapshot restores into a datadir that does not exist yet.
func testRestoreRejects(t *testing.T, src *testbed.MariaDB, source *binlog.Source) {
	st, storeDir := newStore(t)
	m, err := Take(t.Context(), Options{
		Source: source, Storage: st, PartSize: 1 << 20, TempDir: t.TempDir(), Logger: testLogger(t, nil),
	})
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	if len(m.Objects) < 3 {
		t.Fatalf("snapshot has %d parts, want at least 3", len(m.Objects))
	}
	partPath := func(dir string, i int) string {
		return filepath.Join(dir, filepath.FromSlash(catalog.SnapshotObjectKey(m.ID, m.Objects[i].Name)))
	}

	tests := []struct {
		name string
		// damage changes the copy of the store in dir and the manifest.
		damage      func(t *testing.T, dir string, m *catalog.Manifest)
		occupied    bool
		wantErr     bool
		wantIs      error
		wantMessage string
	}{
		{name: "intact"},
		{
			name: "byte flipped in a stored part",
			damage: func(t *testing.T, dir string, m *catalog.Manifest) {
				f, err := os.OpenFile(partPath(dir, 1), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fi, _ := f.Stat()
				b := make([]byte, 1)
				off := fi.Size() / 2
				f.ReadAt(b, off)
				b[0] ^= 0x40
				if _, err := f.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: true,
		},
		{
			name: "last part checksum differs from the manifest",
			damage: func(t *testing.T, _ string, m *catalog.Manifest) {
				m.Objects[len(m.Objects)-1].SHA256 = strings.Repeat("0", 64)
			},
			wantErr: true, wantIs: storage.ErrChecksum, wantMessage: m.Objects[len(m.Objects)-1].Name,
		},
		{
			name:    "part size differs from the manifest",
			damage:  func(t *testing.T, _ string, m *catalog.Manifest) { m.Objects[0].Size++ },
			wantErr: true, wantIs: storage.ErrChecksum,
		},
		{
			name:    "part missing",
			damage:  func(t *testing.T, dir string, m *catalog.Manifest) { os.Remove(partPath(dir, 2)) },
			wantErr: true, wantIs: storage.ErrNotExist,
		},
		{name: "datadir not empty", occupied: true, wantErr: true, wantIs: ErrDatadirNotEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(storeDir)); err != nil {
				t.Fatal(err)
			}
			// CopyFS drops the checksum xattr: the copy is read unverified
			// by the store, leaving detection to the restore itself.
			copyStore, err := file.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			mc := *m
			mc.Objects = append([]catalog.SnapshotObject(nil), m.Objects...)
			if tt.damage != nil {
				tt.damage(t, dir, &mc)
			}
			parent := t.TempDir()
			datadir := filepath.Join(parent, "data")
			if tt.occupied {
				if err := os.Mkdir(datadir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(datadir, "ibdata1"), []byte("precious"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err = Restore(t.Context(), copyStore, &mc, datadir, RestoreOptions{Logger: testLogger(t, nil)})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Restore: %v", err)
				}
				if _, err := os.Stat(filepath.Join(datadir, "bank", "accounts.ibd")); err != nil {
					t.Errorf("restored datadir: %v", err)
				}
				return
			}
			t.Logf("error: %v", err)
			if err == nil {
				t.Fatal("Restore succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMessage) {
				t.Errorf("err = %v, want it to name %q", err, tt.wantMessage)
			}
			entries, _ := os.ReadDir(parent)
			if tt.occupied {
				b, _ := os.ReadFile(filepath.Join(datadir, "ibdata1"))
				if string(b) != "precious" || len(entries) != 1 {
					t.Errorf("occupied datadir touched: %q, parent holds %d entries", b, len(entries))
				}
				return
			}
			if len(entries) != 0 {
				t.Errorf("after a refused restore the parent holds %v", entries)
			}
		})
	}
}

// testToolErrors checks a missing or mismatched tool is refused with
// an error naming the tool, the versions and how to install it.
func testToolErrors(t *testing.T, src *testbed.MariaDB, source *binlog.Source) {
	fake := func(t *testing.T, name, versionLine string) string {
		dir := t.TempDir()
		p := filepath.Join(dir, name)
		script := "#!/bin/sh\necho '" + versionLine + "' >&2\nexit 0\n"
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name     string
		path     func(t *testing.T) string // PATH; "" keeps it
		toolPath func(t *testing.T) string
		wantIs   error
		wantMsg  []string
	}{
		{
			name:    "not on PATH",
			path:    func(t *testing.T) string { return t.TempDir() },
			wantIs:  ErrToolMissing,
			wantMsg: []string{"mariadb-backup", "mariabackup", "apt-get install mariadb-backup"},
		},
		{
			name:     "tool path does not exist",
			toolPath: func(t *testing.T) string { return filepath.Join(t.TempDir(), "mariabackup") },
			wantIs:   ErrToolMissing,
			wantMsg:  []string{"mariabackup", "apt-get install mariadb-backup"},
		},
		{
			name: "older tool on PATH",
			path: func(t *testing.T) string {
				return fake(t, "mariabackup", "mariabackup based on MariaDB server 10.6.21-MariaDB debian-linux-gnu (x86_64)")
			},
			wantIs:  ErrToolVersion,
			wantMsg: []string{"10.6.21-MariaDB", src.Version(), "10.11"},
		},
		{
			name: "newer tool by path",
			toolPath: func(t *testing.T) string {
				return filepath.Join(fake(t, "mariadb-backup", "mariadb-backup based on MariaDB server 11.4.5-MariaDB Linux (x86_64)"), "mariadb-backup")
			},
			wantIs:  ErrToolVersion,
			wantMsg: []string{"11.4.5-MariaDB", src.Version()},
		},
		{
			name: "not a backup tool",
			toolPath: func(t *testing.T) string {
				return filepath.Join(fake(t, "mariabackup", "hello"), "mariabackup")
			},
			wantMsg: []string{"no server version", "hello"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != nil {
				t.Setenv("PATH", tt.path(t))
			}
			opts := Options{Source: source, Storage: emptyStore(t), TempDir: t.TempDir()}
			if tt.toolPath != nil {
				opts.ToolPath = tt.toolPath(t)
			}
			m, err := Take(t.Context(), opts)
			t.Logf("error: %v", err)
			if err == nil || m != nil {
				t.Fatalf("Take = %v, %v; want an error", m, err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want %v", err, tt.wantIs)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func emptyStore(t *testing.T) storage.Storage {
	st, _ := newStore(t)
	return st
}

// testSecrets runs a fake tool that records how it was called: the
// password reaches it only through the option file named first on its
// command line, never argv or the environment, and the file is gone after.
func testSecrets(t *testing.T, src *testbed.MariaDB, source *binlog.Source) {
	dir := t.TempDir()
	record := filepath.Join(dir, "record")
	tool := filepath.Join(dir, "mariadb-backup")
	script := `#!/bin/sh
if [ "$1" = --version ]; then echo 'mariadb-backup based on MariaDB server ` + src.Version() + ` Linux' >&2; exit 0; fi
cnf=${1#--defaults-extra-file=}
{ echo "ARGV: $*"; echo "MODE: $(stat -c %a "$cnf")"; echo "CNF: $(tr "\n" " " < "$cnf")"; echo "CNFPATH: $cnf"; env | sed 's/^/ENV: /'; } > ` + record + `
echo 'Error: simulated failure' >&2
exit 3
`
	if err := os.WriteFile(tool, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// Every variable a user may keep the password in: none reaches the tool.
	t.Setenv("MYSQL_PWD", src.PitrPassword())
	t.Setenv("MYSQL_PITR_PASSWORD", src.PitrPassword())
	t.Setenv("MYSQL_PITR_DSN", "pitr:"+src.PitrPassword()+"@tcp(127.0.0.1:1)/")
	var logs syncBuffer
	_, err := Take(t.Context(), Options{
		Source: source, Storage: emptyStore(t), ToolPath: tool, TempDir: t.TempDir(), Logger: testLogger(t, &logs),
	})
	if err == nil || !strings.Contains(err.Error(), "simulated failure") {
		t.Fatalf("err = %v, want the tool's failure with its log", err)
	}
	b, err2 := os.ReadFile(record)
	if err2 != nil {
		t.Fatal(err2)
	}
	rec := string(b)
	pass := src.PitrPassword()
	var argv, mode, cnf, cnfPath string
	var env []string
	for _, l := range strings.Split(rec, "\n") {
		switch k, v, _ := strings.Cut(l, ": "); k {
		case "ARGV":
			argv = v
		case "MODE":
			mode = v
		case "CNF":
			cnf += v
		case "CNFPATH":
			cnfPath = v
		case "ENV":
			env = append(env, v)
		}
	}
	if !strings.HasPrefix(argv, "--defaults-extra-file=") {
		t.Errorf("argv %q does not start with --defaults-extra-file", argv)
	}
	if strings.Contains(argv, pass) {
		t.Errorf("argv holds the password")
	}
	for _, kv := range env {
		if strings.Contains(kv, pass) {
			t.Errorf("environment holds the password: %s=…", strings.SplitN(kv, "=", 2)[0])
		}
	}
	if mode != "600" {
		t.Errorf("option file mode %s, want 600", mode)
	}
	if !strings.Contains(cnf, pass) {
		t.Errorf("option file lacks the password")
	}
	if _, err := os.Stat(cnfPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("option file %s left behind: %v", cnfPath, err)
	}
	for _, s := range []string{"--backup", "--stream=xbstream", "--user=pitr", "--port=" + strconv.Itoa(src.Port())} {
		if !strings.Contains(argv, s) {
			t.Errorf("argv %q lacks %s", argv, s)
		}
	}
	if strings.Contains(err.Error(), pass) || strings.Contains(logs.String(), pass) {
		t.Errorf("the error or the log holds the password")
	}
}

// cancelOnStart cancels when the tool has started, recording its pid.
type cancelOnStart struct {
	slog.Handler
	cancel context.CancelFunc
	pid    *atomic.Int64
}

func (h cancelOnStart) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "physical backup started" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "pid" {
				h.pid.Store(a.Value.Int64())
			}
			return true
		})
		h.cancel()
	}
	return h.Handler.Handle(ctx, r)
}

func (h cancelOnStart) WithAttrs(as []slog.Attr) slog.Handler {
	return cancelOnStart{h.Handler.WithAttrs(as), h.cancel, h.pid}
}

// testAbandoned checks that a cancelled snapshot and one whose upload
// fails leave no manifest, no tool process and no scratch files.
func testAbandoned(t *testing.T, _ *testbed.MariaDB, source *binlog.Source) {
	tests := []struct {
		name   string
		cancel bool
		fail   string // part whose Put fails
		wantIs error
	}{
		{name: "cancelled right after start", cancel: true, wantIs: context.Canceled},
		{name: "second part fails to store", fail: xbstreamPart(2), wantIs: errPhysInjected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := newStore(t)
			var store storage.Storage = st
			if tt.fail != "" {
				store = &failingStore{Storage: st, failKey: tt.fail}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var pid atomic.Int64
			var h slog.Handler = slog.NewTextHandler(testWriter{t}, nil)
			if tt.cancel {
				h = cancelOnStart{Handler: h, cancel: cancel, pid: &pid}
			} else {
				h = cancelOnStart{Handler: h, cancel: func() {}, pid: &pid}
			}
			tmp := t.TempDir()
			m, err := Take(ctx, Options{
				Source: source, Storage: store, PartSize: 1 << 20, TempDir: tmp, Logger: slog.New(h),
			})
			t.Logf("error: %v", err)
			if err == nil || m != nil {
				t.Fatalf("Take = %v, %v; want an error", m, err)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want %v", err, tt.wantIs)
			}
			p := int(pid.Load())
			if p == 0 {
				t.Fatal("the tool never started")
			}
			// The tool and its group are gone, and reaped: not even a zombie.
			if err := syscall.Kill(p, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("tool process %d: kill -0 = %v, want ESRCH", p, err)
			}
			if err := syscall.Kill(-p, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("tool process group %d: kill -0 = %v, want ESRCH", p, err)
			}
			snaps, err := catalog.LoadSnapshots(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			if len(snaps.Complete) != 0 {
				t.Errorf("a manifest was written: %+v", snaps.Complete[0])
			}
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Errorf("scratch left in TempDir: %v", entries)
			}
		})
	}
}

// TestFailures runs the failure cases on one server, since each
// server start costs seconds.
func TestFailures(t *testing.T) {
	testbed.Binary(t, "mariadb-backup", testbed.MariaDBInstall)
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	t.Logf("server started in %s", src.StartupTime())
	fillBank(t, src, 8)
	source := sourceOf(t, src)
	for _, tt := range []struct {
		name string
		run  func(*testing.T, *testbed.MariaDB, *binlog.Source)
	}{
		{"tool errors", testToolErrors},
		{"secrets", testSecrets},
		{"abandoned", testAbandoned},
		{"restore rejects", testRestoreRejects},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, src, source) })
	}
}
