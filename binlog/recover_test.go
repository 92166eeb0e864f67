package binlog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// crashAfterSync writes a file's first events through a writer, makes the
// first synced of them durable with Sync, writes the rest of evs without
// syncing, and then drops the writer as a crash would, leaving its partial
// file behind. It returns the spool's directory, the synced position and
// the partial file.
func crashAfterSync(t *testing.T, name string, evs []event, synced int) (string, catalog.Position, string) {
	t.Helper()
	dir := t.TempDir()
	sp, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t, sp, 4096)
	if err := w.StartAt(catalog.Position{File: name, Pos: 4}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(fakeRotate(name, 4)); err != nil {
		t.Fatal(err)
	}
	var at catalog.Position
	for i, ev := range evs {
		if err := w.Handle(ev.b); err != nil {
			t.Fatal(err)
		}
		if i == synced-1 {
			if at, err = w.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := evs[synced-1].pos + uint64(len(evs[synced-1].b)); at.Pos != want || at.File != name {
		t.Fatalf("Sync returned %s, want %s:%d", at, name, want)
	}
	w.mu.Lock()
	partial := w.seg.f.Name()
	w.seg.w.Flush() // what the kernel may or may not have kept
	w.seg.f.Close()
	w.mu.Unlock()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, at, partial
}

// TestRecoverPartialSegments checks that a spool opened after a crash seals
// every event a writer made durable, and nothing that is not a whole event
// continuing them, however the file's tail was left.
func TestRecoverPartialSegments(t *testing.T) {
	const name = "mysql-8.0.11.binlog.000001"
	file := readFixture(t, name)
	evs := fileEvents(t, file)
	tails := []struct {
		name string
		tail func(b []byte) []byte
	}{
		{"as written", func(b []byte) []byte { return b }},
		{"zeros", func(b []byte) []byte { return append(b, make([]byte, 300)...) }},
		{"half an event", func(b []byte) []byte { return append(b, evs[len(evs)-2].b[:30]...) }},
		{"a damaged event", func(b []byte) []byte {
			ev := bytes.Clone(evs[len(evs)-2].b)
			ev[len(ev)-6] ^= 0xff
			return append(b, ev...)
		}},
	}
	for _, synced := range []int{1, 3, len(evs) / 2, len(evs) - 2} {
		for _, tc := range tails {
			t.Run(itoa(int64(synced))+"/"+tc.name, func(t *testing.T) {
				dir, at, partial := crashAfterSync(t, name, evs[:synced+1], synced)
				b, err := os.ReadFile(partial)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(partial, tc.tail(b), 0o600); err != nil {
					t.Fatal(err)
				}
				sp, err := OpenSpool(dir, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer sp.Close()
				got, recs := reassemble(t, sp)
				if uint64(len(got)) < at.Pos {
					t.Fatalf("recovered the file up to %d, but %d was made durable", len(got), at.Pos)
				}
				if !bytes.Equal(got, file[:len(got)]) {
					t.Fatal("recovered bytes differ from the file's")
				}
				if last := recs[len(recs)-1]; last.End != uint64(len(got)) {
					t.Fatalf("last record ends at %d, bytes at %d", last.End, len(got))
				}
				left, _ := filepath.Glob(filepath.Join(dir, partialPfx+"*"))
				if len(left) > 0 {
					t.Errorf("partial files left after recovery: %v", left)
				}
			})
		}
	}
}

// TestRecoverSkipsSealedPartials checks that a partial file whose segment
// was sealed before the crash removed it is not sealed a second time.
func TestRecoverSkipsSealedPartials(t *testing.T) {
	const name = "mysql-8.0.11.binlog.000001"
	file := readFixture(t, name)
	evs := fileEvents(t, file)
	dir := t.TempDir()
	sp, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t, sp, 1<<30)
	w.StartAt(catalog.Position{File: name, Pos: 4}, nil)
	w.Handle(fakeRotate(name, 4))
	for _, ev := range evs[:5] {
		if err := w.Handle(ev.b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	// The crash comes after the record is written and before the partial
	// file and its head are removed: keep copies to put back.
	partial := w.seg.f.Name()
	saved := map[string][]byte{}
	for _, p := range []string{partial, partial + headSuffix} {
		if saved[p], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for p, b := range saved {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	sp, err = OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	got, recs := reassemble(t, sp)
	if want := evs[4].pos + uint64(len(evs[4].b)); uint64(len(got)) != want || len(recs) != 1 {
		t.Fatalf("spool holds %d segments ending at %d, want 1 ending at %d", len(recs), len(got), want)
	}
}
