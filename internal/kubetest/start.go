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
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// goBinary finds the go command the tests run with: go test puts its own
// GOROOT/bin first on the test binary's PATH.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
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
// the kubectl plugin, the CNI plugin and the sandbox program into bin.
func (c *Cluster) buildTools() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command(goBinary(), "build", "-trimpath", "-ldflags", "-s -w -X main.version=kubetest",
		"-o", filepath.Join(c.dir, "bin")+"/",
		"./cmd/mysql-pitr", "./cmd/kubectl-mysql_pitr", "./internal/kubetest/cmd/kubetest-cni", "./internal/kubetest/cmd/kubetest-pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	c.binary = filepath.Join(c.dir, "bin", "mysql-pitr")
	c.plugin = filepath.Join(c.dir, "bin", "kubectl-mysql_pitr")
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
	certs, err := c.issueControlPlaneCerts()
	if err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort := ports[0], ports[1]
	c.apiPort = ports[2]
	if err := c.startEtcd(etcdPort, peerPort); err != nil {
		return err
	}
	apiserver, err := c.startAPIServer(etcdPort, certs)
	if err != nil {
		return err
	}
	admin, err := c.writeKubeconfigs()
	if err != nil {
		return err
	}
	if err := c.connect(apiserver, admin); err != nil {
		return err
	}
	return c.startControllers(certs.saKey)
}

// controlPlaneCerts are the files of the API server's serving certificate,
// of its client certificate for the kubelet and of the service account
// key pair.
type controlPlaneCerts struct {
	apiCert, apiKey                     string
	kubeletClientCert, kubeletClientKey string
	saPub, saKey                        string
}

func (c *Cluster) issueControlPlaneCerts() (controlPlaneCerts, error) {
	var cc controlPlaneCerts
	var err error
	cc.apiCert, cc.apiKey, err = c.pki.issue("apiserver", "kube-apiserver", nil,
		"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", "198.51.100.1")
	if err != nil {
		return cc, err
	}
	cc.kubeletClientCert, cc.kubeletClientKey, err = c.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return cc, err
	}
	cc.saPub, cc.saKey, err = c.pki.serviceAccountKey()
	return cc, err
}

// startEtcd starts etcd and waits for it to be healthy.
func (c *Cluster) startEtcd(port, peerPort int) error {
	etcd, err := c.run("etcd", "control", c.bin.etcd,
		"--name=kubetest", "--data-dir="+filepath.Join(c.dir, "etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", port),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", port),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-cluster=kubetest=http://127.0.0.1:%d", peerPort),
		// A test cluster's data is thrown away: durability buys nothing.
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	return waitReady(context.Background(), etcd, "healthy", func(ctx context.Context) error {
		return httpOK(ctx, plain, fmt.Sprintf("http://127.0.0.1:%d/health", port))
	})
}

// startAPIServer starts the API server on c.apiPort, storing in etcd on
// etcdPort; connect waits for it.
func (c *Cluster) startAPIServer(etcdPort int, certs controlPlaneCerts) (*process, error) {
	return c.run("kube-apiserver", "control", c.bin.apiserver,
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", c.apiPort),
		"--tls-cert-file="+certs.apiCert, "--tls-private-key-file="+certs.apiKey,
		"--client-ca-file="+c.pki.CAFile(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+certs.saPub, "--service-account-signing-key-file="+certs.saKey,
		"--service-cluster-ip-range="+serviceRange,
		// The advertised address is a loopback one, which an Endpoints
		// object may not hold.
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+certs.kubeletClientCert, "--kubelet-client-key="+certs.kubeletClientKey,
		"--kubelet-preferred-address-types=Hostname",
		"--allow-privileged=false", "--profiling=false",
		"--cert-dir="+filepath.Join(c.dir, "pki", "apiserver-generated"))
}

// writeKubeconfigs writes the administrator's kubeconfig and the
// components', and returns the administrator's certificate and key files.
func (c *Cluster) writeKubeconfigs() ([2]string, error) {
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
			return [2]string{}, err
		}
		users[u.name] = [2]string{cert, key}
		if err := c.writeKubeconfig(filepath.Join(c.dir, u.name+".kubeconfig"),
			fmt.Sprintf("client-certificate: %s\nclient-key: %s\n", cert, key), ""); err != nil {
			return [2]string{}, err
		}
	}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	return users["admin"], nil
}

// connect waits, as the administrator, for the API server to be ready and
// makes the cluster's client.
func (c *Cluster) connect(apiserver *process, admin [2]string) error {
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
	return nil
}

// startControllers starts the controller manager, which signs service
// account tokens with saKey, and the scheduler.
func (c *Cluster) startControllers(saKey string) error {
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
	if err := c.startContainerd(); err != nil {
		return err
	}
	pause, err := staticImage(pauseImage, filepath.Join(c.dir, "bin", "kubetest-pause"), 65535, "pause")
	if err != nil {
		return err
	}
	if err := c.importImage(pause); err != nil {
		return err
	}
	if err := c.installCNI(); err != nil {
		return err
	}
	if err := c.startProvisioner(); err != nil {
		return err
	}
	return c.startKubelet()
}

// startContainerd starts containerd and waits for it to serve.
func (c *Cluster) startContainerd() error {
	d := c.dir
	if err := os.WriteFile(filepath.Join(d, "containerd.toml"), []byte(c.containerdConfig()), 0o644); err != nil {
		return err
	}
	containerd, err := c.run("containerd", "runtime", c.bin.containerd, "--config="+filepath.Join(d, "containerd.toml"), "--log-level=warn")
	if err != nil {
		return err
	}
	return waitReady(context.Background(), containerd, "serving", func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, c.bin.ctr, "--address", c.containerdSocket(), "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
}

// containerdConfig is containerd's configuration: everything it keeps is
// below the cluster's directory.
func (c *Cluster) containerdConfig() string {
	d := c.dir
	return fmt.Sprintf(`version = 2
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
}

// installCNI installs the CNI plugin and its configuration; containerd
// brings up each pod's lo with the loopback plugin itself.
func (c *Cluster) installCNI() error {
	d := c.dir
	var err error
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
	return os.WriteFile(filepath.Join(d, "cni", "net.d", "10-kubetest.conflist"), []byte(conf), 0o644)
}

// startProvisioner creates the storage class and starts the provisioner
// of its volumes, which runs until c.cancel.
func (c *Cluster) startProvisioner() error {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if _, err := c.client.StorageV1().StorageClasses().Create(ctx, storageClass(), metav1.CreateOptions{}); err != nil {
		return err
	}
	prov := &provisioner{client: c.client, dir: filepath.Join(c.dir, "volumes"), logf: c.logf}
	c.wg.Go(func() { prov.run(ctx) })
	return nil
}

// startKubelet starts the kubelet and waits for the node to be Ready.
func (c *Cluster) startKubelet() error {
	d := c.dir
	if err := c.writeKubeletConfig(); err != nil {
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
	return waitReady(context.Background(), kubelet, "Ready", c.nodeReady)
}

// writeKubeletConfig issues the kubelet's serving certificate and writes
// its configuration, kubelet.yaml.
func (c *Cluster) writeKubeletConfig() error {
	d := c.dir
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
	return os.WriteFile(filepath.Join(d, "kubelet.yaml"), []byte(kubeletConfig), 0o644)
}

// nodeReady reports why the node is not Ready yet, if it is not.
func (c *Cluster) nodeReady(ctx context.Context) error {
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
}
