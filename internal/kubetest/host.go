package kubetest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The cluster changes the host, and every change is undone when the test
// binary ends, even when it dies (a go test timeout, a panic, a kill):
//
//   - every process it starts runs in a cgroup of its own (hostState.Cgroup,
//     in every cgroup hierarchy), and the kubelet puts the pods below it
//     (cgroupRoot), so killing what the cgroup holds kills the control plane,
//     containerd, the shims and every container;
//   - everything it writes is below one directory (hostState.Dir):
//     etcd, certificates, containerd's root and state (with the pods'
//     network namespaces), the kubelet's root, the volumes; the mounts the
//     kubelet and containerd make there are unmounted before it is removed;
//   - the kubelet sets six sysctls system-wide at start (vm.overcommit_memory=1,
//     kernel.panic=10, kernel.panic_on_oops=1…); their values from before
//     are written back;
//   - containerd's shims put their sockets in /run/containerd/s, the
//     kubelet its device plugin socket in /var/lib/kubelet/device-plugins and
//     links to the containers' logs in /var/log/containers, whatever their
//     configuration says: what the cluster made below the kubelet's,
//     containerd's and CNI's default paths (hostPaths) goes;
//   - the kubelet is told not to touch iptables (makeIPTablesUtilChains:
//     false), and the rules are compared before and after.
//
// A reaper process (the test binary again, in its own session) holds the
// record and undoes it all when the test binary goes away without saying
// it did so itself.

// hostState is what the cluster changed on the host, written to
// state.json as it changes.
type hostState struct {
	Dir    string `json:"dir"`
	Cgroup string `json:"cgroup"`
	// Sysctls are the kubelet's sysctls (paths below /proc/sys) and their
	// values before it started.
	Sysctls map[string]string `json:"sysctls"`
	// HostPaths lists what existed below hostPaths before the start.
	HostPaths []string `json:"hostPaths"`
	// Iptables is iptables-save and ip6tables-save before the start.
	Iptables string `json:"iptables"`
}

// kubeletSysctls are the sysctls the kubelet sets (its setupKernelTunables).
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func (s *hostState) path() string { return filepath.Join(s.Dir, "state.json") }

// save writes the state for the reaper, atomically.
func (s *hostState) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path())
}

// record notes the host as it is before the cluster changes it.
func (s *hostState) record() error {
	s.Sysctls = map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", k, err)
		}
		s.Sysctls[k] = strings.TrimSpace(string(b))
	}
	s.HostPaths = hostPathEntries()
	s.Iptables = iptablesRules()
	return s.save()
}

// iptablesRules is the host's IPv4 and IPv6 rules without counters and
// comments, or "" when iptables is not installed.
func iptablesRules() string {
	var b strings.Builder
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(cmd).Output()
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, ":") {
				// ":CHAIN POLICY [packets:bytes]": the counters move.
				if i := strings.LastIndex(line, " ["); i > 0 {
					line = line[:i] + "\n"
				}
			}
			b.WriteString(line)
		}
	}
	return b.String()
}

// cgroupMounts returns the mount points of the cgroup hierarchies (v1 and
// v2).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		i := slices.Index(fields, "-")
		if i < 0 || i+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if t := fields[i+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// makeCgroups creates the cluster's cgroup in every hierarchy; in the
// cpuset hierarchy it gets its parent's CPUs and memory nodes, without
// which nothing could run in it.
func (s *hostState) makeCgroups() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		dir := filepath.Join(m, s.Cgroup)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(m, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", dir, f, err)
				}
			}
		}
	}
	return nil
}

// joinCgroup moves a process into the cluster's cgroup below sub, in every
// hierarchy.
func (s *hostState) joinCgroup(pid int, sub string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		dir := filepath.Join(m, s.Cgroup, sub)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(m, s.Cgroup, f)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, f), v, 0o644)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("move pid %d to cgroup %s: %w", pid, dir, err)
		}
	}
	return nil
}

// cgroupPids lists the processes in the cluster's cgroups.
func (s *hostState) cgroupPids() []int {
	mounts, _ := cgroupMounts()
	seen := map[int]bool{}
	for _, m := range mounts {
		_ = filepath.WalkDir(filepath.Join(m, s.Cgroup), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// killAll kills every process in the cluster's cgroups, until none is
// left or timeout.
func (s *hostState) killAll(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := s.cgroupPids()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in cgroup %s after %s", pids, s.Cgroup, timeout)
		}
		for _, pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes the cluster's cgroups, deepest first.
func (s *hostState) removeCgroups() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		root := filepath.Join(m, s.Cgroup)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			var err error
			// A cgroup whose last process just died can be busy a moment.
			for range 50 {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mountsBelow lists the mount points at or below dir, most recent first.
func mountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if dir == "/" || mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.Reverse(out)
	return out, sc.Err()
}

// unescapeMount decodes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll detaches every mount below dir.
func unmountAll(dir string) error {
	for range 10 {
		mps, err := mountsBelow(dir)
		if err != nil || len(mps) == 0 {
			return err
		}
		for _, mp := range mps {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	mps, _ := mountsBelow(dir)
	if len(mps) > 0 {
		return fmt.Errorf("still mounted below %s: %v", dir, mps)
	}
	return nil
}

// restoreSysctls writes back the values from before the start.
func (s *hostState) restoreSysctls() error {
	var errs []error
	for k, v := range s.Sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

// hostPathEntries lists everything below hostPaths, the paths themselves
// included.
func hostPathEntries() []string {
	var out []string
	for _, p := range hostPaths {
		_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err == nil {
				out = append(out, path)
			}
			return nil
		})
	}
	return out
}

// removeHostPathEntries removes, deepest first, what is below hostPaths and
// was not before the start.
func (s *hostState) removeHostPathEntries() error {
	now := hostPathEntries()
	slices.Reverse(now)
	var errs []error
	for _, p := range now {
		if slices.Contains(s.HostPaths, p) {
			continue
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// undo undoes everything the state records; it can run more than once.
// Processes are killed outright: the graceful part, when there is one, is
// the caller's.
func (s *hostState) undo() error {
	var errs []error
	if s.Cgroup != "" {
		if err := s.killAll(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountAll(s.Dir); err != nil {
		errs = append(errs, err)
	}
	if s.Cgroup != "" {
		if err := s.removeCgroups(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.restoreSysctls(); err != nil {
		errs = append(errs, err)
	}
	if err := s.removeHostPathEntries(); err != nil {
		errs = append(errs, err)
	}
	if now := iptablesRules(); now != s.Iptables {
		errs = append(errs, fmt.Errorf("the host's iptables rules changed while the cluster ran:\nbefore:\n%s\nafter:\n%s", s.Iptables, now))
	}
	if keep := os.Getenv(KeepEnv); keep != "" {
		fmt.Fprintf(os.Stderr, "kubetest: %s set: keeping %s\n", KeepEnv, s.Dir)
	} else if mps, _ := mountsBelow(s.Dir); len(mps) == 0 {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, fmt.Errorf("%s not removed: mounts remain below it: %v", s.Dir, mps))
	}
	return errors.Join(errs...)
}

// hostPaths are where a kubelet, containerd or CNI keep state by default;
// the cluster must leave them as they were (it keeps its own below Dir).
var hostPaths = []string{
	"/run/containerd", "/run/netns", "/var/run/netns", "/var/lib/kubelet", "/var/lib/containerd", "/var/log/pods",
	"/var/log/containers", "/etc/cni", "/opt/cni", "/opt/containerd", "/usr/libexec/kubernetes", "/etc/kubernetes",
}

// hostSnapshot is the part of the host a cluster could change.
type hostSnapshot struct {
	sysctls  map[string]string
	mounts   []string // mount points
	cgroups  []string // the top-level cgroups of every hierarchy
	paths    []string // which of hostPaths exist, and what they hold
	iptables string
}

func takeSnapshot() hostSnapshot {
	s := hostSnapshot{sysctls: map[string]string{}, iptables: iptablesRules()}
	for _, k := range kubeletSysctls {
		b, _ := os.ReadFile("/proc/sys/" + k)
		s.sysctls[k] = strings.TrimSpace(string(b))
	}
	s.mounts, _ = mountsBelow("/")
	slices.Sort(s.mounts)
	mounts, _ := cgroupMounts()
	for _, m := range mounts {
		entries, _ := os.ReadDir(m)
		for _, e := range entries {
			if e.IsDir() {
				s.cgroups = append(s.cgroups, filepath.Join(m, e.Name()))
			}
		}
	}
	s.paths = hostPathEntries()
	return s
}

// compare describes how after differs from s; ours tells whether a
// difference is the cluster's (the rest, a mount or cgroup another
// program on the host made meanwhile, is only reported).
func (s hostSnapshot) compare(after hostSnapshot, ours func(string) bool) (diffs, others []string) {
	for k, v := range s.sysctls {
		if after.sysctls[k] != v {
			diffs = append(diffs, fmt.Sprintf("sysctl %s: %s, was %s", strings.ReplaceAll(k, "/", "."), after.sysctls[k], v))
		}
	}
	list := func(what string, before, now []string, always bool) {
		for _, x := range now {
			if !slices.Contains(before, x) {
				if always || ours(x) {
					diffs = append(diffs, what+" added: "+x)
				} else {
					others = append(others, what+" added: "+x)
				}
			}
		}
		for _, x := range before {
			if !slices.Contains(now, x) {
				if always || ours(x) {
					diffs = append(diffs, what+" gone: "+x)
				} else {
					others = append(others, what+" gone: "+x)
				}
			}
		}
	}
	list("mount", s.mounts, after.mounts, false)
	list("cgroup", s.cgroups, after.cgroups, false)
	list("path", s.paths, after.paths, true)
	if s.iptables != after.iptables {
		diffs = append(diffs, fmt.Sprintf("iptables rules changed:\nbefore:\n%s\nafter:\n%s", s.iptables, after.iptables))
	}
	return diffs, others
}

// summary says what was compared.
func (s hostSnapshot) summary() string {
	var sys []string
	for _, k := range kubeletSysctls {
		sys = append(sys, strings.ReplaceAll(k, "/", ".")+"="+s.sysctls[k])
	}
	rules := 0
	for line := range strings.Lines(s.iptables) {
		if strings.HasPrefix(line, "-A ") {
			rules++
		}
	}
	return fmt.Sprintf("sysctls %s; %d mounts; %d top-level cgroups; %d entries below %d kubelet/containerd/CNI paths; %d iptables rules",
		strings.Join(sys, " "), len(s.mounts), len(s.cgroups), len(s.paths), len(hostPaths), rules)
}

// KeepEnv names an environment variable that, when set, keeps the
// cluster's directory (logs, etcd, volumes) after the run, for debugging.
const KeepEnv = "MYSQL_PITR_KUBETEST_KEEP"

// reaperEnv names the state file in the reaper's environment.
const reaperEnv = "MYSQL_PITR_KUBETEST_REAPER"

// reaperDone is what the test binary writes to the reaper once it has
// undone everything itself.
const reaperDone = "done"

// startReaper starts the reaper: this executable again, in a session of
// its own (so a Ctrl-C to the test does not reach it), reading stdin until
// the test binary closes it. lock is passed on, so the host stays locked
// until the reaper is done.
func startReaper(statePath string, lock *os.File) (*os.File, *exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), reaperEnv+"="+statePath)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, nil, fmt.Errorf("start reaper: %w", err)
	}
	r.Close()
	return w, cmd, nil
}

// reap is the reaper: it waits for the test binary to close stdin and, unless
// the test binary said it undid everything itself, undoes what the state
// file records.
func reap(statePath string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGQUIT)
	msg, _ := io.ReadAll(os.Stdin)
	if strings.TrimSpace(string(msg)) == reaperDone {
		return 0
	}
	b, err := os.ReadFile(statePath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest reaper: read %s: %v\n", statePath, err)
		return 1
	}
	var s hostState
	if err := json.Unmarshal(b, &s); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest reaper: %s: %v\n", statePath, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kubetest reaper: the test binary ended without stopping its cluster; stopping it and undoing its changes to the host\n")
	if err := s.undo(); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest reaper: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kubetest reaper: done\n")
	return 0
}
