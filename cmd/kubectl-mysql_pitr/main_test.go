package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
)

// runPlugin runs a command line as main does, without exiting.
func runPlugin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), args, &out, &errb)
	code = cli.ExitCode(program, err, &errb)
	return out.String(), errb.String(), code
}

// TestUnknownFlag: a flag restore does not have is one line naming it and
// where the usage is; -h prints the usage.
func TestUnknownFlag(t *testing.T) {
	_, stderr, code := runPlugin(t, "restore", "--no-such-flag")
	want := "kubectl mysql-pitr: restore: flag provided but not defined: -no-such-flag (see 'kubectl mysql-pitr restore --help')\n"
	if code != 2 || stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, want)
	}
	_, stderr, code = runPlugin(t, "restore", "--help")
	if code != 0 || !strings.HasPrefix(stderr, "Usage: kubectl mysql-pitr restore [flags]\n") || !strings.Contains(stderr, "\n  -pod") {
		t.Errorf("--help: exit %d, stderr %q; want exit 0 and the flags", code, stderr)
	}
	if _, stderr, code := runPlugin(t, "drill"); code != 2 || !strings.Contains(stderr, `unknown command "drill"`) {
		t.Errorf("unknown command: exit %d, stderr %q; want exit 2", code, stderr)
	}
}

// TestRestoreFlags: bad settings are refused before the archive or the
// cluster is read.
func TestRestoreFlags(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	storage := "file://" + t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "latest"}, "--pod NAME"},
		{[]string{"--pod", "db-mysql-pitr-0"}, "say where to restore to"},
		{[]string{"--pod", "db-mysql-pitr-0", "--to", "2026-11-27T10:41:07"}, "no time zone"},
		{[]string{"--pod", "db-mysql-pitr-0", "--to", "latest", "--timeout", "0s"}, "--timeout 0s: must be positive"},
		{[]string{"--pod", "db-mysql-pitr-0", "--to", "latest", "--log-level", "loud"}, "--log-level"},
		{[]string{"--pod", "db-mysql-pitr-0", "--to-position", "mysql-bin.000001:4"}, "not defined: -to-position"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := runPlugin(t, append([]string{"restore", "--storage", storage}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

// TestDryRun plans against --storage only: with no cluster to reach, an
// empty location is refused for holding no archive.
func TestDryRun(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	_, stderr, code := runPlugin(t, "restore", "--storage", "file://"+t.TempDir(), "--pod", "db-mysql-pitr-0", "--to", "latest", "--dry-run")
	if code != 1 || !strings.Contains(stderr, "no mysql-pitr archive") {
		t.Fatalf("exit %d, stderr %q; want exit 1 and the archive found missing", code, stderr)
	}
}
