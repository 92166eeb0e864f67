package chart_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mysql-pitr/mysql-pitr/internal/kubetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestClusterSidecarOnly runs the chart's sidecar-only mode as its README
// says: a StatefulSet of the user's own (a MariaDB server with the binlog
// on and an account for the agent), helm install in mode sidecar-only, the
// rendered patch applied with a strategic merge patch as kubectl patch
// does; the StatefulSet rolls, and the new pod runs the user's server with
// the sidecar, which streams what the server writes.
func TestClusterSidecarOnly(t *testing.T) {
	helmBinary(t)
	c := kubetest.Get(t)
	f := testbed.MariaDB1011
	gw := testbed.StartS3(t)
	c.ExposeHostPort(t, gwPort(t, gw))
	r := &release{t: t, c: c, ns: c.Namespace(t, "orders"), flavor: f, gw: gw, prefix: "orders",
		rootSecret: [2]string{"orders-db-root", "root-password"}}
	const pitrGrants = "REPLICATION SLAVE, BINLOG MONITOR, RELOAD, PROCESS, SELECT, SHOW VIEW, EVENT, TRIGGER"
	pitrPassword := randomPassword(t)
	r.createSecret("pitr-s3", map[string]string{"credentials": fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", gw.AccessKey, gw.SecretKey)})
	r.createSecret("orders-db-root", map[string]string{"root-password": randomPassword(t)})
	r.createSecret("orders-db-pitr", map[string]string{"pitr-password": pitrPassword})
	r.createSecret("orders-db-init", map[string]string{"10-pitr.sql": fmt.Sprintf(
		"CREATE USER 'pitr'@'127.0.0.1' IDENTIFIED BY '%s';\nGRANT %s ON *.* TO 'pitr'@'127.0.0.1';\n", pitrPassword, pitrGrants)})
	sts := usersStatefulSet(c.ServerImage(t, f))
	if _, err := c.Client().AppsV1().StatefulSets(r.ns).Create(t.Context(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const pod = "orders-db-0"
	before := r.waitReady(pod, "")
	if len(before.Spec.Containers) != 1 {
		t.Fatalf("the user's pod has %d containers before the patch", len(before.Spec.Containers))
	}

	values := merge(clusterValues(c, t, f, gw, r.prefix), map[string]any{
		"mode":        "sidecar-only",
		"sidecarOnly": map[string]any{"statefulSetName": "orders-db", "podSelector": map[string]any{"app": "orders-db"}},
		"mysql":       map[string]any{"pitrUser": map[string]any{"secretName": "orders-db-pitr"}},
	})
	r.values = values
	r.helm("install", "db", chartDir, "-f", writeValues(t, values))

	// The README's two commands: the patch out of its ConfigMap, then
	// kubectl patch statefulset (a strategic merge patch).
	cm, err := c.Client().CoreV1().ConfigMaps(r.ns).Get(t.Context(), "db-mysql-pitr-sidecar-patch", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patch, err := yaml.YAMLToJSON([]byte(cm.Data["patch.yaml"]))
	if err != nil {
		t.Fatalf("the sidecar patch is not YAML: %v", err)
	}
	if _, err := c.Client().AppsV1().StatefulSets(r.ns).Patch(t.Context(), "orders-db", types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("kubectl patch statefulset orders-db --patch-file patch.yaml: %v", err)
	}
	after := r.waitReady(pod, string(before.UID))
	var names []string
	for _, ctr := range after.Spec.Containers {
		names = append(names, ctr.Name)
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "mysql-pitr,server" {
		t.Errorf("patched pod's containers %v, want server and mysql-pitr", names)
	}
	if initStatus(after, "pitr-restore") == nil {
		t.Error("the patched pod has no restore init container (restore.enabled is on by default)")
	}
	for _, st := range after.Status.ContainerStatuses {
		if !st.Ready || st.RestartCount != 0 {
			t.Errorf("container %s: ready %v, %d restarts", st.Name, st.Ready, st.RestartCount)
		}
	}
	db := r.db(pod)
	mustExec(t, db, "CREATE DATABASE orders")
	mustExec(t, db, "CREATE TABLE orders.o (id INT PRIMARY KEY)")
	mustExec(t, db, "INSERT INTO orders.o VALUES (1), (2), (3)")
	r.waitArchivedTo(pod, db)
	out, err := r.cli("list", "--storage", r.storageURL(pod))
	if err != nil || !strings.Contains(out, "RECOVERABLE FROM") || !strings.Contains(out, "logical") {
		t.Errorf("mysql-pitr list of the sidecar's archive: %v\n%s", err, out)
	}
}

func randomPassword(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// usersStatefulSet is the user's own StatefulSet that sidecar-only mode
// patches: the official image's entrypoint with the root password from a
// Secret, the binlog on, an init file making the agent's account, the
// datadir at data/ on a volume claim named data mounted where the chart's
// values say (persistence.mountPath), under the restricted profile.
func usersStatefulSet(image string) *appsv1.StatefulSet {
	labels := map[string]string{"app": "orders-db"}
	restricted := &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "orders-db", Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: "orders-db",
			Replicas:    ptr.To(int32(1)),
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(30)),
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(int64(999)),
						RunAsGroup: ptr.To(int64(999)), FSGroup: ptr.To(int64(999)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{
						Name: "server", Image: image, ImagePullPolicy: corev1.PullNever,
						Args: []string{"mariadbd", "--datadir=/var/lib/mysql-pvc/data", "--log-bin=binlog", "--binlog-format=ROW",
							"--server-id=1", "--gtid-strict-mode=ON", "--skip-name-resolve", "--bind-address=0.0.0.0"},
						Env:   []corev1.EnvVar{{Name: "MARIADB_ROOT_PASSWORD_FILE", Value: "/var/run/secrets/orders-db/root/root-password"}},
						Ports: []corev1.ContainerPort{{Name: "mysql", ContainerPort: 3306}},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 2, ProbeHandler: corev1.ProbeHandler{
							TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("mysql")}}},
						SecurityContext: restricted,
						VolumeMounts: []corev1.VolumeMount{
							{Name: "data", MountPath: "/var/lib/mysql-pvc"},
							{Name: "root", MountPath: "/var/run/secrets/orders-db/root", ReadOnly: true},
							{Name: "init", MountPath: "/docker-entrypoint-initdb.d", ReadOnly: true},
							{Name: "run", MountPath: "/var/run/mysqld"},
							{Name: "tmp", MountPath: "/tmp"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "root", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "orders-db-root"}}},
						{Name: "init", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "orders-db-init", DefaultMode: ptr.To(int32(0o444))}}},
						{Name: "run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}
