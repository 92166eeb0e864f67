package chart_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mysql-pitr/mysql-pitr/internal/kubetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/restore/kube"
)

// TestClusterChart installs the chart on the test cluster for each server
// family (MariaDB with an encrypted archive, MySQL without) with the
// passwords the chart generates, and follows one release through what a
// user does: the pod runs the server and the sidecar, its probes pass, the
// sidecar streams and takes its scheduled snapshots, and an outage of the
// storage leaves the pod Ready; a table is dropped by accident, the restore
// Role is added by an upgrade that restarts no pod, and kubectl mysql-pitr
// restore, holding only that Role, brings the pod back to the moment before
// (CHECKSUM TABLE equal to the table's at that moment), then restores the
// same moment into a new PVC through the chart's Job.
func TestClusterChart(t *testing.T) {
	helmBinary(t)
	c := kubetest.Get(t)
	for _, f := range clusterFlavors(t) {
		t.Run(f.String(), func(t *testing.T) {
			start := time.Now()
			// Installed without the restore Role: it is added when the
			// restore is needed, by an upgrade that restarts no pod.
			r := installRelease(t, c, f, !f.MySQL(), map[string]any{"restore": map[string]any{"rbac": map[string]any{"create": false}}})
			t.Logf("installed and Ready in %s", time.Since(start).Round(time.Second))
			r.checkRunning()
			r.storageOutage()
			at, sums := r.dropByAccident()
			r.upgradeKeepsPods("--set", "restore.rbac.create=true")
			r.restoreInPlace(at, sums)
			r.restoreToNewPVC(at)
		})
	}
}

// checkRunning checks the installed release's pod: both containers run and
// are ready with no restart (the startup, readiness and liveness probes
// pass), the server is the flavor's, the sidecar answers the helm test's
// command, streams, and takes a scheduled snapshot.
func (r *release) checkRunning() {
	t := r.t
	p := r.pod(clusterPod)
	for _, st := range p.Status.ContainerStatuses {
		if !st.Ready || st.RestartCount != 0 {
			t.Errorf("container %s: ready %v, %d restarts", st.Name, st.Ready, st.RestartCount)
		}
	}
	db := r.db(clusterPod)
	var version string
	if err := db.QueryRowContext(t.Context(), "SELECT VERSION()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	want := strings.SplitN(r.flavor.String(), "-", 2)[1] + "."
	if !strings.HasPrefix(version, want) {
		t.Errorf("server version %s, want %s*", version, want)
	}
	// The helm test hook's command, against the pod's sidecar.
	out, err := r.cli("status", "--url", "http://"+net.JoinHostPort(p.Status.PodIP, "9097"))
	if err != nil || !strings.Contains(out, ": ok: streaming "+r.flavor.Family()) {
		t.Errorf("mysql-pitr status: %v\n%s", err, out)
	}
	testbed.Eventually(t, 2*time.Minute, func() error {
		st, err := r.agentStatus(clusterPod)
		switch {
		case err != nil || st.Snapshots == nil:
			return fmt.Errorf("a scheduled snapshot; sidecar: %v", err)
		case st.Snapshots.LastSuccess.IsZero():
			return fmt.Errorf("a scheduled snapshot; sidecar: %+v", *st.Snapshots)
		}
		return nil
	})
}

// dropByAccident writes shop.orders and shop.audit, notes the moment, drops
// orders and adds an audit row after it, and waits until the archive holds
// it all. It returns the moment and the tables' checksums then.
func (r *release) dropByAccident() (time.Time, map[string]int64) {
	t := r.t
	db := r.db(clusterPod)
	mustExec(t, db, "CREATE DATABASE shop")
	mustExec(t, db, "CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2))")
	mustExec(t, db, "CREATE TABLE shop.audit (id INT PRIMARY KEY, what VARCHAR(64))")
	var values []string
	for i := 1; i <= 200; i++ {
		values = append(values, fmt.Sprintf("(%d, 'order %d', %d.%02d)", i, i, i*7, i%100))
	}
	mustExec(t, db, "INSERT INTO shop.orders VALUES "+strings.Join(values, ", "))
	mustExec(t, db, "UPDATE shop.orders SET note = 'paid' WHERE id % 3 = 0")
	mustExec(t, db, "INSERT INTO shop.audit VALUES (1, 'before the drop')")
	sums := map[string]int64{"shop.orders": checksum(t, db, "shop.orders"), "shop.audit": checksum(t, db, "shop.audit")}
	// Everything above committed by now; the drop commits in a later
	// second, so it lies after the moment on MariaDB's one-second clock too.
	at := time.Now().UTC()
	testbed.NextSecond(t, at)
	mustExec(t, db, "DROP TABLE shop.orders")
	mustExec(t, db, "INSERT INTO shop.audit VALUES (2, 'after the drop')")
	r.waitArchivedTo(clusterPod, db)
	t.Logf("dropped shop.orders after %s", at.Format(time.RFC3339Nano))
	return at, sums
}

// restoreInPlace runs kubectl mysql-pitr restore for the pod, as the
// chart's restore service account, and checks the restored server.
func (r *release) restoreInPlace(at time.Time, sums map[string]int64) {
	t := r.t
	before := r.pod(clusterPod)
	kc := r.c.KubeconfigFor(t, r.ns, "db-mysql-pitr-restore")
	start := time.Now()
	out, err := r.kubectlPlugin("restore", "--kubeconfig", kc, "--pod", clusterPod,
		"--storage", r.storageURL(clusterPod), "--to", at.Format(time.RFC3339Nano), "--yes", "--timeout", "8m")
	if err != nil {
		t.Fatalf("kubectl mysql-pitr restore: %v", err)
	}
	t.Logf("restored in place in %s", time.Since(start).Round(time.Second))
	for _, w := range []string{"recorded request", "deleted pod " + clusterPod, "is Ready", "restored to " + at.Format(time.RFC3339Nano), "cleared request"} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl mysql-pitr restore output lacks %q", w)
		}
	}
	after := r.pod(clusterPod)
	if after.UID == before.UID {
		t.Fatalf("pod %s was not recreated", clusterPod)
	}
	// The chart's init container restored the datadir: its report is the
	// pod's status, and the server runs on what it restored.
	st := initStatus(after, kube.RestoreContainer)
	if st == nil || st.State.Terminated == nil || !strings.Contains(st.State.Terminated.Message, `"result":"restored"`) {
		t.Errorf("pitr-restore init container did not report a restore: %+v", st)
	}
	db := r.db(clusterPod)
	for table, want := range sums {
		if got := checksum(t, db, table); got != want {
			t.Errorf("CHECKSUM TABLE %s = %d after the restore, %d at %s", table, got, want, at.Format(time.RFC3339Nano))
		}
	}
	var ids []int
	rows, err := db.QueryContext(t.Context(), "SELECT id FROM shop.audit ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if !slices.Equal(ids, []int{1}) {
		t.Errorf("shop.audit ids %v after the restore, want [1]: the row written after the moment must be gone", ids)
	}
	cm, err := r.c.Client().CoreV1().ConfigMaps(r.ns).Get(t.Context(), kube.RequestsConfigMap("db"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != 0 {
		t.Errorf("restore-requests still holds %v after the restore", cm.Data)
	}
	// The restored server goes on being archived.
	mustExec(t, db, "INSERT INTO shop.audit VALUES (3, 'after the restore')")
	r.waitArchivedTo(clusterPod, db)
}

func initStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == name {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

// restoreToNewPVC restores the same moment into a new PVC through the
// chart's Job and checks the claim's datadir.
func (r *release) restoreToNewPVC(at time.Time) {
	t := r.t
	kc := r.c.KubeconfigFor(t, r.ns, "db-mysql-pitr-restore")
	uid := r.pod(clusterPod).UID
	start := time.Now()
	out, err := r.kubectlPlugin("restore", "--kubeconfig", kc, "--pod", clusterPod, "--to-new-pvc", "orders-before-drop",
		"--storage", r.storageURL(clusterPod), "--to", at.Format(time.RFC3339Nano), "--yes", "--timeout", "8m")
	if err != nil {
		t.Fatalf("kubectl mysql-pitr restore --to-new-pvc: %v", err)
	}
	t.Logf("restored into a new PVC in %s", time.Since(start).Round(time.Second))
	for _, w := range []string{"created PVC orders-before-drop", "created job pitr-restore-orders-before-drop", "deleted job"} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl mysql-pitr restore --to-new-pvc output lacks %q", w)
		}
	}
	pvc, err := r.c.Client().CoreV1().PersistentVolumeClaims(r.ns).Get(t.Context(), "orders-before-drop", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound {
		t.Fatalf("PVC orders-before-drop is %s", pvc.Status.Phase)
	}
	if pvc.Annotations[kube.AnnotationSourcePod] != clusterPod || pvc.Annotations[kube.AnnotationTarget] != at.Format(time.RFC3339Nano) {
		t.Errorf("new PVC annotations %v, want the source pod and the target", pvc.Annotations)
	}
	if sc := pvc.Spec.StorageClassName; sc == nil || *sc != kubetest.StorageClass {
		t.Errorf("new PVC storage class %v, want the source's %s", sc, kubetest.StorageClass)
	}
	if r.pod(clusterPod).UID != uid {
		t.Errorf("restoring into a new PVC restarted pod %s", clusterPod)
	}
	pv, err := r.c.Client().CoreV1().PersistentVolumes().Get(t.Context(), pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The volume is a directory on this host: the Job's restore is there.
	data := filepath.Join(pv.Spec.HostPath.Path, "data")
	for _, f := range []string{"mysql-pitr-restore.json", "shop/orders.ibd", "shop/audit.ibd"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Errorf("the new PVC's datadir lacks %s: %v", f, err)
		}
	}
	if _, err := r.c.Client().BatchV1().Jobs(r.ns).Get(t.Context(), "pitr-restore-orders-before-drop", metav1.GetOptions{}); err == nil {
		t.Error("the restore Job was not deleted")
	}
	// Its pod goes with it.
	testbed.Eventually(t, time.Minute, func() error {
		pods, err := r.c.Client().CoreV1().Pods(r.ns).List(t.Context(), metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=pitr-restore-orders-before-drop"})
		if err != nil {
			return fmt.Errorf("the restore Job's pods: %w", err)
		}
		if n := len(pods.Items); n != 0 {
			return fmt.Errorf("the restore Job's pod not deleted: %d left, %s", n, pods.Items[0].Name)
		}
		return nil
	})
}

// storageOutage stops the S3 gateway for longer than the readiness probe
// tolerates a failure: the sidecar's /readyz must not depend on storage
// (a failing sidecar would take the database out of its Service), so the
// pod stays Ready and nothing restarts; once the gateway is back the
// sidecar archives what was written meanwhile.
func (r *release) storageOutage() {
	t := r.t
	db := r.db(clusterPod)
	mustExec(t, db, "CREATE DATABASE IF NOT EXISTS outage")
	mustExec(t, db, "CREATE TABLE outage.t (id INT PRIMARY KEY)")
	if err := r.gw.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	defer r.gw.Thaw()
	mustExec(t, db, "INSERT INTO outage.t VALUES (1)")
	// Readiness: every 5 s, 3 failures. 20 s of outage is past that.
	var p *corev1.Pod
	testbed.Eventually(t, time.Minute, func() error {
		p = r.pod(clusterPod)
		if !podReady(p) {
			t.Fatalf("pod %s not Ready %s into a storage outage: %s", clusterPod, time.Since(frozen).Round(time.Second), podSummary(p))
		}
		if d := time.Since(frozen); d <= 20*time.Second {
			return fmt.Errorf("%s of storage outage, want 20 s", d.Round(time.Second))
		}
		return nil
	})
	for _, st := range p.Status.ContainerStatuses {
		if st.RestartCount != 0 {
			t.Errorf("container %s restarted during the storage outage", st.Name)
		}
	}
	if err := r.gw.Thaw(); err != nil {
		t.Fatal(err)
	}
	r.waitArchivedTo(clusterPod, db)
	t.Logf("the pod stayed Ready through %s without storage, and the archive caught up", time.Since(frozen).Round(time.Second))
}

// upgradeKeepsPods runs helm upgrade with the release's values and args,
// and checks that no pod was restarted or is about to be: the pod's UID,
// the StatefulSet's revision and the generated passwords stay.
func (r *release) upgradeKeepsPods(args ...string) {
	t := r.t
	sts := func() string {
		s, err := r.c.Client().AppsV1().StatefulSets(r.ns).Get(t.Context(), "db-mysql-pitr", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Status.UpdateRevision + " " + s.Status.CurrentRevision
	}
	uid, rev := r.pod(clusterPod).UID, sts()
	root, pitr := r.secret("db-mysql-pitr-root", "root-password"), r.secret("db-mysql-pitr-pitr", "pitr-password")
	r.helm(append([]string{"upgrade", "db", chartDir, "-f", writeValues(t, r.values)}, args...)...)
	if got := r.pod(clusterPod).UID; got != uid {
		t.Errorf("helm upgrade %v restarted pod %s", args, clusterPod)
	}
	if got := sts(); got != rev {
		t.Errorf("helm upgrade %v changed the StatefulSet's pods (revisions %s, were %s)", args, got, rev)
	}
	if r.secret("db-mysql-pitr-root", "root-password") != root || r.secret("db-mysql-pitr-pitr", "pitr-password") != pitr {
		t.Error("helm upgrade changed a generated password")
	}
}
