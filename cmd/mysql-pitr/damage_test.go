package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/archivetest"
	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/snapshot"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
)

// TestPlaintextChecksumMismatch flips a byte in a segment of an
// unencrypted file:// archive: verify and restore name a checksum mismatch,
// and say nothing of encryption, which the archive does not use.
func TestPlaintextChecksumMismatch(t *testing.T) {
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	root := t.TempDir()
	st, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	streamer := archivetest.Stream(t, src, st, 100*time.Millisecond)
	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	cfg, _ := mysql.ParseDSN(src.PitrDSN())
	if _, err := snapshot.TakeLogical(t.Context(), snapshot.LogicalOptions{Source: cfg, Storage: st, Threads: 1, SkipUsers: true}); err != nil {
		t.Fatal(err)
	}
	src.Exec(t, "INSERT INTO app.t VALUES (1), (2), (3)")
	archivetest.WaitArchived(t, streamer, src)
	find := func(dir, suffix string) string {
		var found string
		filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, suffix) {
				found = p
			}
			return nil
		})
		if found == "" {
			t.Fatalf("no %s object under %s", suffix, dir)
		}
		return found
	}
	// flip flips a byte of the stored file in place: the checksum the store
	// recorded stays as it was.
	flip := func(path string) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x40
		if _, err := f.WriteAt(b, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}

	storageURL := "file://" + root
	for _, tc := range []struct {
		name   string
		victim string
	}{
		{"a segment", find("binlog", ".zst")},
		// The empty table's chunk is shorter than an age header.
		{"a snapshot chunk of 9 bytes", find("snapshots", "data-000001.tsv.zst")},
	} {
		rel, _ := filepath.Rel(root, tc.victim)
		flip(tc.victim)
		for _, command := range []struct {
			name string
			args []string
		}{
			{"verify", []string{"verify", "--storage", storageURL}},
			{"restore", []string{"restore", "--storage", storageURL, "--to", "latest", "--datadir", filepath.Join(t.TempDir(), "data"), "--threads", "1"}},
		} {
			t.Run(tc.name+"/"+command.name, func(t *testing.T) {
				stdout, stderr, code := runCLI(t, t.Context(), command.args...)
				out := stdout + stderr
				if code != 1 || !strings.Contains(out, filepath.ToSlash(rel)) || !strings.Contains(out, "checksum mismatch") || strings.Contains(out, "encrypt") {
					t.Errorf("exit %d; want exit 1 naming %s and a checksum mismatch, not encryption:\n%s", code, rel, childout.Last(out, 5, "\n"))
				}
			})
		}
		flip(tc.victim) // back as it was
	}
}
