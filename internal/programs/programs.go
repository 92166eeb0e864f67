// Package programs finds the server programs mysql-pitr runs — the server
// (mysqld, mariadbd), MariaDB's install script, the command-line client,
// the binlog reader, the physical backup tool and its stream extractor —
// for one server family, in one place: in the directory the operator names
// (--server-bindir, MYSQL_PITR_SERVER_BINDIR), or else on PATH and in the
// sbin directories a non-root PATH often lacks.
//
// MySQL and MariaDB ship programs of the same names (mysqld, mysql,
// mysqlbinlog: Debian's MariaDB packages install them as links to
// MariaDB's), so a program found under a shared name is asked its
// --version, and one of the other family is passed over and named in the
// error if nothing else is found.
package programs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/childenv"
)

// Families, the values of binlog.Flavor and of the mysqld package's flavors.
const (
	MariaDB = "mariadb"
	MySQL   = "mysql"
)

// EnvDir names the environment variable behind --server-bindir.
const EnvDir = "MYSQL_PITR_SERVER_BINDIR"

// Role is what a program does; each family names it differently.
type Role int

// Roles.
const (
	// Server is mysqld or mariadbd.
	Server Role = iota
	// Install initialises a MariaDB datadir (mariadb-install-db); MySQL's
	// server initialises its own.
	Install
	// Client is the command-line client, mysql or mariadb.
	Client
	// BinlogTool reads binlog files: mysqlbinlog or mariadb-binlog.
	BinlogTool
	// Backup is the physical backup tool: xtrabackup or mariadb-backup.
	Backup
	// Extractor unpacks the backup tool's stream: xbstream or mbstream.
	Extractor
)

func (r Role) String() string {
	switch r {
	case Server:
		return "server"
	case Install:
		return "install script"
	case Client:
		return "command-line client"
	case BinlogTool:
		return "binlog reader"
	case Backup:
		return "backup tool"
	case Extractor:
		return "backup stream extractor"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// names are each family's names for each role, preferred first.
var names = map[string]map[Role][]string{
	MariaDB: {
		Server:     {"mariadbd", "mysqld"},
		Install:    {"mariadb-install-db", "mysql_install_db"},
		Client:     {"mariadb", "mysql"},
		BinlogTool: {"mariadb-binlog", "mysqlbinlog"},
		Backup:     {"mariadb-backup", "mariabackup"},
		Extractor:  {"mbstream"},
	},
	MySQL: {
		Server:     {"mysqld"},
		Client:     {"mysql"},
		BinlogTool: {"mysqlbinlog"},
		Backup:     {"xtrabackup"},
		Extractor:  {"xbstream"},
	},
}

// Names returns a family's names for a role, preferred first; nil when the
// family has no such program.
func Names(family string, role Role) []string {
	return slices.Clone(names[family][role])
}

// askVersion are the roles whose programs are asked their --version: their
// names are shared between the families, and their release matters. The
// install script is never run for its version (mariadb-install-db does not
// know --version and runs an installation instead).
func askVersion(r Role) bool { return r == Server || r == Client || r == BinlogTool }

// sbinDirs are searched after PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"}

// ErrNotFound is returned (wrapped) when no program of the family is found
// for a role; the message names the names looked for and where.
var ErrNotFound = errors.New("server program not found")

// versionTimeout bounds `program --version`.
const versionTimeout = 30 * time.Second

// Finder finds programs. The zero value searches PATH, then /usr/sbin,
// /usr/local/sbin and /usr/local/mysql/bin.
type Finder struct {
	// Dir, when set, is the only directory searched: the directory of the
	// server release's programs (--server-bindir).
	Dir string
}

// Program is a program found for a family.
type Program struct {
	// Path is where it is.
	Path string
	// Family is MariaDB or MySQL.
	Family string
	// Version is the server release it belongs to (9.7.4, 11.8.9), from its
	// --version; "" when it was not asked or does not say (MariaDB 10.11's
	// mariadb-binlog).
	Version string
}

// Find returns family's program for role: the first of the family's names
// (Names) found in the search directories whose --version, where asked,
// is not the other family's.
func (f Finder) Find(ctx context.Context, family string, role Role) (Program, error) {
	ns := names[family][role]
	if len(ns) == 0 {
		return Program{}, fmt.Errorf("%w: %s has no %s", ErrNotFound, familyName(family), role)
	}
	var other []string
	for _, n := range ns {
		for _, p := range f.candidates(n) {
			if !askVersion(role) {
				return Program{Path: p, Family: family}, nil
			}
			fam, ver, err := versionOf(ctx, p)
			if err != nil {
				return Program{}, err
			}
			if fam != "" && fam != family {
				other = append(other, fmt.Sprintf("%s is %s's", p, familyName(fam)))
				continue
			}
			return Program{Path: p, Family: family, Version: ver}, nil
		}
	}
	msg := fmt.Sprintf("%s's %s (%s) is not %s", familyName(family), role, strings.Join(ns, " or "), f.where())
	if len(other) > 0 {
		msg += " (" + strings.Join(other, "; ") + ")"
	}
	if f.Dir == "" {
		msg += fmt.Sprintf("; name the directory of %s's programs with --server-bindir or %s", familyName(family), EnvDir)
	}
	return Program{}, fmt.Errorf("%w: %s", ErrNotFound, msg)
}

// Identify returns the program called name (a path, or a name searched
// for as Look does) with the family and release its --version names: ""
// where it does not say. It is for a program the operator named, whose
// family is not known in advance.
func (f Finder) Identify(ctx context.Context, name string) (Program, error) {
	p, err := f.Look(name)
	if err != nil {
		return Program{}, err
	}
	family, version, err := versionOf(ctx, p)
	if err != nil {
		return Program{}, err
	}
	return Program{Path: p, Family: family, Version: version}, nil
}

// Look returns the first of names found in the search directories, asking
// nothing: for programs whose name says what they are (versitygw,
// mbstream, an explicit tool name).
func (f Finder) Look(names ...string) (string, error) {
	for _, n := range names {
		if c := f.candidates(n); len(c) > 0 {
			return c[0], nil
		}
	}
	return "", fmt.Errorf("%w: %s is not %s", ErrNotFound, strings.Join(names, " or "), f.where())
}

// where says where the finder looks, for errors.
func (f Finder) where() string {
	if f.Dir != "" {
		return "in " + f.Dir
	}
	return fmt.Sprintf("on PATH (%s) or in %s", os.Getenv("PATH"), strings.Join(sbinDirs, ", "))
}

// dirs are the directories searched, in order, without repeats.
func (f Finder) dirs() []string {
	if f.Dir != "" {
		return []string{f.Dir}
	}
	var out []string
	for _, d := range append(filepath.SplitList(os.Getenv("PATH")), sbinDirs...) {
		if d == "" {
			d = "."
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// candidates are the executable files called name in the search
// directories, in order. A name with a slash is taken as a path.
func (f Finder) candidates(name string) []string {
	if strings.Contains(name, "/") {
		if executable(name) {
			return []string{name}
		}
		return nil
	}
	var out, seen []string
	for _, d := range f.dirs() {
		p := filepath.Join(d, name)
		if !executable(p) {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		// One file reached through two directories (/sbin a link to
		// /usr/sbin) is one candidate.
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			real = p
		}
		if !slices.Contains(seen, real) {
			seen = append(seen, real)
			out = append(out, p)
		}
	}
	return out
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// versionOf runs `path --version` and reads its family and release.
func versionOf(ctx context.Context, path string) (family, version string, err error) {
	out, err := VersionOutput(ctx, path)
	if err != nil {
		return "", "", err
	}
	real, rerr := filepath.EvalSymlinks(path)
	if rerr != nil {
		real = path
	}
	family, version = ParseVersion(out, filepath.Base(real))
	return family, version, nil
}

// VersionOutput runs `path --version`, within a bounded time and with
// childenv's environment, and returns what it printed on stdout and
// stderr: for programs whose version says more than ParseVersion reads
// (the backup tools name the server release they were built for).
func VersionOutput(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = childenv.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", path, err, FirstLine(string(out)))
	}
	return string(out), nil
}

var (
	mariadbVersionRe = regexp.MustCompile(`(\d+\.\d+\.\d+)-MariaDB`)
	mysqlVersionRe   = regexp.MustCompile(`\bVer (\d+\.\d+\.\d+)`)
)

// ParseVersion reads a program's --version output: its family ("" when it
// cannot tell) and the server release it belongs to ("" when it does not
// say). name is the program file's own name, after links: MariaDB 10.11's
// mysqlbinlog, a link to mariadb-binlog, prints no family.
func ParseVersion(out, name string) (family, version string) {
	line := FirstLine(out)
	if strings.Contains(strings.ToLower(line), "mariadb") || strings.HasPrefix(name, "mariadb") || strings.HasPrefix(name, "maria") {
		if m := mariadbVersionRe.FindStringSubmatch(line); m != nil {
			version = m[1]
		}
		return MariaDB, version
	}
	if m := mysqlVersionRe.FindStringSubmatch(line); m != nil {
		if major, _, ok := MajorMinor(m[1]); ok && major >= 5 {
			return MySQL, m[1]
		}
	}
	return "", ""
}

// MajorMinor returns 9 and 7 of "9.7.4-2" (and of "5.5.5-10.11.6-MariaDB",
// the version MariaDB announces to old clients, 10 and 11).
func MajorMinor(v string) (major, minor int, ok bool) {
	v = strings.TrimPrefix(v, "5.5.5-")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return major, minor, true
}

// Release returns "9.7.4" of "9.7.4-2", "9.7.4-log" or
// "10.11.19-MariaDB-0+deb12u1": the server release a version names, ""
// when it names none.
func Release(v string) string {
	return releaseRe.FindString(v)
}

var releaseRe = regexp.MustCompile(`^\d+\.\d+\.\d+`)

// FamilyOf is the family a server's VERSION() belongs to.
func FamilyOf(serverVersion string) string {
	if strings.Contains(strings.ToLower(serverVersion), "mariadb") {
		return MariaDB
	}
	return MySQL
}

func familyName(f string) string {
	switch f {
	case MariaDB:
		return "MariaDB"
	case MySQL:
		return "MySQL"
	}
	return f
}

// FirstLine is the first line of a program's output, or of a file it
// wrote, trimmed and cut at 200 bytes: enough to name in an error.
func FirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
