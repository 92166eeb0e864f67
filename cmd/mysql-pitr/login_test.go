package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestRefusedLoginCreatesNothing runs the commands that write the archive
// with a wrong password: they fail on the login, and neither the file://
// archive's directory nor the spool is created.
func TestRefusedLoginCreatesNothing(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	wrong := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(wrong, []byte("not the password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"snapshot", []string{"snapshot", "--threads", "1"}},
		{"agent", []string{"agent", "--listen", "", "--connect-timeout", "10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			archive, spool := filepath.Join(dir, "archive"), filepath.Join(dir, "spool")
			args := append(tc.args, "--dsn", dsn, "--password-file", wrong, "--storage", "file://"+archive, "--log-level", "warn")
			if tc.name == "agent" {
				args = append(args, "--spool-dir", spool)
			}
			_, stderr, code := runCLI(t, t.Context(), args...)
			if code != 1 || !strings.Contains(lastLine(stderr), "Access denied") {
				t.Errorf("exit %d, %q; want exit 1 naming the refused login", code, lastLine(stderr))
			}
			for _, p := range []string{archive, spool} {
				if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s after a refused login: %v, want it not to exist", p, err)
				}
			}
		})
	}
}
