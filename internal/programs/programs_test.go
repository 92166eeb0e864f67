package programs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	// The --version lines of the programs the test machines have.
	tests := []struct {
		name, out, file     string
		wantFamily, wantVer string
	}{
		{"mysql 9.7 mysqld", "/r/usr/sbin/mysqld  Ver 9.7.4-2 for Linux on x86_64 ((Debian))", "mysqld", MySQL, "9.7.4"},
		{"mysql 9.7 mysqlbinlog", "/r/usr/bin/mysqlbinlog  Ver 9.7.4-2 for Linux on x86_64 ((Debian))", "mysqlbinlog", MySQL, "9.7.4"},
		{"mysql 8.0 client", "mysql  Ver 8.0.35 for Linux on x86_64 (MySQL Community Server - GPL)", "mysql", MySQL, "8.0.35"},
		{"percona server", "mysqld  Ver 8.0.35-27 for Linux on x86_64 (Percona Server (GPL), Release '27')", "mysqld", MySQL, "8.0.35"},
		{"mariadb 10.11 mysqld link", "/usr/sbin/mysqld  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)", "mariadbd", MariaDB, "10.11.19"},
		{"mariadb 10.11 client called mysql", "/usr/bin/mysql  Ver 15.1 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64) using  EditLine wrapper", "mariadb", MariaDB, "10.11.19"},
		{"mariadb 10.11 mysqlbinlog says no family: its file name does", "/usr/bin/mysqlbinlog Ver 3.5 for debian-linux-gnu at x86_64", "mariadb-binlog", MariaDB, ""},
		{"mariadb 11.8 binlog reader", "/r/usr/bin/mariadb-binlog from 11.8.9-MariaDB, client 3.5 for debian-linux-gnu (x86_64)", "mariadb-binlog", MariaDB, "11.8.9"},
		{"mariadb 11.8 server", "/r/usr/sbin/mariadbd  Ver 11.8.9-MariaDB-0+deb13u1 from Debian for debian-linux-gnu on x86_64", "mariadbd", MariaDB, "11.8.9"},
		{"unknown", "something 1.2", "something", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, v := ParseVersion(tt.out, tt.file)
			if f != tt.wantFamily || v != tt.wantVer {
				t.Errorf("ParseVersion = %q %q, want %q %q", f, v, tt.wantFamily, tt.wantVer)
			}
		})
	}
}

func TestMajorMinor(t *testing.T) {
	tests := []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"9.7.4-2", 9, 7, true},
		{"5.5.5-10.11.6-MariaDB-log", 10, 11, true},
		{"11.8", 11, 8, true},
		{"8.0.35-27", 8, 0, true},
		{"x", 0, 0, false},
	}
	for _, tt := range tests {
		major, minor, ok := MajorMinor(tt.in)
		if major != tt.major || minor != tt.minor || ok != tt.ok {
			t.Errorf("MajorMinor(%q) = %d %d %v", tt.in, major, minor, ok)
		}
	}
}

// fakeProgram writes an executable script that prints version.
func fakeProgram(t *testing.T, dir, name, version string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+p+"  "+version+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFind builds a machine with both families installed: MariaDB's
// packages in one directory on PATH (its mysql, mysqld and mysqlbinlog
// among them), MySQL's in another later on PATH, and a server root of its
// own that only --server-bindir names.
func TestFind(t *testing.T) {
	root := t.TempDir()
	maria, mysql, bindir := filepath.Join(root, "usr-bin"), filepath.Join(root, "opt-mysql"), filepath.Join(root, "root-9.7")
	fakeProgram(t, maria, "mariadb-binlog", "Ver 3.5 for debian-linux-gnu at x86_64")
	if err := os.Symlink("mariadb-binlog", filepath.Join(maria, "mysqlbinlog")); err != nil {
		t.Fatal(err)
	}
	fakeProgram(t, maria, "mysql", "Ver 15.1 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)")
	fakeProgram(t, maria, "mysqld", "Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64")
	fakeProgram(t, mysql, "mysqlbinlog", "Ver 8.4.3 for Linux on x86_64 (MySQL Community Server - GPL)")
	fakeProgram(t, bindir, "mysqlbinlog", "Ver 9.7.4-2 for Linux on x86_64 ((Debian))")
	t.Setenv("PATH", maria+":"+mysql)

	tests := []struct {
		name     string
		finder   Finder
		family   string
		role     Role
		wantPath string
		wantVer  string
		wantErr  []string
	}{
		{"mariadb's binlog reader by its own name", Finder{}, MariaDB, BinlogTool, filepath.Join(maria, "mariadb-binlog"), "", nil},
		{"mysql's mysqlbinlog passes over mariadb's link", Finder{}, MySQL, BinlogTool, filepath.Join(mysql, "mysqlbinlog"), "8.4.3", nil},
		{"the named directory alone", Finder{Dir: bindir}, MySQL, BinlogTool, filepath.Join(bindir, "mysqlbinlog"), "9.7.4", nil},
		{"mysql's client: only mariadb's on the machine", Finder{}, MySQL, Client, "", "",
			[]string{"MySQL's command-line client (mysql) is not on PATH", filepath.Join(maria, "mysql") + " is MariaDB's", "--server-bindir", EnvDir}},
		{"mysql's server: only mariadb's", Finder{}, MySQL, Server, "", "", []string{filepath.Join(maria, "mysqld") + " is MariaDB's"}},
		{"nothing in the named directory", Finder{Dir: bindir}, MySQL, Server, "", "", []string{"MySQL's server (mysqld) is not in " + bindir}},
		{"mysql has no install script", Finder{}, MySQL, Install, "", "", []string{"MySQL has no install script"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.finder.Find(t.Context(), tt.family, tt.role)
			if tt.wantErr != nil {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("Find = %+v, %v; want ErrNotFound", p, err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Path != tt.wantPath || p.Version != tt.wantVer || p.Family != tt.family {
				t.Errorf("Find = %+v, want %s %s", p, tt.wantPath, tt.wantVer)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	tests := []struct{ in, want string }{
		{"9.7.4-2", "9.7.4"},
		{"9.7.4-log", "9.7.4"},
		{"9.7.4", "9.7.4"},
		{"10.11.19-MariaDB-0+deb12u1", "10.11.19"},
		{"11.8", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := Release(tt.in); got != tt.want {
			t.Errorf("Release(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestIdentify asks programs named by the operator, by path or by name,
// what they are.
func TestIdentify(t *testing.T) {
	dir := t.TempDir()
	mysqld := fakeProgram(t, dir, "mysqld", "Ver 9.7.4-2 for Linux on x86_64 ((Debian))")
	mariadbd := fakeProgram(t, dir, "mariadbd", "Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64")
	other := fakeProgram(t, dir, "wrapper", "something 1.2")
	failing := filepath.Join(dir, "failing")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'no such option' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)

	tests := []struct {
		name    string
		finder  Finder
		program string
		want    Program
		wantErr string
	}{
		{"mysql's server by path", Finder{}, mysqld, Program{Path: mysqld, Family: MySQL, Version: "9.7.4"}, ""},
		{"mariadb's server by name on PATH", Finder{}, "mariadbd", Program{Path: mariadbd, Family: MariaDB, Version: "10.11.19"}, ""},
		{"a program that does not say", Finder{}, other, Program{Path: other}, ""},
		{"by name in the named directory", Finder{Dir: dir}, "mysqld", Program{Path: mysqld, Family: MySQL, Version: "9.7.4"}, ""},
		{"missing", Finder{}, filepath.Join(dir, "nothing"), Program{}, "is not on PATH"},
		{"--version fails", Finder{}, failing, Program{}, failing + " --version: exit status 3: no such option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.finder.Identify(t.Context(), tt.program)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Identify = %+v, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Identify = %+v, want %+v", got, tt.want)
			}
		})
	}
}
