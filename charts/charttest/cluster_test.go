package chart_test

// The chart on a real one-node cluster (internal/kubetest): helm installs
// into a namespace enforcing the restricted Pod Security Standard, the
// kubelet runs the pods from images built here, and kubectl mysql-pitr
// restore (the plugin) runs as a user holding only the chart's restore Role.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/kubetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/schedule"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Run(m)) }

// clusterFlavors are the servers the cluster tests install: those
// MYSQL_PITR_TEST_SERVERS names, or one of each family by default, MySQL
// 9.7 (the chart's default flavor) and MariaDB 10.11.
func clusterFlavors(t *testing.T) []testbed.Flavor {
	t.Helper()
	if os.Getenv(testbed.ServersEnv) != "" {
		return testbed.Servers(t)
	}
	return []testbed.Flavor{testbed.MariaDB1011, testbed.MySQL97}
}

// clusterPod is the name of the release's first pod.
const clusterPod = "db-mysql-pitr-0"

// release is the chart installed on the test cluster as "db".
type release struct {
	t        *testing.T
	c        *kubetest.Cluster
	ns       string
	flavor   testbed.Flavor
	gw       *testbed.S3
	prefix   string // the archive's prefix in the bucket, without the pod
	values   map[string]any
	identity *age.X25519Identity // nil when the archive is not encrypted
	// rootSecret is the Secret and key of the root password; the zero
	// value is the one the chart generates.
	rootSecret [2]string
}

// clusterValues are the values of a release on the test cluster: the test
// images (never pulled), a 20 s snapshot schedule, the archive in the test's
// S3 gateway, which the pods reach at its host address (the cluster relays
// it), small volumes, and the restore Role. The passwords are the ones the
// chart generates.
func clusterValues(c *kubetest.Cluster, t *testing.T, f testbed.Flavor, gw *testbed.S3, prefix string) map[string]any {
	server := c.ServerImage(t, f)
	agentImage := c.AgentImage(t)
	repo := func(img string) string { return img[:strings.LastIndex(img, ":")] }
	tag := func(img string) string { return img[strings.LastIndex(img, ":")+1:] }
	return map[string]any{
		"server": map[string]any{
			"flavor": f.Family(),
			"image":  map[string]any{"repository": repo(server), "tag": tag(server), "pullPolicy": "Never"},
			// Shut down within the test's patience.
			"terminationGracePeriodSeconds": 30,
		},
		"agent": map[string]any{
			"image": map[string]any{"repository": repo(agentImage), "tag": tag(agentImage), "pullPolicy": "Never"},
		},
		"persistence": map[string]any{"size": "1Gi"},
		"storage": map[string]any{
			"url": "s3://" + gw.Bucket + "/" + prefix, "region": gw.Region, "endpoint": gw.Endpoint, "pathStyle": true,
			"credentials": map[string]any{"secretName": "pitr-s3"},
		},
		"backup":  map[string]any{"schedule": "@every 20s"},
		"binlog":  map[string]any{"flushInterval": "200ms"},
		"restore": map[string]any{"threads": 2, "rbac": map[string]any{"create": true}},
	}
}

// installRelease installs the chart as release db in a new restricted
// namespace and waits for its pod to be Ready. over is merged into
// clusterValues; with encrypted, the archive is encrypted for a new age
// key whose identity the pods get from a Secret.
func installRelease(t *testing.T, c *kubetest.Cluster, f testbed.Flavor, encrypted bool, over map[string]any) *release {
	t.Helper()
	gw := testbed.StartS3(t)
	c.ExposeHostPort(t, gwPort(t, gw))
	r := &release{t: t, c: c, ns: c.Namespace(t, "db"), flavor: f, gw: gw, prefix: "pods"}
	r.values = merge(clusterValues(c, t, f, gw, r.prefix), over)
	secrets := map[string]map[string]string{
		"pitr-s3": {"credentials": fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", gw.AccessKey, gw.SecretKey)},
	}
	if encrypted {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		r.identity = id
		secrets["pitr-age"] = map[string]string{"identity": id.String() + "\n"}
		r.values = merge(r.values, map[string]any{"encryption": map[string]any{
			"ageRecipients": []any{id.Recipient().String()}, "identitySecret": "pitr-age"}})
	}
	for name, data := range secrets {
		r.createSecret(name, data)
	}
	notes := r.helm("install", "db", chartDir, "-f", writeValues(t, r.values))
	for _, w := range []string{"mysql-pitr status --url", "helm test db -n " + r.ns, "get secret db-mysql-pitr-root"} {
		if !strings.Contains(notes, w) {
			t.Errorf("helm install's NOTES lack %q:\n%s", w, notes)
		}
	}
	r.waitReady(clusterPod, "")
	return r
}

func gwPort(t *testing.T, gw *testbed.S3) int {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(gw.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	return p
}

func (r *release) createSecret(name string, data map[string]string) {
	r.t.Helper()
	_, err := r.c.Client().CoreV1().Secrets(r.ns).Create(r.t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
}

// helm runs helm against the cluster in the release's namespace.
func (r *release) helm(args ...string) string {
	r.t.Helper()
	out, err := helm(r.t, append(args, "--namespace", r.ns, "--kubeconfig", r.c.Kubeconfig())...)
	if err != nil {
		r.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// pod reads a pod.
func (r *release) pod(name string) *corev1.Pod {
	r.t.Helper()
	p, err := r.c.Client().CoreV1().Pods(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatalf("get pod %s: %v", name, err)
	}
	return p
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitReady waits until the pod is Ready with another UID than notUID.
func (r *release) waitReady(name string, notUID string) *corev1.Pod {
	r.t.Helper()
	var p *corev1.Pod
	testbed.Eventually(r.t, 6*time.Minute, func() error {
		got, err := r.c.Client().CoreV1().Pods(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("pod %s Ready: %w", name, err)
		}
		p = got
		if string(p.UID) == notUID || !podReady(p) {
			return fmt.Errorf("pod %s Ready: %s", name, podSummary(p))
		}
		return nil
	})
	return p
}

func podSummary(p *corev1.Pod) string {
	if p == nil {
		return "no pod"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "uid %s, phase %s", p.UID, p.Status.Phase)
	for _, set := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, st := range set {
			fmt.Fprintf(&b, "; %s ready=%v restarts=%d", st.Name, st.Ready, st.RestartCount)
			switch s := st.State; {
			case s.Waiting != nil:
				fmt.Fprintf(&b, " waiting %s", s.Waiting.Reason)
			case s.Terminated != nil:
				fmt.Fprintf(&b, " exited %d", s.Terminated.ExitCode)
			}
		}
	}
	return b.String()
}

// secret reads a key of a Secret.
func (r *release) secret(name, key string) string {
	r.t.Helper()
	s, err := r.c.Client().CoreV1().Secrets(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return string(s.Data[key])
}

// db connects as root to the server of pod name, at the pod's address,
// with the root password the chart generated.
func (r *release) db(name string) *sql.DB {
	r.t.Helper()
	p := r.pod(name)
	cfg := mysql.NewConfig()
	secret := r.rootSecret
	if secret[0] == "" {
		secret = [2]string{"db-mysql-pitr-root", "root-password"}
	}
	cfg.User, cfg.Passwd = "root", r.secret(secret[0], secret[1])
	cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(p.Status.PodIP, "3306")
	// MySQL's caching_sha2_password needs TLS or a key exchange for a full
	// login; the server made its own certificate at initialisation.
	cfg.TLSConfig = "preferred"
	cfg.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	r.t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// checksum is CHECKSUM TABLE's value for a table.
func checksum(t *testing.T, db *sql.DB, table string) int64 {
	t.Helper()
	var name string
	var sum sql.NullInt64
	if err := db.QueryRowContext(t.Context(), "CHECKSUM TABLE "+table).Scan(&name, &sum); err != nil {
		t.Fatalf("CHECKSUM TABLE %s: %v", table, err)
	}
	if !sum.Valid {
		t.Fatalf("CHECKSUM TABLE %s: NULL (no such table)", table)
	}
	return sum.Int64
}

// sidecarStatus is the part of the sidecar's /status the tests read.
type sidecarStatus struct {
	Ready     bool             `json:"ready"`
	Binlog    binlog.Status    `json:"binlog"`
	Snapshots *schedule.Status `json:"snapshots"`
}

// agentStatus reads the sidecar's /status through the pod's address.
func (r *release) agentStatus(name string) (sidecarStatus, error) {
	var st sidecarStatus
	p := r.pod(name)
	resp, err := http.Get("http://" + net.JoinHostPort(p.Status.PodIP, "9097") + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// binlogPosition is the server's current binlog file and position.
func binlogPosition(t *testing.T, db *sql.DB, f testbed.Flavor) (string, uint64) {
	t.Helper()
	q := "SHOW MASTER STATUS"
	if f.MySQL() {
		q = "SHOW BINARY LOG STATUS"
	}
	rows, err := db.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatalf("%s: no row", q)
	}
	vals := make([]any, len(cols))
	var file string
	var pos uint64
	vals[0], vals[1] = &file, &pos
	for i := 2; i < len(vals); i++ {
		vals[i] = new(sql.RawBytes)
	}
	if err := rows.Scan(vals...); err != nil {
		t.Fatal(err)
	}
	return file, pos
}

// waitArchivedTo waits until the pod's sidecar reports everything up to the
// server's current binlog position durable.
func (r *release) waitArchivedTo(name string, db *sql.DB) {
	r.t.Helper()
	file, pos := binlogPosition(r.t, db, r.flavor)
	testbed.Eventually(r.t, 2*time.Minute, func() error {
		st, err := r.agentStatus(name)
		if err != nil {
			return fmt.Errorf("archive durable up to %s:%d; sidecar: %w", file, pos, err)
		}
		if d := st.Binlog.Durable; d.File < file || d.File == file && d.Pos < pos {
			return fmt.Errorf("archive durable up to %s:%d; sidecar: durable %s, received %s, last error %q", file, pos, d, st.Binlog.Received, st.Binlog.LastError)
		}
		return nil
	})
}

// storageURL is the pod's archive as restore --storage takes it.
func (r *release) storageURL(name string) string { return r.gw.URL(r.prefix + "/" + name) }

// cli runs the mysql-pitr binary the cluster's image holds, on the host,
// with the S3 gateway's credentials (and the age identity) in its
// environment; it returns the combined output and the error.
func (r *release) cli(args ...string) (string, error) {
	r.t.Helper()
	return r.runHost(r.c.Binary(), "mysql-pitr", args)
}

// kubectlPlugin runs kubectl mysql-pitr (the kubectl-mysql_pitr plugin) on
// the host as cli runs mysql-pitr.
func (r *release) kubectlPlugin(args ...string) (string, error) {
	r.t.Helper()
	return r.runHost(r.c.Plugin(), "kubectl mysql-pitr", args)
}

// runHost runs program (named as name in the log) for cli and
// kubectlPlugin.
func (r *release) runHost(program, name string, args []string) (string, error) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "MYSQL_PITR_") || strings.HasPrefix(kv, "KUBECONFIG=")
	})
	env = append(env, r.gw.Env()...)
	if r.identity != nil {
		f := filepath.Join(r.t.TempDir(), "identity")
		if err := os.WriteFile(f, []byte(r.identity.String()+"\n"), 0o600); err != nil {
			r.t.Fatal(err)
		}
		env = append(env, "MYSQL_PITR_AGE_IDENTITY="+f)
	}
	cmd.Env = env
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r.t.Logf("%s %s (%s, %v):\n%s", name, strings.Join(args, " "), time.Since(start).Round(time.Second), err, out.String())
	return out.String(), err
}

// dryRunStrict sends every object of a rendering to the API server as a
// server-side dry run with strict field validation, in namespace ns: an
// unknown or duplicate field, a value the API refuses or a warning fails
// the test. Kinds whose CRDs the cluster lacks (the prometheus-operator's)
// are listed in skipped. Pods go to podNS, where their service account
// exists (a dry run creates none).
func dryRunStrict(t *testing.T, c *kubetest.Cluster, ns, podNS, manifests string) (sent []string, skipped []string) {
	t.Helper()
	cfg := c.RESTConfig()
	warned := &warnings{}
	cfg.WarningHandler = warned
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(manifests, "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			t.Fatalf("not an object: %v\n%s", err, doc)
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			skipped = append(skipped, gvk.Kind)
			continue
		}
		res := dyn.Resource(m.Resource)
		var ri dynamic.ResourceInterface = res
		switch {
		case gvk.Kind == "Pod":
			ri = res.Namespace(podNS)
		case m.Scope.Name() == "namespace":
			ri = res.Namespace(ns)
		}
		warned.reset()
		if _, err := ri.Create(t.Context(), obj, dryRun()); err != nil {
			t.Errorf("%s %s: the API server refuses it: %v", gvk.Kind, obj.GetName(), err)
		}
		if w := warned.take(); len(w) > 0 {
			t.Errorf("%s %s: the API server warns: %q", gvk.Kind, obj.GetName(), w)
		}
		sent = append(sent, gvk.Kind+"/"+obj.GetName())
	}
	return sent, skipped
}
