package binlog

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSweepLeavesAtomicWritesInFlight: the sweep of a stream restart
// removes unsealed segments but not the temporary file of a small atomic
// write (the uploader's tail, a record), which may be in flight from the
// uploader meanwhile; opening the spool after a crash removes both.
func TestSweepLeavesAtomicWritesInFlight(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dir, partialPfx+"1")
	tmp := filepath.Join(dir, tmpPfx+"1")
	for _, p := range []string{partial, tmp} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.sweep(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("the restart's sweep left the unsealed segment %s (%v)", partial, err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("the restart's sweep removed an atomic write in flight: %v", err)
	}
	if err := sp.writeTail(Tail{}); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	sp, err = OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("opening the spool left %s, which a crash interrupted (%v)", tmp, err)
	}
	if _, err := sp.Tail(); err != nil {
		t.Errorf("the tail written through a temporary file: %v", err)
	}
}
