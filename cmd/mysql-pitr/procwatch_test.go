package main

import (
	"bytes"
	"fmt"
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

// procSample is what the watcher read of one process.
type procSample struct {
	pid, depth int
	exe        string
	cmdline    []byte
	environ    []byte // nil for the command itself when its environment is not checked
}

// name is the program's name: its executable's; for a script a shell runs
// (a server root's wrapper, "bash /ROOT/.bin/mysql ARGS…"), the script's;
// for a program the dynamic loader runs (which the wrapper execs,
// "ld-linux… --library-path DIR PROGRAM ARGS…"), the program's. A program
// run through a wrapper has one name throughout.
func (p procSample) name() string {
	base := filepath.Base(p.exe)
	args := strings.Split(strings.TrimRight(string(p.cmdline), "\x00"), "\x00")
	switch base {
	case "bash", "dash", "sh":
		if len(args) > 1 && filepath.IsAbs(args[1]) {
			return filepath.Base(args[1])
		}
		return base
	}
	if !strings.HasPrefix(base, "ld-linux") {
		return base
	}
	for i := 1; i < len(args); i++ {
		switch {
		case args[i] == "--library-path" || args[i] == "--argv0" || args[i] == "--preload" || args[i] == "--audit":
			i++ // and its value
		case strings.HasPrefix(args[i], "--"):
		default:
			return filepath.Base(args[i])
		}
	}
	return base
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

func TestProcSampleName(t *testing.T) {
	for _, tt := range []struct {
		exe, cmdline, want string
	}{
		{"/usr/sbin/mariadbd", "/usr/sbin/mariadbd\x00--no-defaults\x00", "mariadbd"},
		{"/roots/mysql-9.7/usr/lib64/ld-linux-x86-64.so.2",
			"/roots/mysql-9.7/usr/lib64/ld-linux-x86-64.so.2\x00--library-path\x00/roots/mysql-9.7/usr/lib\x00/roots/mysql-9.7/usr/sbin/mysqld\x00--no-defaults\x00", "mysqld"},
		{"/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2\x00", "ld-linux-x86-64.so.2"},
		{"/usr/bin/bash", "/bin/bash\x00/roots/mysql-9.7/.bin/mysql\x00--defaults-extra-file=/tmp/c.cnf\x00", "mysql"},
		{"/usr/bin/dash", "sh\x00-c\x00mysqlbinlog x | mysql\x00", "dash"},
	} {
		if got := (procSample{exe: tt.exe, cmdline: []byte(tt.cmdline)}).name(); got != tt.want {
			t.Errorf("name of %s %q = %q, want %q", tt.exe, tt.cmdline, got, tt.want)
		}
	}
}
