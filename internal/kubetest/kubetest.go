// Package kubetest runs a real one-node Kubernetes cluster on this host for
// tests: etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
// and a node made of containerd, runc and a kubelet, all of the versions
// scripts/kube-build.sh builds. Pods run for real, from images made here
// (images.go): the mysql-pitr binary, and server images made from the
// Debian server roots with a test entrypoint in place of the official
// images' one. The cluster has no pod network and no Services (cni.go says
// what it has instead), and its volumes are directories
// (provisioner.go).
//
// One cluster runs per test binary, started by the first test that asks
// for it (Get) and stopped after all tests ran (Run); one at a time runs
// on the host, and whatever it changed on the host is undone when it stops
// or when the test binary dies (host.go). It needs root. Under CI=true a
// missing program fails the test; elsewhere the test is skipped, naming
// what to install.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// The versions scripts/kube-build.sh builds (a test keeps them equal).
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.4"
)

// CacheEnv names the environment variable that overrides DefaultCache,
// read by scripts/kube-build.sh too.
const CacheEnv = "MYSQL_PITR_KUBE_CACHE"

// DefaultCache is where scripts/kube-build.sh puts the binaries.
const DefaultCache = "/var/cache/mysql-pitr/kube"

const installHint = "scripts/setup.sh (scripts/kube-build.sh builds Kubernetes " + KubeVersion + " and etcd " + EtcdVersion +
	"; apt-get install containerd runc containernetworking-plugins)"

// hostLock is the abstract unix socket that one cluster at a time holds:
// two kubelets would fight over the host's sysctls.
const hostLock = "@mysql-pitr-kubetest"

// Timeouts of the cluster's start.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = 2 * time.Minute
)

// binaries are the programs the cluster runs.
type binaries struct {
	etcd, apiserver, controllerManager, scheduler, kubelet string
	containerd, ctr, loopback                              string
}

// CacheDir is where the Kubernetes and etcd binaries are.
func CacheDir() string {
	if d := os.Getenv(CacheEnv); d != "" {
		return d
	}
	return DefaultCache
}

// findBinaries finds the programs, or says which are missing.
func findBinaries() (binaries, error) {
	kube := filepath.Join(CacheDir(), "kubernetes-"+KubeVersion)
	b := binaries{
		etcd:              filepath.Join(CacheDir(), "etcd-"+EtcdVersion, "etcd"),
		apiserver:         filepath.Join(kube, "kube-apiserver"),
		controllerManager: filepath.Join(kube, "kube-controller-manager"),
		scheduler:         filepath.Join(kube, "kube-scheduler"),
		kubelet:           filepath.Join(kube, "kubelet"),
		loopback:          "/usr/lib/cni/loopback",
	}
	var missing []string
	for _, p := range []string{b.etcd, b.apiserver, b.controllerManager, b.scheduler, b.kubelet, b.loopback} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, name := range []struct {
		dst  *string
		name string
	}{{&b.containerd, "containerd"}, {&b.ctr, "ctr"}, {nil, "runc"}, {nil, "containerd-shim-runc-v2"}, {nil, "mount"}} {
		p, err := testbed.LookBinary(name.name)
		if err != nil {
			missing = append(missing, name.name)
			continue
		}
		if name.dst != nil {
			*name.dst = p
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return b, nil
}

// Cluster is a running test cluster.
type Cluster struct {
	dir   string
	state *hostState
	bin   binaries
	pki   *pki
	start time.Time
	// before is the host as it was before the start.
	before hostSnapshot

	apiPort    int
	kubeconfig string
	config     *rest.Config
	client     kubernetes.Interface

	procs  []*process
	cni    *cniServer
	lock   net.Listener
	reaper *exec.Cmd
	toReap *os.File

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	images map[string]error
	binary string // the static mysql-pitr binary
	plugin string // the kubectl plugin, kubectl-mysql_pitr
}

// The package's cluster.
var pkg struct {
	mu      sync.Mutex
	enabled bool
	c       *Cluster
	err     error
}

// Run runs the tests (m.Run) with a cluster available through Get and
// stops it afterwards, undoing its changes to the host:
//
//	func TestMain(m *testing.M) { os.Exit(kubetest.Run(m)) }
//
// The cluster starts lazily, so a run that selects no test needing it
// starts nothing. Run is also where the reaper runs (host.go), which is
// why every test binary that uses Get must call it.
func Run(m interface{ Run() int }) int {
	if state := os.Getenv(reaperEnv); state != "" {
		return reap(state)
	}
	pkg.mu.Lock()
	pkg.enabled = true
	pkg.mu.Unlock()

	code := m.Run()

	pkg.mu.Lock()
	defer pkg.mu.Unlock()
	if pkg.c != nil {
		if err := pkg.c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stop the cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		pkg.c = nil
	}
	pkg.enabled = false
	return code
}

// Get returns the package's cluster, starting it on first use. It skips
// the test, or fails it under CI=true, when a program is missing or the
// test does not run as root.
func Get(tb testing.TB) *Cluster {
	tb.Helper()
	pkg.mu.Lock()
	defer pkg.mu.Unlock()
	if !pkg.enabled {
		tb.Fatal("kubetest.Get needs TestMain to call kubetest.Run")
	}
	if pkg.c == nil && pkg.err == nil {
		bin, err := findBinaries()
		if err != nil {
			skipOrFail(tb, fmt.Sprintf("the test cluster: %v: install them with %s", err, installHint))
		}
		if os.Geteuid() != 0 {
			skipOrFail(tb, "the test cluster needs root (it runs a kubelet)")
		}
		pkg.c, pkg.err = start(bin)
	}
	if pkg.err != nil {
		// Every later test fails with the same cause instead of each
		// paying for another start that would fail the same way.
		tb.Fatalf("start the test cluster: %v", pkg.err)
	}
	return pkg.c
}

func skipOrFail(tb testing.TB, msg string) {
	tb.Helper()
	if testbed.InCI() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubetest [%s]: %s\n", time.Since(c.start).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
}

// Client returns a client with the cluster's administrator credentials.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// RESTConfig returns the administrator's client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Kubeconfig returns the path of a kubeconfig with the administrator's
// credentials (for helm).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// KubeconfigFor writes a kubeconfig that authenticates as the service
// account ns/name with a token from the TokenRequest API (valid an hour),
// its namespace ns, and returns its path.
func (c *Cluster) KubeconfigFor(tb testing.TB, ns, name string) string {
	tb.Helper()
	exp := int64(3600)
	tok, err := c.client.CoreV1().ServiceAccounts(ns).CreateToken(tb.Context(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("token for service account %s/%s: %v", ns, name, err)
	}
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := c.writeKubeconfig(path, "token: "+tok.Status.Token, ns); err != nil {
		tb.Fatal(err)
	}
	return path
}

// writeKubeconfig writes a kubeconfig for the API server with the given
// user lines and namespace.
func (c *Cluster) writeKubeconfig(path, user, ns string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\nclusters:\n- name: kubetest\n  cluster:\n    server: https://127.0.0.1:%d\n    certificate-authority: %s\n", c.apiPort, c.pki.CAFile())
	fmt.Fprintf(&b, "users:\n- name: kubetest\n  user:\n")
	for line := range strings.Lines(user) {
		fmt.Fprintf(&b, "    %s", line)
		if !strings.HasSuffix(line, "\n") {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "contexts:\n- name: kubetest\n  context:\n    cluster: kubetest\n    user: kubetest\n")
	if ns != "" {
		fmt.Fprintf(&b, "    namespace: %s\n", ns)
	}
	b.WriteString("current-context: kubetest\n")
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// ExposeHostPort makes the host's 127.0.0.1:port reachable at the same
// address inside the pods that start from now on until the test ends (how
// pods reach a testbed S3 gateway).
func (c *Cluster) ExposeHostPort(tb testing.TB, port int) {
	tb.Cleanup(c.cni.exposeHostPort(port))
}

// Namespace creates a namespace named prefix-XXXXX that enforces the
// restricted Pod Security Standard, and deletes it when the test ends,
// waiting until its pods are gone; when the test failed, the pods' state,
// events and logs are logged first.
func (c *Cluster) Namespace(tb testing.TB, prefix string) string {
	tb.Helper()
	ns, err := c.client.CoreV1().Namespaces().Create(tb.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: prefix + "-",
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
			"pod-security.kubernetes.io/warn":            "restricted",
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	name := ns.Name
	// Pods are refused until the controller manager made the namespace's
	// default service account.
	ctx, cancel := context.WithTimeout(tb.Context(), startTimeout)
	defer cancel()
	if err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		tb.Fatalf("namespace %s: no default service account: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if tb.Failed() {
			c.Dump(ctx, tb, name)
		}
		if err := c.deleteNamespace(ctx, name); err != nil {
			tb.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// deleteNamespace deletes a namespace and waits until it is gone.
func (c *Cluster) deleteNamespace(ctx context.Context, name string) error {
	err := c.client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return poll(ctx, time.Second, func() (bool, error) {
		_, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// Dump logs the state of the namespace's pods, its events and every
// container's log (and the previous one's, after a restart).
func (c *Cluster) Dump(ctx context.Context, tb testing.TB, ns string) {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "namespace %s:\n", ns)
	pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		tb.Logf("list pods of %s: %v", ns, err)
		return
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s (uid %s): phase %s, ip %s\n", p.Name, p.UID, p.Status.Phase, p.Status.PodIP)
		for _, cond := range p.Status.Conditions {
			fmt.Fprintf(&b, "  condition %s=%s %s %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
		for _, set := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, st := range set {
				fmt.Fprintf(&b, "  container %s: ready %v, restarts %d, state %s\n", st.Name, st.Ready, st.RestartCount, containerState(st.State))
				for _, previous := range []bool{false, true} {
					if previous && st.RestartCount == 0 {
						continue
					}
					logs, err := c.client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: st.Name, Previous: previous}).DoRaw(ctx)
					if err != nil {
						fmt.Fprintf(&b, "    log (previous %v): %v\n", previous, err)
						continue
					}
					fmt.Fprintf(&b, "    log (previous %v):\n%s\n", previous, indent(lastLines(string(logs), 60), "      "))
				}
			}
		}
	}
	if evs, err := c.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		b.WriteString("events:\n")
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "  %s %s %s/%s: %s (%d×)\n", e.LastTimestamp.Format(time.TimeOnly), e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason+": "+e.Message, e.Count)
		}
	}
	tb.Log(b.String())
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.Format(time.TimeOnly)
	case s.Waiting != nil:
		return "waiting: " + s.Waiting.Reason + " " + s.Waiting.Message
	case s.Terminated != nil:
		return fmt.Sprintf("terminated: exit %d %s %s", s.Terminated.ExitCode, s.Terminated.Reason, s.Terminated.Message)
	}
	return "unknown"
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(prefix + line)
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// poll calls cond every interval until it reports true, fails, or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// process is a program the cluster runs, logging to a file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process's log.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	return lastLines(string(b), 25)
}

// run starts a program in the cluster's cgroup below sub, logging to
// logs/name.log.
func (c *Cluster) run(name, sub string, args ...string) (*process, error) {
	logPath := filepath.Join(c.dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.dir
	// Its own process group: a Ctrl-C to the test does not reach it, and it
	// is stopped in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	c.procs = append(c.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := c.state.joinCgroup(cmd.Process.Pid, sub); err != nil {
		return p, err
	}
	return p, nil
}

// waitReady polls ready until it succeeds; it fails early when p exits.
func waitReady(ctx context.Context, p *process, what string, ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var last error
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, p.tail())
		}
		last = ready(ctx)
		return last == nil, nil
	})
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s not %s after %s (%v):\n%s", p.name, what, startTimeout, last, p.tail())
	}
	return err
}

// httpOK returns nil when GET url answers 200.
func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(body.String()))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// restConfig loads a kubeconfig.
func restConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 30 * time.Second
	return cfg, nil
}
