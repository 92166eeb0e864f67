package kubetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// NodeName is the node's name. A node's address may not be a loopback
// one, and the kubelet listens only on 127.0.0.1: the API server reaches
// it by the node's Hostname address, which is its name, and localhost
// resolves to the loopback address.
const NodeName = "localhost"

// serviceRange is the range Service cluster IPs are allocated from. Nothing
// routes them (there is no kube-proxy): it is the documentation range
// TEST-NET-2, so no address of a private range is used.
const serviceRange = "198.51.100.0/24"

// acquireHostLock takes the host's cluster lock, waiting while another
// test binary holds it.
func acquireHostLock(logf func(string, ...any)) (net.Listener, error) {
	said := false
	deadline := time.Now().Add(45 * time.Minute)
	for {
		ln, err := net.Listen("unix", hostLock)
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("lock %s: %w", hostLock, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("another test cluster has held %s for 45 minutes", hostLock)
		}
		if !said {
			logf("another test cluster runs on this host; waiting for it to stop")
			said = true
		}
		time.Sleep(time.Second)
	}
}

// start starts the cluster; a start that fails undoes what it did.
func start(bin binaries) (_ *Cluster, err error) {
	c := &Cluster{bin: bin, start: time.Now(), images: map[string]error{}}
	if c.lock, err = acquireHostLock(c.logf); err != nil {
		return nil, err
	}
	c.before = takeSnapshot()
	if c.dir, err = os.MkdirTemp("", "kubetest-"); err != nil {
		c.lock.Close()
		return nil, err
	}
	c.state = &hostState{Dir: c.dir, Cgroup: "mysql-pitr-kubetest-" + randomHex(4)}
	if err := c.state.record(); err != nil {
		c.lock.Close()
		os.RemoveAll(c.dir)
		return nil, err
	}
	lockFile, err := c.lock.(*net.UnixListener).File()
	if err != nil {
		c.lock.Close()
		os.RemoveAll(c.dir)
		return nil, err
	}
	c.toReap, c.reaper, err = startReaper(c.state.path(), lockFile)
	lockFile.Close()
	if err != nil {
		c.lock.Close()
		os.RemoveAll(c.dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			if serr := c.stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop: %w", serr))
			}
		}
	}()
	c.logf("starting Kubernetes %s in %s (cgroup %s)", KubeVersion, c.dir, c.state.Cgroup)
	for _, d := range []string{"logs", "bin", "pki", "etcd", "volumes", "cni/bin", "cni/net.d", "kubelet", "containerd", "pod-logs", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.state.makeCgroups(); err != nil {
		return nil, err
	}
	if err := c.buildTools(); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(); err != nil {
		return nil, err
	}
	if err := c.startNode(); err != nil {
		return nil, err
	}
	c.logf("cluster ready")
	return c, nil
}

// goBinary finds the go command the tests run with.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// moduleRoot is the directory of this repository's go.mod, found from the
// test's working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/mysql-pitr/mysql-pitr\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the mysql-pitr module")
		}
		dir = parent
	}
}

// buildTools builds the static mysql-pitr binary as the Dockerfile does,
// the CNI plugin and the sandbox program into bin.
func (c *Cluster) buildTools() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command(goBinary(), "build", "-trimpath", "-ldflags", "-s -w -X main.version=kubetest",
		"-o", filepath.Join(c.dir, "bin")+"/",
		"./cmd/mysql-pitr", "./internal/kubetest/cmd/kubetest-cni", "./internal/kubetest/cmd/kubetest-pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	c.binary = filepath.Join(c.dir, "bin", "mysql-pitr")
	return nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := testbed.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// startControlPlane starts etcd, the API server, the controller manager and
// the scheduler.
func (c *Cluster) startControlPlane() error {
	var err error
	if c.pki, err = newPKI(filepath.Join(c.dir, "pki")); err != nil {
		return err
	}
	apiCert, apiKey, err := c.pki.issue("apiserver", "kube-apiserver", nil,
		"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", "198.51.100.1")
	if err != nil {
		return err
	}
	kubeletClientCert, kubeletClientKey, err := c.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return err
	}
	saPub, saKey, err := c.pki.serviceAccountKey()
	if err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort := ports[0], ports[1]
	c.apiPort = ports[2]

	etcd, err := c.run("etcd", "control", c.bin.etcd,
		"--name=kubetest", "--data-dir="+filepath.Join(c.dir, "etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-cluster=kubetest=http://127.0.0.1:%d", peerPort),
		// A test cluster's data is thrown away: durability buys nothing.
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if err := waitReady(context.Background(), etcd, "healthy", func(ctx context.Context) error {
		return httpOK(ctx, plain, fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort))
	}); err != nil {
		return err
	}

	apiserver, err := c.run("kube-apiserver", "control", c.bin.apiserver,
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", c.apiPort),
		"--tls-cert-file="+apiCert, "--tls-private-key-file="+apiKey,
		"--client-ca-file="+c.pki.CAFile(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range="+serviceRange,
		// The advertised address is a loopback one, which an Endpoints
		// object may not hold.
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+kubeletClientCert, "--kubelet-client-key="+kubeletClientKey,
		"--kubelet-preferred-address-types=Hostname",
		"--allow-privileged=false", "--profiling=false",
		"--cert-dir="+filepath.Join(c.dir, "pki", "apiserver-generated"))
	if err != nil {
		return err
	}

	// The administrator's kubeconfig and the components'.
	users := map[string][2]string{}
	for _, u := range []struct{ name, cn, org string }{
		{"admin", "kubetest-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
	} {
		var orgs []string
		if u.org != "" {
			orgs = []string{u.org}
		}
		cert, key, err := c.pki.issue(u.name, u.cn, orgs)
		if err != nil {
			return err
		}
		users[u.name] = [2]string{cert, key}
		if err := c.writeKubeconfig(filepath.Join(c.dir, u.name+".kubeconfig"),
			fmt.Sprintf("client-certificate: %s\nclient-key: %s\n", cert, key), ""); err != nil {
			return err
		}
	}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	admin := users["admin"]
	pair, err := tls.LoadX509KeyPair(admin[0], admin[1])
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.pki.cert)
	secure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
	if err := waitReady(context.Background(), apiserver, "ready", func(ctx context.Context) error {
		return httpOK(ctx, secure, fmt.Sprintf("https://127.0.0.1:%d/readyz", c.apiPort))
	}); err != nil {
		return err
	}
	if c.config, err = restConfig(c.kubeconfig); err != nil {
		return err
	}
	if c.client, err = kubernetes.NewForConfig(c.config); err != nil {
		return err
	}
	c.logf("API server ready on 127.0.0.1:%d", c.apiPort)

	if _, err := c.run("kube-controller-manager", "control", c.bin.controllerManager,
		"--kubeconfig="+filepath.Join(c.dir, "controller-manager.kubeconfig"),
		"--secure-port=0", "--leader-elect=false",
		"--flex-volume-plugin-dir="+filepath.Join(c.dir, "volume-plugins"),
		"--service-account-private-key-file="+saKey, "--root-ca-file="+c.pki.CAFile(),
		"--use-service-account-credentials=true"); err != nil {
		return err
	}
	if _, err := c.run("kube-scheduler", "control", c.bin.scheduler,
		"--kubeconfig="+filepath.Join(c.dir, "scheduler.kubeconfig"),
		"--secure-port=0", "--leader-elect=false"); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) containerdSocket() string { return filepath.Join(c.dir, "containerd.sock") }

// startNode starts containerd and the kubelet, with the CNI plugin, the
// sandbox image and the storage provisioner, and waits for the node to be
// Ready.
func (c *Cluster) startNode() error {
	d := c.dir
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
# Snapshotters and tracing the node does not use.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # The machine lacks CAP_SYS_RESOURCE: a container may not lower its
  # oom_score_adj below the shim's, which runc would otherwise try.
  restrict_oom_score_adj = true
  # The pods' network namespaces are mounted below the state directory,
  # not in /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state, by default in /run/containerd/runc.
        Root = %[8]q
`, filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state"), c.containerdSocket(),
		filepath.Join(d, "containerd", "opt"), pauseImage, filepath.Join(d, "cni", "bin"), filepath.Join(d, "cni", "net.d"),
		filepath.Join(d, "containerd", "runc"))
	if err := os.WriteFile(filepath.Join(d, "containerd.toml"), []byte(config), 0o644); err != nil {
		return err
	}
	containerd, err := c.run("containerd", "runtime", c.bin.containerd, "--config="+filepath.Join(d, "containerd.toml"), "--log-level=warn")
	if err != nil {
		return err
	}
	if err := waitReady(context.Background(), containerd, "serving", func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, c.bin.ctr, "--address", c.containerdSocket(), "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}); err != nil {
		return err
	}
	pause, err := staticImage(pauseImage, filepath.Join(d, "bin", "kubetest-pause"), 65535, "pause")
	if err != nil {
		return err
	}
	if err := c.importImage(pause); err != nil {
		return err
	}

	// The CNI plugin and its configuration; containerd brings up each
	// pod's lo with the loopback plugin itself.
	if c.cni, err = newCNIServer(c, filepath.Join(d, "cni.sock")); err != nil {
		return err
	}
	if err := os.Symlink(c.bin.loopback, filepath.Join(d, "cni", "bin", "loopback")); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(d, "bin", "kubetest-cni"), filepath.Join(d, "cni", "bin", "kubetest-cni")); err != nil {
		return err
	}
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "kubetest", "plugins": [{"type": "kubetest-cni", "socket": %q}]}`, filepath.Join(d, "cni.sock"))
	if err := os.WriteFile(filepath.Join(d, "cni", "net.d", "10-kubetest.conflist"), []byte(conf), 0o644); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if _, err := c.client.StorageV1().StorageClasses().Create(ctx, storageClass(), metav1.CreateOptions{}); err != nil {
		return err
	}
	prov := &provisioner{client: c.client, dir: filepath.Join(d, "volumes"), logf: c.logf}
	c.wg.Go(func() { prov.run(ctx) })

	servingCert, servingKey, err := c.pki.issue("kubelet-serving", NodeName, nil, NodeName, "127.0.0.1")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	kubeletConfig := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%s
# The machine has cgroup v1 and no systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /%s
failSwapOn: false
# Leave the host's iptables alone (the KUBE-FIREWALL chain and its rules).
makeIPTablesUtilChains: false
volumePluginDir: %s
podLogsDir: %s
resolvConf: ""
maxPods: 30
# The disk is the host's, shared: the node neither evicts pods nor deletes
# images because of what others use.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, ports[0], ports[1], servingCert, servingKey, c.pki.CAFile(), c.containerdSocket(), c.state.Cgroup,
		filepath.Join(d, "volume-plugins"), filepath.Join(d, "pod-logs"))
	if err := os.WriteFile(filepath.Join(d, "kubelet.yaml"), []byte(kubeletConfig), 0o644); err != nil {
		return err
	}
	kubelet, err := c.run("kubelet", "kubelet", c.bin.kubelet,
		"--config="+filepath.Join(d, "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(d, "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(d, "kubelet"),
		"--cert-dir="+filepath.Join(d, "kubelet", "pki"),
		"--hostname-override="+NodeName, "--v=2")
	if err != nil {
		return err
	}
	return waitReady(context.Background(), kubelet, "Ready", func(ctx context.Context) error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s: %s", cond.Reason, cond.Message)
			}
		}
		return errors.New("node has no Ready condition yet")
	})
}

// stop stops everything and undoes the host changes; the reaper is told
// it has nothing left to do.
func (c *Cluster) stop() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if c.client != nil && c.kubeletRunning() {
		if err := c.deleteAllPods(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if c.cancel != nil {
		c.cancel()
		c.wg.Wait()
	}
	// The kubelet first, then the runtime, then the control plane.
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	if c.cni != nil {
		c.cni.close()
	}
	if c.state != nil {
		if err := c.state.undo(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.toReap != nil {
		_, _ = c.toReap.WriteString(reaperDone)
		c.toReap.Close()
		_ = c.reaper.Wait()
	}
	if err := c.checkHost(); err != nil {
		errs = append(errs, err)
	}
	if c.lock != nil {
		c.lock.Close()
	}
	c.logf("cluster stopped")
	return errors.Join(errs...)
}

// checkHost compares the host with how it was before the start: the
// kubelet's sysctls, the mounts, the cgroups, the kubelet's, containerd's
// and CNI's default paths, the iptables rules, and the processes.
func (c *Cluster) checkHost() error {
	after := takeSnapshot()
	ours := func(s string) bool {
		return strings.Contains(s, c.dir) || (c.state != nil && strings.Contains(s, c.state.Cgroup))
	}
	diffs, others := c.before.compare(after, ours)
	if procs := processesUsing(c.dir); len(procs) > 0 {
		diffs = append(diffs, "processes still running: "+strings.Join(procs, "; "))
	}
	for _, o := range others {
		c.logf("host changed meanwhile, not by the cluster: %s", o)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("the host is not as before the cluster started:\n%s", strings.Join(diffs, "\n"))
	}
	c.logf("host as before the cluster: %s; no process left", after.summary())
	return nil
}

// processesUsing lists the processes whose command line names dir.
func processesUsing(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, dir) {
			out = append(out, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	return out
}

func (c *Cluster) kubeletRunning() bool {
	for _, p := range c.procs {
		if p.name == "kubelet" {
			return !p.exited()
		}
	}
	return false
}

// deleteAllPods deletes the pods the tests left and waits until the
// kubelet stopped them.
func (c *Cluster) deleteAllPods(ctx context.Context) error {
	pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	grace := int64(5)
	for _, p := range pods.Items {
		err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return poll(wctx, 500*time.Millisecond, func() (bool, error) {
		pods, err := c.client.CoreV1().Pods("").List(wctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
}

// stop sends SIGTERM and, after grace, SIGKILL.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
