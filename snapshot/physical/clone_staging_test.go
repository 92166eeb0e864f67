package physical

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCloneLeftoversNotOurs checks what the leftover sweep leaves alone and
// what it refuses, without a server: an empty directory named like a
// staging directory goes, one without a marker or with another program's
// stays, and one a running snapshot holds locked stops the new snapshot.
func TestCloneLeftoversNotOurs(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	location := t.TempDir()
	mk := func(name string, files map[string]string) string {
		dir := filepath.Join(location, name)
		if err := os.Mkdir(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		for n, body := range files {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	empty := mk(cloneStagingPrefix+"1", nil)
	unmarked := mk(cloneStagingPrefix+"2", map[string]string{"ibdata1": "x"})
	foreign := mk(cloneStagingPrefix+"3", map[string]string{cloneMarkerName: `{"program":"something else"}`})
	other := mk("mysql-pitr-spool", map[string]string{"x": "y"})
	if err := removeCloneLeftovers(t.Context(), nil, location, log); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(empty); err == nil {
		t.Errorf("the empty staging directory is still there")
	}
	for _, dir := range []string{unmarked, foreign, other} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s was removed: %v", dir, err)
		}
	}

	running, err := newCloneStaging(location, "", "tcp(127.0.0.1:3306)")
	if err != nil {
		t.Fatal(err)
	}
	defer running.remove()
	err = removeCloneLeftovers(t.Context(), nil, location, log)
	if err == nil || !strings.Contains(err.Error(), "another physical snapshot is running") || !strings.Contains(err.Error(), running.root) {
		t.Fatalf("with a running snapshot's directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(running.root, cloneMarkerName)); err != nil {
		t.Errorf("the running snapshot's marker: %v", err)
	}
}
