package physical

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/programs"
)

// ErrToolMissing is returned (wrapped) when the physical backup tool
// or its stream extractor is not installed; the message says how to install it.
var ErrToolMissing = errors.New("physical backup tool not found")

// ErrToolVersion is returned (wrapped) when the backup tool was built
// for another server release than the server's; the message names both versions.
var ErrToolVersion = errors.New("physical backup tool does not match the server version")

// backupTool is every difference between MariaDB's and MySQL's physical backup
// tooling; backupToolFor is the only place that tells them apart.
type backupTool struct {
	// names are the tool's names, preferred first (programs.Names).
	names []string
	// extractor are the stream extractor's names.
	extractor []string
	// install says how to get both.
	install string
}

func backupToolFor(f binlog.Flavor) backupTool {
	pt := backupTool{
		names:     programs.Names(string(f), programs.Backup),
		extractor: programs.Names(string(f), programs.Extractor),
		install:   "install Percona XtraBackup for the server's release (e.g. apt-get install percona-xtrabackup-80 for MySQL 8.0)",
	}
	if f == binlog.MariaDB {
		pt.install = "apt-get install mariadb-backup (Debian/Ubuntu) or dnf install MariaDB-backup (RHEL), matching the server's major.minor version"
	}
	return pt
}

// find returns the tool's path: explicit if set, else the first of its
// names found on PATH or in the sbin directories.
func (pt backupTool) find(explicit string) (string, error) {
	if explicit != "" {
		p, err := (programs.Finder{}).Look(explicit)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %v; %s", ErrToolMissing, explicit, err, pt.install)
		}
		return p, nil
	}
	if p, err := (programs.Finder{}).Look(pt.names...); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: none of %s is on PATH or in the sbin directories; %s", ErrToolMissing, strings.Join(pt.names, ", "), pt.install)
}

// findExtractor returns the extractor: explicit if set, else next to the tool
// (packages install both in one directory), else on PATH.
func (pt backupTool) findExtractor(explicit, tool string) (string, error) {
	if explicit != "" {
		p, err := (programs.Finder{}).Look(explicit)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %v; %s", ErrToolMissing, explicit, err, pt.install)
		}
		return p, nil
	}
	if p, err := (programs.Finder{Dir: filepath.Dir(tool)}).Look(pt.extractor...); err == nil {
		return p, nil
	}
	p, err := (programs.Finder{}).Look(pt.extractor...)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not on PATH or in the sbin directories; %s", ErrToolMissing, strings.Join(pt.extractor, ", "), pt.install)
	}
	return p, nil
}

// basedOn matches the server release a backup tool was built from, in
// `mariadb-backup --version` ("mariadb-backup based on MariaDB server
// 10.11.19-MariaDB debian-linux-gnu (x86_64)") and `xtrabackup --version`
// ("xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64)").
var (
	basedOn      = regexp.MustCompile(`based on (?:MariaDB|MySQL) server (\d+\.\d+(?:\.\d+)?\S*)`)
	ownVer       = regexp.MustCompile(`\bversion (\d+\.\d+\S*)`)
	majorMinorRe = regexp.MustCompile(`^(\d+)\.(\d+)`)
)

// toolVersion is what `tool --version` says.
type toolVersion struct {
	// Server is the server release the tool was built for, e.g. "10.11.19-MariaDB".
	Server string
	// Label names the tool and its own version for the manifest.
	Label string
}

// parseToolVersion reads `tool --version` output.
func parseToolVersion(name, out string) (toolVersion, error) {
	m := basedOn.FindStringSubmatch(out)
	if m == nil {
		return toolVersion{}, fmt.Errorf("%s --version: no server version in %q", name, programs.FirstLine(out))
	}
	v := toolVersion{Server: m[1], Label: name + " " + m[1]}
	if own := ownVer.FindStringSubmatch(out); own != nil {
		v.Label = name + " " + own[1] + " (" + m[1] + ")"
	}
	return v, nil
}

// majorMinor returns "10.11" of "10.11.19-MariaDB-0+deb12u1-log", skipping
// the "5.5.5-" prefix old MariaDB handshakes carry.
func majorMinor(version string) (string, bool) {
	v := strings.TrimPrefix(version, "5.5.5-")
	m := majorMinorRe.FindStringSubmatch(v)
	if m == nil {
		return "", false
	}
	return m[1] + "." + m[2], true
}

// checkVersion fails unless the tool was built for the server's
// major.minor release: InnoDB's redo and page formats change between them,
// and a mismatched tool copies or prepares a backup that will not start.
func checkVersion(tool string, tv toolVersion, serverVersion string) error {
	want, ok := majorMinor(serverVersion)
	if !ok {
		return fmt.Errorf("server version %q is not major.minor[.patch]", serverVersion)
	}
	got, ok := majorMinor(tv.Server)
	if !ok || got != want {
		return fmt.Errorf("%w: %s is built for server %s but the server is %s; install the tool for %s",
			ErrToolVersion, tool, tv.Server, serverVersion, want)
	}
	return nil
}

// runVersion runs `tool --version`. Both tools print it on stderr.
func runVersion(ctx context.Context, tool string) (toolVersion, error) {
	out, err := programs.VersionOutput(ctx, tool)
	if err != nil {
		return toolVersion{}, err
	}
	return parseToolVersion(filepath.Base(tool), out)
}

// checkedVersion runs `tool --version` and checks that the tool was built
// for serverVersion's major.minor release (checkVersion).
func checkedVersion(ctx context.Context, tool, serverVersion string) (toolVersion, error) {
	tv, err := runVersion(ctx, tool)
	if err != nil {
		return toolVersion{}, err
	}
	if err := checkVersion(tool, tv, serverVersion); err != nil {
		return toolVersion{}, err
	}
	return tv, nil
}

// ownGroup puts the child in its own process group and makes a context
// cancel kill the whole group: the backup tool may start helpers, and none
// must keep reading the server's files after we gave up.
func ownGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		// The group id is the child's pid (Setpgid with Pgid 0).
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	// Pipes held open by a grandchild must not keep Wait from returning.
	cmd.WaitDelay = 10 * time.Second
}

// defaultsFile writes the password, and the extra [client] lines (TLS
// options, see mysqltls.Settings.OptionLines), into an option file in dir,
// readable only by us, so that the password reaches the tool without
// appearing in its argv or environment. Option-file values are unquoted and
// unescaped by the client library; quoting keeps '#', ';' and spaces,
// escaping keeps '\' and quotes.
func defaultsFile(dir, password string, extra ...string) (string, error) {
	if strings.ContainsAny(password, "\x00") {
		return "", errors.New("password contains a NUL byte, which an option file cannot hold")
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	content := "[client]\npassword=\"" + r.Replace(password) + "\"\n"
	for _, l := range extra {
		content += l + "\n"
	}
	f, err := os.CreateTemp(dir, "client-*.cnf")
	if err != nil {
		return "", fmt.Errorf("create option file: %w", err)
	}
	path := f.Name()
	// CreateTemp already uses 0600; Chmod states it against any umask games.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("protect option file: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("write option file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write option file: %w", err)
	}
	return path, nil
}
