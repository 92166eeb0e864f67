// Package testbed starts real, throwaway servers for tests: a MariaDB server
// with binary logging and a versitygw S3 gateway. Each runs in a temporary
// directory on loopback ports and is stopped when the test (or package) ends.
// The database servers are initialised and started by package mysqld, the
// launcher restores use for their temporary servers, with the options of
// the official images (flavor.go).
//
// Under CI=true a missing server binary fails the test; elsewhere the test is
// skipped with a message naming what to install.
package testbed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// server is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Binary returns the path of the named program. When it is missing the test
// fails under CI and is skipped elsewhere, naming how to install it.
func Binary(tb testing.TB, name, install string) string {
	tb.Helper()
	path, err := LookBinary(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found: install it with %s (or run scripts/setup.sh)", name, install)
	if InCI() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// LookBinary finds a program as mysql-pitr finds the programs it runs (on
// PATH, then in the sbin directories a non-root PATH often lacks), then in
// the directories test tools are installed in.
func LookBinary(name string) (string, error) {
	if p, err := (programs.Finder{}).Look(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/sbin", "/usr/local/bin", os.ExpandEnv("$HOME/go/bin")} {
		if p, err := (programs.Finder{Dir: dir}).Look(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
