package main

import (
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// secretsRun runs commands under watch with canary secrets and collects
// what the watch found.
type secretsRun struct {
	t     *testing.T
	scan  *scanner
	files *dirScan
	base  []string // environment every command starts from
	work  string   // where the commands write: TMPDIR, spool, datadirs
}

// newSecretsRun makes the work directory (short: temporary servers put
// their sockets below it) and the base environment: this process's
// without any AWS, MYSQL_PITR or MYSQL_PWD variable, with TMPDIR in the
// work directory and the machine's AWS configuration hidden.
func newSecretsRun(t *testing.T, canaries []canary) *secretsRun {
	t.Helper()
	work, err := os.MkdirTemp("", "lk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	tmp := filepath.Join(work, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	var base []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "MYSQL_PITR_") || k == "MYSQL_PWD" || k == "TMPDIR" {
			continue
		}
		base = append(base, kv)
	}
	none := filepath.Join(work, "no-aws-config")
	base = append(base, "TMPDIR="+tmp, "AWS_CONFIG_FILE="+none, "AWS_SHARED_CREDENTIALS_FILE="+none, "AWS_EC2_METADATA_DISABLED=true")
	s := &scanner{canaries: canaries}
	return &secretsRun{t: t, scan: s, files: newDirScan(s, work), base: base, work: work}
}

// start starts argv (mysql-pitr's arguments when argv[0] is not a path).
func (h *secretsRun) start(spec cmdSpec) *runWatched {
	h.t.Helper()
	argv := append([]string{binary}, spec.args...)
	if strings.HasPrefix(spec.args[0], "/") {
		argv = spec.args
	}
	before := h.tempEntries()
	r := startWatched(h.t, argv, h.base, spec, h.files)
	r.strayBefore = before
	return r
}

// tempEntries lists the system's temporary directory (this process's
// TMPDIR, not the commands'), where a program that ignores TMPDIR would
// write.
func (h *secretsRun) tempEntries() map[string]bool {
	entries, _ := os.ReadDir(os.TempDir())
	out := map[string]bool{}
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

// strays scans what appeared in the system's temporary directory since
// before: files up to 16 MiB (other people's tests share the directory,
// and none of their files can hold these canaries).
func (h *secretsRun) strays(before map[string]bool) []leak {
	var out []leak
	for name := range h.tempEntries() {
		if before[name] {
			continue
		}
		filepath.WalkDir(filepath.Join(os.TempDir(), name), func(path string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return nil
			}
			if fi, err := e.Info(); err != nil || fi.Size() > 16<<20 {
				return nil
			}
			leaks, _ := h.scan.findFile(path)
			for _, l := range leaks {
				l.where = "stray file " + path
				out = append(out, l)
			}
			return nil
		})
	}
	return out
}

// finish scans what a finished command showed and every file under the
// work directory, and logs what was watched.
func (h *secretsRun) finish(spec cmdSpec, res *cmdResult, began time.Time) *cmdResult {
	h.t.Helper()
	res.check(h.scan, spec.name)
	left := h.files.scan(0)
	res.leaks = append(res.leaks, h.files.leaks[res.fileLeaksFrom:]...)
	for _, p := range left {
		if !slices.Contains(res.credentials, p) {
			res.credentials = append(res.credentials, p)
		}
	}
	h.t.Logf("%s: exit %d in %s; %d /proc rounds, %d samples; programs: %s; credential files seen: %d, left: %d",
		spec.name, res.code, time.Since(began).Round(10*time.Millisecond), res.polls, len(res.samples),
		strings.Join(res.names(), " "), len(res.credentials), len(left))
	for _, p := range left {
		h.t.Errorf("%s left a credential file behind: %s", spec.name, p)
	}
	for _, o := range res.options {
		var holds []string
		for _, l := range h.scan.find("", o.content) {
			holds = append(holds, l.canary)
		}
		h.t.Logf("%s: %s was given option file %s, mode %s, holding %q", spec.name, o.program, o.path, o.mode, holds)
	}
	res.leaks = append(res.leaks, h.strays(res.strayBefore)...)
	return res
}

// run runs a command to its end (at most timeout, then SIGTERM).
func (h *secretsRun) run(spec cmdSpec, timeout time.Duration) *cmdResult {
	h.t.Helper()
	began := time.Now()
	return h.finish(spec, h.start(spec).wait(h.t, timeout), began)
}

// expectClean fails the test for every leak and every MYSQL_PWD a command's
// processes got.
func expectClean(t *testing.T, name string, res *cmdResult) {
	t.Helper()
	for _, l := range res.leaks {
		t.Errorf("LEAK: %s", l)
	}
	for _, p := range res.mysqlPWD {
		t.Errorf("MYSQL_PWD in the environment of %s", p)
	}
	if len(res.leaks)+len(res.mysqlPWD) > 0 {
		t.Logf("%s stderr:\n%s", name, res.stderr)
	}
}

// expectExit fails the test unless the command exited with code.
func expectExit(t *testing.T, name string, res *cmdResult, code int) {
	t.Helper()
	if res.code != code {
		t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", name, res.code, code, res.stdout, childout.Last(res.stderr, 30, "\n"))
	}
}

func lastLine(s string) string { return childout.Last(s, 1, "\n") }

// randomCanary is prefix followed by 24 random hex digits.
func randomCanary(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// writeSecret writes a 0600 file in dir.
func writeSecret(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestScannerCatchesPlantedCanaries proves the watch of the secrets test
// is not blind: a canary planted in a grandchild's argv, in a child's
// environment, on stdout (base64), and in a file (hex) is reported; a
// child given MYSQL_PWD is named; a 0600 option file holding the canary as
// its password is a credential file, not a leak; and the command's own
// environment is not read when it was given secrets there.
func TestScannerCatchesPlantedCanaries(t *testing.T) {
	sh := testbed.Binary(t, "sh", "apt-get install dash")
	value := randomCanary(t, "canarySelf-")
	h := newSecretsRun(t, []canary{newCanary("self", value)})
	script := writeSecret(t, t.TempDir(), "plant.sh", `
sh -c 'sleep 0.5; :' "$C"
MYSQL_PWD=x sh -c 'sleep 0.5; :'
printf '%s' "$C" | base64
printf 'xy%s' "$C" | od -An -tx1 | tr -d ' \n' > "$TMPDIR/hex.txt"
(umask 077; printf '[client]\npassword="%s"\n' "$C" > "$TMPDIR/client-1.cnf")
(umask 022; printf '[client]\npassword="%s"\n' "$C" > "$TMPDIR/open.cnf")
sh -c 'sleep 0.5; :' tool --defaults-file="$TMPDIR/open.cnf"
rm "$TMPDIR/open.cnf"
sleep 0.5
rm "$TMPDIR/client-1.cnf"
`)
	spec := cmdSpec{name: "planted", args: []string{sh, "-c", "sh " + script + "; :"}, env: []string{"C=" + value}, secretEnv: true}
	res := h.run(spec, 30*time.Second)
	expectExit(t, spec.name, res, 0)
	var where []string
	for _, l := range res.leaks {
		where = append(where, l.String())
	}
	t.Logf("found:\n%s", strings.Join(where, "\n"))
	has := func(what string, ok func(l leak) bool) {
		t.Helper()
		if !slices.ContainsFunc(res.leaks, ok) {
			t.Errorf("the scanner missed the canary %s", what)
		}
	}
	has("in a grandchild's argv", func(l leak) bool {
		return strings.Contains(l.where, "(depth 2) cmdline") && l.encoding == "raw"
	})
	has("in a child's environment", func(l leak) bool {
		return strings.Contains(l.where, "(depth 1) environ")
	})
	has("in base64 on stdout", func(l leak) bool { return strings.HasSuffix(l.where, "stdout") && l.encoding == "base64" })
	has("in hex in a file", func(l leak) bool { return strings.Contains(l.where, "hex.txt") && l.encoding == "hex" })
	has("in an option file of mode 0644 given to a child", func(l leak) bool {
		return strings.Contains(l.where, "option file") && strings.Contains(l.where, "open.cnf")
	})
	for _, l := range res.leaks {
		switch {
		case strings.Contains(l.where, "(depth 0)"):
			t.Errorf("the command's own environment was read although it was given secrets: %s", l)
		case strings.Contains(l.where, "client-1.cnf"):
			t.Errorf("a 0600 option file was counted as a leak: %s", l)
		}
	}
	if len(res.mysqlPWD) == 0 {
		t.Error("the scanner missed a child with MYSQL_PWD")
	}
	if len(res.credentials) != 1 || filepath.Base(res.credentials[0]) != "client-1.cnf" {
		t.Errorf("credential files %q, want the planted client-1.cnf", res.credentials)
	}
}
