package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file holds the machinery of the no-leaked-secrets test: canaries
// (planted secrets with the encodings a leak could take), a scanner for
// bytes and files, and a watcher that samples the command line and
// environment of every process a command starts.

// canary is a secret planted for a test. Its patterns are the forms in
// which it could leak: the raw string, lowercased, hex (both cases), and
// base64 (standard and URL alphabets) at each of the three alignments it
// can have inside a larger encoded blob. Each pattern is the last
// patternLen bytes of its encoding: canaries end in random characters, so
// the tail is as unique as the whole, it also catches a leak that cuts the
// secret's start off, and a short pattern keeps scanning large files fast.
type canary struct {
	name     string
	value    string
	patterns []canaryPattern
}

type canaryPattern struct {
	encoding string
	b        []byte
}

// patternLen is the length of a canary's patterns.
const patternLen = 32

func newCanary(name, value string) canary {
	c := canary{name: name, value: value}
	add := func(enc, p string) {
		p = p[len(p)-min(len(p), patternLen):]
		for _, q := range c.patterns {
			if bytes.Equal(q.b, []byte(p)) {
				return
			}
		}
		c.patterns = append(c.patterns, canaryPattern{enc, []byte(p)})
	}
	add("raw", value)
	add("lowercase", strings.ToLower(value))
	add("hex", hex.EncodeToString([]byte(value)))
	add("HEX", strings.ToUpper(hex.EncodeToString([]byte(value))))
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for _, p := range base64Alignments(e.enc, value) {
			add(e.name, p)
		}
	}
	return c
}

// base64Alignments returns, for a value preceded by 0, 1 or 2 other bytes
// in a blob, the base64 characters that depend on the value's bytes alone.
func base64Alignments(enc *base64.Encoding, value string) []string {
	var out []string
	for k := range 3 {
		s := enc.EncodeToString(append(make([]byte, k), value...))
		from := 0
		if k > 0 {
			from = 4 // the first group mixes in the preceding bytes
		}
		to := (k + len(value)) / 3 * 4 // the last, partial group mixes in what follows
		if to-from >= 8 {
			out = append(out, s[from:to])
		}
	}
	return out
}

// leak is one hit of a canary.
type leak struct {
	canary, encoding, where string
}

func (l leak) String() string { return fmt.Sprintf("%s (%s) in %s", l.canary, l.encoding, l.where) }

// scanner finds canaries in bytes.
type scanner struct{ canaries []canary }

// find returns every canary in data, once per canary.
func (s *scanner) find(where string, data []byte) []leak {
	var out []leak
	for _, c := range s.canaries {
		for _, p := range c.patterns {
			if bytes.Contains(data, p.b) {
				out = append(out, leak{c.name, p.encoding, where})
				break
			}
		}
	}
	return out
}

// maxPattern is the longest pattern, the overlap a chunked file scan needs.
func (s *scanner) maxPattern() int {
	n := 0
	for _, c := range s.canaries {
		for _, p := range c.patterns {
			n = max(n, len(p.b))
		}
	}
	return n
}

// findFile scans a file of any size in chunks.
func (s *scanner) findFile(path string) ([]leak, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	overlap := s.maxPattern()
	buf := make([]byte, 4<<20)
	var out []leak
	seen := map[string]bool{}
	keep := 0
	for {
		n, err := io.ReadFull(f, buf[keep:])
		data := buf[:keep+n]
		for _, l := range s.find(path, data) {
			if !seen[l.canary] {
				seen[l.canary] = true
				out = append(out, l)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		keep = min(overlap, len(data))
		copy(buf, data[len(data)-keep:])
	}
}

// credentialFile reports whether a file is one a command writes on purpose
// to hand a password to a child tool: a MySQL option file (.cnf) of mode
// 0600 in which every canary sits on a password= line.
func (s *scanner) credentialFile(path string, mode fs.FileMode) bool {
	if mode.Perm() != 0o600 || filepath.Ext(path) != ".cnf" {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if len(s.find("", []byte(line))) > 0 && !strings.HasPrefix(strings.TrimSpace(line), "password=") {
			return false
		}
	}
	return true
}

// fileState is what a file scan remembers, to skip files that did not change.
type fileState struct {
	size  int64
	mtime time.Time
}

// dirScan scans every regular file under roots, skipping files already
// scanned unchanged. Credential files (see credentialFile) are listed
// apart instead of counted as leaks.
type dirScan struct {
	s           *scanner
	roots       []string
	maxSize     int64 // files larger are left for a later full scan; 0: no limit
	mu          sync.Mutex
	done        map[string]fileState
	leaks       []leak
	credentials map[string]bool // credential files ever seen
}

func newDirScan(s *scanner, roots ...string) *dirScan {
	return &dirScan{s: s, roots: roots, done: map[string]fileState{}, credentials: map[string]bool{}}
}

// scan walks the roots once; it returns the credential files present now.
func (d *dirScan) scan(maxSize int64) (present []string) {
	for _, root := range d.roots {
		filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return nil // vanished while walking, or not a file
			}
			fi, err := e.Info()
			if err != nil || (maxSize > 0 && fi.Size() > maxSize) {
				return nil
			}
			st := fileState{fi.Size(), fi.ModTime()}
			d.mu.Lock()
			old, ok := d.done[path]
			d.mu.Unlock()
			if ok && old == st {
				if d.isCredential(path) {
					present = append(present, path)
				}
				return nil
			}
			leaks, err := d.s.findFile(path)
			if err != nil {
				return nil // removed between the walk and the read
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			d.done[path] = st
			if len(leaks) > 0 && d.s.credentialFile(path, fi.Mode()) {
				d.credentials[path] = true
				present = append(present, path)
				return nil
			}
			for _, l := range leaks {
				l.where = fmt.Sprintf("file %s (mode %s)", path, fi.Mode().Perm())
				d.leaks = append(d.leaks, l)
			}
			return nil
		})
	}
	return present
}

func (d *dirScan) isCredential(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.credentials[path]
}

// procSample is what the watcher read of one process.
type procSample struct {
	pid, depth int
	exe        string
	cmdline    []byte
	environ    []byte // nil for the command itself when its environment is not checked
}

func (p procSample) name() string { return filepath.Base(p.exe) }

func (p procSample) argv() string {
	return strings.Join(strings.Split(strings.TrimRight(string(p.cmdline), "\x00"), "\x00"), " ")
}

// watcher samples a process and all its descendants every interval: their
// executable, /proc/PID/cmdline and /proc/PID/environ, keeping every
// distinct sample. A child between fork and exec still shows its parent's
// memory: its parent's executable, command line and environment. Such a
// sample (same executable and command line as the parent) is skipped, and
// a sample is kept only when the executable did not change while it was
// read.
type watcher struct {
	root     int
	rootEnv  bool // whether to keep the command's own environment
	interval time.Duration

	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples []procSample
	seen    map[string]bool
	known   map[int]procID // every descendant seen, tracked after reparenting
	polls   int
	options map[string]optionFile
}

// optionFile is a MySQL option file a child was pointed to
// (--defaults-file, --defaults-extra-file), read as soon as the child was
// seen: such files are how a password may reach a child.
type optionFile struct {
	path    string
	mode    fs.FileMode
	content []byte
	program string
}

// procID tells processes apart across pid reuse.
type procID struct {
	start string
	ppid  int
	depth int
}

func watch(root int, rootEnv bool) *watcher {
	w := &watcher{root: root, rootEnv: rootEnv, interval: 20 * time.Millisecond,
		stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}, known: map[int]procID{},
		options: map[string]optionFile{}}
	go w.loop()
	return w
}

func (w *watcher) loop() {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.poll()
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// finish stops the watcher and returns its samples, how many rounds it
// made, and the option files its processes were given.
func (w *watcher) finish() ([]procSample, int, []optionFile) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var opts []optionFile
	for _, o := range w.options {
		opts = append(opts, o)
	}
	slices.SortFunc(opts, func(a, b optionFile) int { return strings.Compare(a.path, b.path) })
	return w.samples, w.polls, opts
}

// statOf reads a process's parent pid and start time from /proc/PID/stat.
func statOf(pid int) (ppid int, start string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	// The command name, field 2, is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, starttime field 22.
	if len(f) < 20 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[19], err == nil
}

func (w *watcher) poll() {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	children := map[int][]int{}
	stats := map[int]procID{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, start, ok := statOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
			stats[pid] = procID{start: start, ppid: ppid}
		}
	}
	// The root and its descendants by parent links, plus every process
	// seen before that is still the same process (a reparented orphan).
	tree := map[int]procID{w.root: {}}
	queue := []int{w.root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if _, ok := tree[c]; !ok {
				tree[c] = procID{start: stats[c].start, ppid: p, depth: tree[p].depth + 1}
				queue = append(queue, c)
			}
		}
	}
	w.mu.Lock()
	w.polls++
	for pid, id := range w.known {
		if _, ok := tree[pid]; !ok && stats[pid].start == id.start {
			tree[pid] = id
		}
	}
	for pid, id := range tree {
		if pid != w.root {
			w.known[pid] = id
		}
	}
	w.mu.Unlock()
	for pid, id := range tree {
		w.sample(pid, id)
	}
}

// readProc reads a process's executable, command line and environment;
// ok is false when it exited or exec'd meanwhile.
func readProc(pid int) (exe string, cmdline, environ []byte, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	exe, err := os.Readlink(dir + "/exe")
	if err != nil {
		return "", nil, nil, false
	}
	if cmdline, err = os.ReadFile(dir + "/cmdline"); err != nil {
		return "", nil, nil, false
	}
	if environ, err = os.ReadFile(dir + "/environ"); err != nil {
		return "", nil, nil, false
	}
	again, err := os.Readlink(dir + "/exe")
	return exe, cmdline, environ, err == nil && again == exe
}

func (w *watcher) sample(pid int, id procID) {
	exe, cmdline, environ, ok := readProc(pid)
	if !ok {
		return
	}
	if pid == w.root {
		if !w.rootEnv {
			environ = nil
		}
	} else if pexe, pcmd, _, ok := readProc(id.ppid); ok && pexe == exe && bytes.Equal(pcmd, cmdline) {
		return // between fork and exec: the parent's memory
	}
	s := procSample{pid: pid, depth: id.depth, exe: exe, cmdline: cmdline, environ: environ}
	key := fmt.Sprintf("%d\x00%s\x00%s\x00%s", pid, exe, cmdline, environ)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[key] {
		return
	}
	w.seen[key] = true
	w.samples = append(w.samples, s)
	if pid == w.root {
		return
	}
	for _, arg := range strings.Split(string(cmdline), "\x00") {
		for _, opt := range []string{"--defaults-file=", "--defaults-extra-file="} {
			path, ok := strings.CutPrefix(arg, opt)
			if !ok || w.options[path].path != "" {
				continue
			}
			fi, err := os.Stat(path)
			if err != nil {
				continue // gone already
			}
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			w.options[path] = optionFile{path: path, mode: fi.Mode().Perm(), content: b, program: s.name()}
		}
	}
}

// cmdSpec is one command run under watch.
type cmdSpec struct {
	name string
	args []string
	// env is added to the base environment.
	env []string
	// secretEnv says the command was given a secret in its own environment,
	// as users may do (MYSQL_PITR_PASSWORD, AWS_SECRET_ACCESS_KEY): its own
	// environment is then not checked, its children's still are.
	secretEnv bool
}

// cmdResult is what a watched command did and showed.
type cmdResult struct {
	code           int
	stdout, stderr string
	samples        []procSample
	polls          int
	leaks          []leak
	mysqlPWD       []string // processes that got MYSQL_PWD
	credentials    []string // credential files present while it ran
	fileLeaksFrom  int      // where its file leaks start in the dirScan's list
	options        []optionFile
	strayBefore    map[string]bool
}

// names returns the distinct program names of the command's descendants.
func (r *cmdResult) names() []string {
	var out []string
	for _, s := range r.samples {
		if s.depth > 0 && !slices.Contains(out, s.name()) {
			out = append(out, s.name())
		}
	}
	slices.Sort(out)
	return out
}

// sawProgram reports whether a descendant ran a program of this name.
func (r *cmdResult) sawProgram(name string) bool { return slices.Contains(r.names(), name) }

// runWatched is a started command under watch.
type runWatched struct {
	spec    cmdSpec
	cmd     *exec.Cmd
	out     *lockedBuffer
	errb    *lockedBuffer
	w       *watcher
	files   *dirScan
	mu      sync.Mutex
	creds   map[string]bool
	exited  chan struct{}
	scanned chan struct{} // closed when the file scans during the run ended
	err     error
	// leaksFrom is where this run's file leaks start in files.leaks.
	leaksFrom int
	// strayBefore is what the system's temporary directory held before.
	strayBefore map[string]bool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWatched starts argv[0] with argv[1:] and the environment base+spec.env,
// watching its processes from the first moment, and, when files is set,
// scanning the files of up to 1 MiB under its roots every 200 ms.
func startWatched(t *testing.T, argv []string, base []string, spec cmdSpec, files *dirScan) *runWatched {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(slices.Clone(base), spec.env...)
	r := &runWatched{spec: spec, cmd: cmd, out: &lockedBuffer{}, errb: &lockedBuffer{}, files: files,
		creds: map[string]bool{}, exited: make(chan struct{}), scanned: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.out, r.errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if files != nil {
		files.mu.Lock()
		r.leaksFrom = len(files.leaks)
		files.mu.Unlock()
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", spec.name, err)
	}
	// The watcher starts right after the process: mysql-pitr parses its
	// flags and connects before it starts any child, which takes far
	// longer than the watcher's first round.
	r.w = watch(cmd.Process.Pid, !spec.secretEnv)
	go func() {
		defer close(r.scanned)
		if files == nil {
			return
		}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, p := range files.scan(1 << 20) {
				r.mu.Lock()
				r.creds[p] = true
				r.mu.Unlock()
			}
			select {
			case <-r.exited:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		r.err = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			cmd.Process.Kill()
			<-r.exited
		}
		<-r.scanned
	})
	return r
}

// wait waits for the command to exit, at most timeout; then it is sent
// SIGTERM (as a container runtime stops the agent) and, 30 s later, killed.
func (r *runWatched) wait(t *testing.T, timeout time.Duration) *cmdResult {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(timeout):
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			r.cmd.Process.Kill()
			<-r.exited
			t.Errorf("%s: still running 30 s after SIGTERM, killed", r.spec.name)
		}
	}
	samples, polls, options := r.w.finish()
	<-r.scanned
	res := &cmdResult{code: r.cmd.ProcessState.ExitCode(), stdout: r.out.String(), stderr: r.errb.String(),
		samples: samples, polls: polls, fileLeaksFrom: r.leaksFrom, options: options, strayBefore: r.strayBefore}
	r.mu.Lock()
	for p := range r.creds {
		res.credentials = append(res.credentials, p)
	}
	r.mu.Unlock()
	slices.Sort(res.credentials)
	return res
}

// stop ends a long-running command with SIGTERM and waits for it.
func (r *runWatched) stop(t *testing.T) *cmdResult {
	t.Helper()
	return r.wait(t, 0)
}

// check scans what the command showed: its output, every process sample,
// and the option files its children were given, which may hold a secret
// only when they are 0600. Other files are scanned by the caller's dirScan.
func (res *cmdResult) check(s *scanner, name string) {
	for _, o := range res.options {
		if o.mode != 0o600 {
			res.leaks = append(res.leaks, s.find(fmt.Sprintf("%s: option file %s of %s (mode %s)", name, o.path, o.program, o.mode), o.content)...)
		}
	}
	res.leaks = append(res.leaks, s.find(name+" stdout", []byte(res.stdout))...)
	res.leaks = append(res.leaks, s.find(name+" stderr", []byte(res.stderr))...)
	for _, p := range res.samples {
		who := fmt.Sprintf("%s: process %d %s (depth %d)", name, p.pid, p.name(), p.depth)
		res.leaks = append(res.leaks, s.find(who+" cmdline", p.cmdline)...)
		if p.environ != nil {
			res.leaks = append(res.leaks, s.find(who+" environ", p.environ)...)
			if p.depth > 0 && bytes.Contains(append([]byte{0}, p.environ...), []byte("\x00MYSQL_PWD=")) {
				res.mysqlPWD = append(res.mysqlPWD, who)
			}
		}
	}
}
