package chart_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// podRunner runs the containers of a rendered pod spec as local processes,
// the way the kubelet would run them, with every container path mapped to a
// host path. The mapping is built from the rendered pod and nothing else:
//
//   - each volumeMount's mountPath maps to a host directory holding that
//     volume (or its subPath, created as the kubelet does when missing):
//     a PersistentVolumeClaim volume to the directory the test gives
//     for it (claims), an emptyDir to a fresh directory shared by the pod's
//     containers, a ConfigMap or Secret volume to a directory filled with the
//     object's keys (items and modes as rendered) from objects;
//   - each container's terminationMessagePath maps to a host file;
//   - an image's own files (its entrypoint) map to host files (images).
//
// Command, args and env are taken from the container as rendered: env
// values and valueFrom resolved in order (downward API, ConfigMap and
// Secret keys), $(VAR) references expanded as the kubelet does, then every
// argument, every "--flag=value" and every env value that is an absolute
// container path is replaced by its host path. A container path on no
// mount fails the test: in the pod it would be the image's read-only root.
// The image's programs (sh, mariadbd) are the host's, from PATH.
type podRunner struct {
	t       *testing.T
	name    string
	ns      string
	spec    *corev1.PodSpec
	objects clusterObjects
	images  map[string]map[string]string
	claims  map[string]string

	root    string
	volumes map[string]string // volume name → host directory, made on first use
	last    *containerProc    // the container run last
}

// clusterObjects are the ConfigMaps (rendered, and written by the test as a
// user or kubectl mysql-pitr restore would) and Secrets (the user's) a pod can mount.
type clusterObjects struct {
	configMaps map[string]map[string]string
	secrets    map[string]map[string]string
}

func newPodRunner(t *testing.T, name string, spec *corev1.PodSpec, objects clusterObjects, images map[string]map[string]string, claims map[string]string) *podRunner {
	t.Helper()
	// Not t.TempDir: the restore's temporary server puts a socket below
	// TMPDIR, and a socket path is limited to 107 bytes.
	root, err := os.MkdirTemp("", "pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return &podRunner{t: t, name: name, ns: "databases", spec: spec, objects: objects, images: images, claims: claims,
		root: root, volumes: map[string]string{}}
}

// volumeDir returns the host directory of the pod's volume name.
func (p *podRunner) volumeDir(name string) string {
	t := p.t
	t.Helper()
	if d, ok := p.volumes[name]; ok {
		return d
	}
	v := volume(p.spec, name)
	if v == nil {
		t.Fatalf("pod %s has no volume %s", p.name, name)
	}
	dir := filepath.Join(p.root, name)
	switch {
	case v.PersistentVolumeClaim != nil:
		d, ok := p.claims[name]
		if !ok {
			t.Fatalf("volume %s is a PersistentVolumeClaim; the test gives no directory for it", name)
		}
		dir = d
	case v.EmptyDir != nil:
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
	case v.ConfigMap != nil:
		data, ok := p.objects.configMaps[v.ConfigMap.Name]
		if !ok && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) {
			t.Fatalf("volume %s: ConfigMap %s does not exist: the pod would not start", name, v.ConfigMap.Name)
		}
		writeVolume(t, dir, data, v.ConfigMap.Items, v.ConfigMap.DefaultMode)
	case v.Secret != nil:
		data, ok := p.objects.secrets[v.Secret.SecretName]
		if !ok && (v.Secret.Optional == nil || !*v.Secret.Optional) {
			t.Fatalf("volume %s: Secret %s does not exist: the pod would not start", name, v.Secret.SecretName)
		}
		writeVolume(t, dir, data, v.Secret.Items, v.Secret.DefaultMode)
	default:
		t.Fatalf("volume %s: a kind of volume this test cannot provide", name)
	}
	p.volumes[name] = dir
	return dir
}

// writeVolume writes a ConfigMap's or Secret's keys as files, as the
// kubelet does: all keys, or only items (key → path), with mode.
func writeVolume(t *testing.T, dir string, data map[string]string, items []corev1.KeyToPath, mode *int32) {
	t.Helper()
	files := map[string]string{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume item %s: no such key (have %v)", it.Key, keys(data))
		}
		files[it.Path] = v
	}
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	for name, v := range files {
		f := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(v), perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, perm); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// pathMap maps one container's paths to host paths.
type pathMap struct {
	container string
	entries   [][2]string // container path, host path; longest container path first
}

// paths builds the container's path table.
func (p *podRunner) paths(c *corev1.Container) *pathMap {
	m := &pathMap{container: c.Name}
	for _, vm := range c.VolumeMounts {
		host := p.volumeDir(vm.Name)
		if vm.SubPath != "" {
			// The kubelet creates a missing subPath directory with the mode
			// of the volume's root.
			fi, err := os.Stat(host)
			if err != nil {
				p.t.Fatal(err)
			}
			host = filepath.Join(host, vm.SubPath)
			if err := os.Mkdir(host, fi.Mode().Perm()); err != nil && !os.IsExist(err) {
				p.t.Fatal(err)
			}
		}
		m.entries = append(m.entries, [2]string{strings.TrimSuffix(vm.MountPath, "/"), host})
	}
	term := c.TerminationMessagePath
	if term == "" {
		term = corev1.TerminationMessagePathDefault
	}
	m.entries = append(m.entries, [2]string{term, filepath.Join(p.root, "termination-"+c.Name)})
	for path, host := range p.images[c.Image] {
		m.entries = append(m.entries, [2]string{path, host})
	}
	sort.Slice(m.entries, func(i, j int) bool { return len(m.entries[i][0]) > len(m.entries[j][0]) })
	return m
}

// hostPath maps an absolute container path; ok is false when it is on no
// mount.
func (m *pathMap) hostPath(path string) (string, bool) {
	for _, e := range m.entries {
		if path == e[0] || strings.HasPrefix(path, e[0]+"/") {
			return e[1] + path[len(e[0]):], true
		}
	}
	return "", false
}

// mapValue maps a command-line argument or an env value: a whole absolute
// path, or the value of --flag=/path.
func (m *pathMap) mapValue(s string) (string, error) {
	prefix, val := "", s
	if strings.HasPrefix(s, "--") {
		if f, v, ok := strings.Cut(s, "="); ok {
			prefix, val = f+"=", v
		}
	}
	if !strings.HasPrefix(val, "/") {
		return s, nil
	}
	host, ok := m.hostPath(val)
	if !ok {
		return "", fmt.Errorf("container %s: path %s is on no volume mount (in the pod it would be the image's read-only root)", m.container, val)
	}
	return prefix + host, nil
}

func (m *pathMap) String() string {
	var b strings.Builder
	for _, e := range m.entries {
		fmt.Fprintf(&b, "\n  %-45s → %s", e[0], e[1])
	}
	return b.String()
}

// expand replaces $(VAR) with the value of VAR when defined, and $$ with $,
// leaving unknown references as they are (the kubelet's rules).
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := env[name]; ok {
					b.WriteString(v)
					i += 2 + end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// command resolves a container's process: argv and environment, mapped.
func (p *podRunner) command(c *corev1.Container) (argv, env []string, m *pathMap) {
	t := p.t
	t.Helper()
	m = p.paths(c)
	if len(c.EnvFrom) > 0 {
		t.Fatalf("container %s: envFrom is not supported here", c.Name)
	}
	vars := map[string]string{}
	var order []string
	for _, e := range c.Env {
		v := expand(e.Value, vars)
		if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.name":
				v = p.name
			case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.namespace":
				v = p.ns
			case f.ConfigMapKeyRef != nil:
				v = p.objects.configMaps[f.ConfigMapKeyRef.Name][f.ConfigMapKeyRef.Key]
			case f.SecretKeyRef != nil:
				v = p.objects.secrets[f.SecretKeyRef.Name][f.SecretKeyRef.Key]
			default:
				t.Fatalf("container %s: env %s: unsupported valueFrom %+v", c.Name, e.Name, f)
			}
		}
		if !slices.Contains(order, e.Name) {
			order = append(order, e.Name)
		}
		vars[e.Name] = v
	}
	for _, name := range order {
		mapped, err := m.mapValue(vars[name])
		if err != nil {
			t.Fatalf("env %s: %v", name, err)
		}
		env = append(env, name+"="+mapped)
	}
	// The image's PATH (its programs are the host's) and an empty home.
	path := os.Getenv("PATH")
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if !slices.Contains(filepath.SplitList(path), d) {
			path += ":" + d
		}
	}
	home := filepath.Join(p.root, "home-"+c.Name)
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	env = append(env, "PATH="+path, "HOME="+home)

	words := slices.Clone(c.Command)
	if len(words) == 0 {
		words = []string{"/mysql-pitr"} // the mysql-pitr image's ENTRYPOINT (TestDockerfiles)
		if _, ok := p.images[c.Image]["/mysql-pitr"]; !ok {
			t.Fatalf("container %s: no command and no known entrypoint for image %s", c.Name, c.Image)
		}
	}
	words = append(words, c.Args...)
	for _, w := range words {
		w = expand(w, vars)
		mapped, err := m.mapValue(w)
		if err != nil {
			t.Fatalf("command %q: %v", words, err)
		}
		argv = append(argv, mapped)
	}
	if !strings.HasPrefix(argv[0], "/") {
		bin, err := exec.LookPath(argv[0])
		if err != nil {
			t.Fatalf("container %s: %s is not installed here: %v", c.Name, argv[0], err)
		}
		argv[0] = bin
	}
	return argv, env, m
}

// containerProc is a running container.
type containerProc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
	term string // host path of the termination message file
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

// find returns the named container, init container first.
func (p *podRunner) find(name string) *corev1.Container {
	if c := container(p.spec.InitContainers, name); c != nil {
		return c
	}
	if c := container(p.spec.Containers, name); c != nil {
		return c
	}
	p.t.Fatalf("pod %s has no container %s", p.name, name)
	return nil
}

// start starts a container; it is killed when the test ends.
func (p *podRunner) start(name string) *containerProc {
	t := p.t
	t.Helper()
	c := p.find(name)
	argv, env, m := p.command(c)
	t.Logf("pod %s, container %s: %q\nenv: %q\npaths:%s", p.name, name, argv, env, m)
	cwd := filepath.Join(p.root, "cwd-"+name)
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	term, _ := m.hostPath(c.TerminationMessagePath)
	if c.TerminationMessagePath == "" {
		term, _ = m.hostPath(corev1.TerminationMessagePathDefault)
	}
	// The kubelet creates the termination message file before the start.
	if err := os.WriteFile(term, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = env, cwd
	proc := &containerProc{name: name, cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{}), term: term}
	cmd.Stdout, cmd.Stderr = proc.out, proc.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start container %s: %v", name, err)
	}
	go func() {
		proc.err = cmd.Wait()
		close(proc.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-proc.done
		if t.Failed() {
			t.Logf("pod %s, container %s output:\n%s", p.name, name, proc.out.String())
		}
	})
	return proc
}

// run runs an init container (or a Job's container) to its end and returns
// its exit code.
func (p *podRunner) run(ctx context.Context, name string, timeout time.Duration) (*containerProc, int) {
	p.t.Helper()
	proc := p.start(name)
	select {
	case <-proc.done:
	case <-ctx.Done():
		p.t.Fatalf("container %s: %v", name, ctx.Err())
	case <-time.After(timeout):
		p.t.Fatalf("container %s still running after %s:\n%s", name, timeout, proc.out.String())
	}
	return proc, exitCode(proc.err)
}

// stop sends SIGTERM, as the kubelet does, and waits up to grace.
func (proc *containerProc) stop(grace time.Duration) (int, error) {
	_ = proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-proc.done:
		return exitCode(proc.err), nil
	case <-time.After(grace):
		return -1, fmt.Errorf("container %s did not stop within %s of SIGTERM", proc.name, grace)
	}
}

func (proc *containerProc) exited() bool {
	select {
	case <-proc.done:
		return true
	default:
		return false
	}
}

// probe runs one of the container's HTTP probes as the kubelet would
// (the pod's IP being loopback here) and reports whether it succeeded.
func (p *podRunner) probe(name string, probe func(*corev1.Container) *corev1.Probe) (bool, error) {
	c := p.find(name)
	pr := probe(c)
	if pr == nil || pr.HTTPGet == nil {
		return false, fmt.Errorf("container %s has no such HTTP probe", name)
	}
	port := pr.HTTPGet.Port.IntValue()
	if pr.HTTPGet.Port.Type == intstr.String {
		i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == pr.HTTPGet.Port.StrVal })
		if i < 0 {
			return false, fmt.Errorf("container %s: probe port %s is not a named port", name, pr.HTTPGet.Port.StrVal)
		}
		port = int(c.Ports[i].ContainerPort)
	}
	client := http.Client{Timeout: time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, pr.HTTPGet.Path))
	if err != nil {
		return false, nil
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400, nil
}

// termination is the container's termination message.
func (proc *containerProc) termination() string {
	b, _ := os.ReadFile(proc.term)
	return string(b)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}
