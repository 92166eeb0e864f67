package file

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// flipByte damages the file in place, keeping its checksum attribute.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		t.Fatalf("corrupt %s: size %v, %v", path, fi.Size(), err)
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	b[0] ^= 0x80
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage { return newStore(t) }, storagetest.Options{
		Corrupt: func(t *testing.T, s storage.Storage, key string) {
			flipByte(t, filepath.Join(s.(*Store).Root(), filepath.FromSlash(key)))
		},
	})
}

func TestKeyValidation(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		key string
		ok  bool
	}{
		{"single", true},
		{"a/b/c.zst", true},
		{"binlog/0001/0000000003/000000000004-000000001234.zst", true},
		{"a..b", true},
		{".hidden", true},
		{"", false},
		{"/etc/passwd", false},
		{"../escape", false},
		{"a/../../escape", false},
		{"a/..", false},
		{".", false},
		{"a/./b", false},
		{"a//b", false},
		{"a/", false},
		{"a\\b", false},
		{"..\\escape", false},
		{"a\x00b", false},
		{"\xff", false},
		{strings.Repeat("k", storage.MaxKeyLen+1), false},
		{".tmp-123", false},
		{"a/.tmp-x/b", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := s.Put(t.Context(), tt.key, strings.NewReader("x"), storage.PutOptions{})
			if tt.ok && err != nil {
				t.Fatalf("Put(%q): %v", tt.key, err)
			}
			if !tt.ok && !errors.Is(err, storage.ErrInvalidKey) {
				t.Fatalf("Put(%q): error = %v, want ErrInvalidKey", tt.key, err)
			}
		})
	}
	// Nothing escaped the root.
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.Root()), "escape")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file escaped the root: %v", err)
	}
}

func TestTempFilesHidden(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	// A Put in progress: its temp file exists while the reader blocks.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "dir/obj", pr, storage.PutOptions{})
		done <- err
	}()
	if _, err := pw.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 0 {
		t.Errorf("List during a Put = %v, want nothing", list)
	}
	if _, err := s.Stat(ctx, "dir/obj"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat during a Put: %v, want ErrNotExist", err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	if list, err := s.List(ctx, ""); err != nil || len(list) != 1 {
		t.Errorf("List after the Put = %v, %v; want one object", list, err)
	}
}

func TestStaleTempSwept(t *testing.T) {
	root := t.TempDir()
	stale := filepath.Join(root, "a", tempPrefix+"old")
	fresh := filepath.Join(root, "a", tempPrefix+"new")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := New(root); err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file survived New: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file (a Put under way) removed: %v", err)
	}
}

func TestTruncationDetected(t *testing.T) {
	s := newStore(t)
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if _, err := s.Put(t.Context(), "t/obj", bytes.NewReader(data), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(s.Root(), "t", "obj"), 5000); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(t.Context(), "t/obj")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, storage.ErrChecksum) {
		t.Errorf("reading a truncated object: error = %v, want ErrChecksum", err)
	}
}

func TestMissingChecksumReadsUnverified(t *testing.T) {
	s := newStore(t)
	// As after a copy that dropped extended attributes.
	if err := os.WriteFile(filepath.Join(s.Root(), "copied"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(t.Context(), "copied")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || string(got) != "data" {
		t.Errorf("read = %q, %v; want %q", got, err, "data")
	}
	if info, err := s.Stat(t.Context(), "copied"); err != nil || info.CRC32C != 0 || info.Size != 4 {
		t.Errorf("Stat = %+v, %v; want size 4 and no CRC32C", info, err)
	}
}

func TestDeleteRemovesEmptyParents(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	for _, k := range []string{"x/y/z/obj", "x/keep"} {
		if _, err := s.Put(ctx, k, strings.NewReader(k), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "x/y/z/obj"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "x", "y")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty parent x/y left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "x", "keep")); err != nil {
		t.Errorf("sibling removed: %v", err)
	}
	if _, err := os.Stat(s.Root()); err != nil {
		t.Errorf("root removed: %v", err)
	}
}

func TestKeyUnderObject(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.Put(ctx, "a/b", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "a/b/c", strings.NewReader("y"), storage.PutOptions{}); err == nil {
		t.Error("Put under an existing object succeeded")
	}
	if _, err := s.Put(ctx, "a", strings.NewReader("y"), storage.PutOptions{IfNotExists: true}); err == nil || errors.Is(err, storage.ErrExist) {
		t.Errorf("Put of a directory's name: error = %v, want a non-ErrExist error", err)
	}
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat of a directory: %v, want ErrNotExist", err)
	}
}

func TestLinkFallback(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := linkNoReplace(a, b); !errors.Is(err, os.ErrExist) {
		t.Fatalf("link onto an existing file: %v, want ErrExist", err)
	}
	c := filepath.Join(dir, "c")
	if err := linkNoReplace(a, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old name kept after link: %v", err)
	}
	if got, _ := os.ReadFile(c); string(got) != a {
		t.Errorf("linked content = %q", got)
	}
}

func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := renameNoReplace(a, b); !errors.Is(err, os.ErrExist) {
		t.Fatalf("rename onto an existing file: %v, want ErrExist", err)
	}
	if got, _ := os.ReadFile(b); string(got) != b {
		t.Errorf("target overwritten: %q", got)
	}
	if err := renameNoReplace(a, c); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(c); string(got) != a {
		t.Errorf("renamed content = %q", got)
	}
}
