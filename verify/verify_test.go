package verify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// buildArchive archives a MariaDB's binlog across three files with a
// logical snapshot in the middle, into a file:// archive under dir.
func buildArchive(t *testing.T, dir string) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := mysql.ParseDSN(db.PitrDSN())
	src, err := binlog.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sp, err := binlog.OpenSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &binlog.Streamer{Source: src, Store: st, Spool: sp, ServerID: 999, FlushInterval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))")
	for f := 0; f < 3; f++ {
		for i := 0; i < 20; i++ {
			db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
		}
		if f == 1 {
			if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1}); err != nil {
				t.Fatal(err)
			}
		}
		db.Exec(t, "FLUSH BINARY LOGS")
		time.Sleep(120 * time.Millisecond)
	}
	db.Exec(t, "INSERT INTO app.t (v) VALUES (UUID())")
	var file string
	var pos uint64
	var a, b any
	db.DB(t).QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &a, &b)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, d, _ := s.Uploader().Durable()
		if d.File == file && d.Pos >= pos {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("archive did not catch up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// segmentFiles returns the archive's segment data files in key order.
func segmentFiles(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(filepath.Join(dir, "binlog"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".zst") {
			out = append(out, p)
		}
		return nil
	})
	if len(out) < 3 {
		t.Fatalf("only %d segments", len(out))
	}
	return out
}

func snapshotFiles(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(filepath.Join(dir, "snapshots"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".zst") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestVerify(t *testing.T) {
	pristine := t.TempDir()
	buildArchive(t, pristine)
	cases := []struct {
		name       string
		damage     func(t *testing.T, dir string)
		damaged    bool
		want       string // in a bad segment, hole or snapshot problem
		restorable bool
	}{
		{name: "whole archive", damage: func(*testing.T, string) {}, restorable: true},
		{name: "a flipped byte in a segment", damaged: true, want: ".zst: ", damage: func(t *testing.T, dir string) {
			f := segmentFiles(t, dir)
			flip(t, f[len(f)-1])
		}, restorable: false},
		{name: "a segment deleted mid-chain", damaged: true, want: "missing", damage: func(t *testing.T, dir string) {
			f := segmentFiles(t, dir)
			os.Remove(f[len(f)-2])
		}},
		{name: "the newest segment truncated", damaged: true, want: ".zst: ", damage: func(t *testing.T, dir string) {
			f := segmentFiles(t, dir)
			fi, _ := os.Stat(f[len(f)-1])
			os.Truncate(f[len(f)-1], fi.Size()/2)
		}},
		{name: "a snapshot object deleted", damaged: true, want: "is missing", damage: func(t *testing.T, dir string) {
			os.Remove(snapshotFiles(t, dir)[0])
		}},
		{name: "a manifest deleted", damaged: false, damage: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(filepath.Dir(filepath.Dir(snapshotFiles(t, dir)[0])), "manifest.json"))
			matches, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "manifest.json"))
			for _, m := range matches {
				os.Remove(m)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "archive")
			if out, err := exec.Command("cp", "-a", pristine, dir).CombinedOutput(); err != nil {
				t.Fatalf("copy archive: %v %s", err, out)
			}
			c.damage(t, dir)
			st, err := file.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Run(t.Context(), st, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Damaged != c.damaged {
				t.Fatalf("damaged = %v, want %v: %+v", r.Damaged, c.damaged, r)
			}
			var said []string
			for _, tl := range r.Timelines {
				said = append(said, tl.Bad...)
			}
			for _, s := range r.Snapshots {
				said = append(said, s.Problems...)
			}
			if c.want != "" && !strings.Contains(strings.Join(said, "\n"), c.want) {
				t.Fatalf("report does not say %q: %v", c.want, said)
			}
			if c.name == "whole archive" {
				if len(r.Snapshots) != 1 || !r.Snapshots[0].Consistent || !r.Snapshots[0].Restorable || r.Snapshots[0].Window == nil {
					t.Fatalf("snapshot verdict: %+v", r.Snapshots)
				}
			}
			if c.name == "a manifest deleted" {
				if len(r.Snapshots) != 0 || len(r.Partial) != 1 {
					t.Fatalf("a snapshot without manifest must be reported partial, not complete: %+v", r)
				}
			}
			if c.name == "a segment deleted mid-chain" && r.Snapshots[0].Restorable {
				t.Fatal("a snapshot whose binlog chain is broken is reported restorable")
			}
		})
	}
}

func flip(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	// Rewrite in place so the recorded checksum (an extended attribute) stays.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}
