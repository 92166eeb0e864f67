package chart_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mysql-pitr/mysql-pitr/internal/kubetest"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/restore/kube"
)

// TestClusterRestoreFailures runs kubectl mysql-pitr restore into what goes
// wrong on a real cluster, on MariaDB with an encrypted archive, and checks
// that each failure says what happened and what to do, changes nothing it
// should not, and that running the same command again finishes the restore:
// a caller whose Role lacks a verb; a second request while one is pending;
// a restore that fails inside the init container (the pod's age identity is
// the wrong one), where the server must not start; a pod that never comes
// back (the node is cordoned).
func TestClusterRestoreFailures(t *testing.T) {
	helmBinary(t)
	c := kubetest.Get(t)
	f := testbed.MariaDB1011
	for _, g := range clusterFlavors(t) {
		if !g.MySQL() {
			f = g
			break
		}
	}
	r := installRelease(t, c, f, true, nil)
	r.checkRunning()
	at, sums := r.dropByAccident()
	to := at.Format(time.RFC3339Nano)
	restoreArgs := func(kc string, extra ...string) []string {
		return append([]string{"restore", "--kubeconfig", kc, "--pod", clusterPod,
			"--storage", r.storageURL(clusterPod), "--yes"}, extra...)
	}
	kc := c.KubeconfigFor(t, r.ns, "db-mysql-pitr-restore")
	uid := r.pod(clusterPod).UID

	// A Role without delete on pods: the request is recorded, the delete is
	// refused, and the error names the verb and the resource.
	r.serviceAccountWithout("restore-no-delete", "pods", "delete")
	out, err := r.kubectlPlugin(restoreArgs(c.KubeconfigFor(t, r.ns, "restore-no-delete"), "--to", to)...)
	if err == nil || !strings.Contains(out, `the caller needs verb "delete" on "pods"`) || !strings.Contains(out, "re-run the same command to resume") {
		t.Fatalf("kubectl mysql-pitr restore without delete on pods: %v; want the missing verb named", err)
	}
	if r.pod(clusterPod).UID != uid {
		t.Fatal("the pod was deleted by a caller without delete on pods")
	}
	pending := r.requests()
	if len(pending) != 1 {
		t.Fatalf("restore-requests %v, want the one pending request", pending)
	}

	// A second request, for another moment, while that one is pending.
	other := at.Add(-time.Second).Format(time.RFC3339Nano)
	out, err = r.kubectlPlugin(restoreArgs(kc, "--to", other)...)
	if err == nil || !strings.Contains(out, "another restore request is pending") || !strings.Contains(out, "re-run with --to "+to) {
		t.Fatalf("a second request while one is pending: %v; want it refused naming the pending target", err)
	}
	if got := r.requests(); !mapsEqual(got, pending) || r.pod(clusterPod).UID != uid {
		t.Fatalf("the refused request changed something: requests %v, pod uid %s (was %s)", got, r.pod(clusterPod).UID, uid)
	}

	// The pod's age identity is not the archive's: the restore fails inside
	// the init container, the server never starts, and the command says why.
	wrong, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	r.setSecret("pitr-age", map[string]string{"identity": wrong.String() + "\n"})
	out, err = r.kubectlPlugin(restoreArgs(kc, "--to", to, "--timeout", "5m")...)
	if err == nil || !strings.Contains(out, "restore init container failed with exit code 1") {
		t.Fatalf("a restore failing in the init container: %v; want the container's failure", err)
	}
	if !strings.Contains(out, "resuming pending request") || !strings.Contains(out, "no configured age identity can decrypt") {
		t.Errorf("the failure does not carry the init container's message (no configured age identity can decrypt) or did not resume the pending request")
	}
	p := r.pod(clusterPod)
	for _, st := range p.Status.ContainerStatuses {
		if st.State.Running != nil || st.RestartCount > 0 || st.LastTerminationState.Terminated != nil {
			t.Errorf("container %s ran while the restore had failed: %+v", st.Name, st.State)
		}
	}
	if _, err := os.Stat(filepath.Join(r.volumeDir("data-"+clusterPod), "restore-in-progress")); err != nil {
		t.Errorf("restore-in-progress is not on the volume after a failed restore: %v", err)
	}

	// With the right identity back, the same command finishes the restore.
	r.setSecret("pitr-age", map[string]string{"identity": r.identity.String() + "\n"})
	out, err = r.kubectlPlugin(restoreArgs(kc, "--to", to, "--timeout", "5m")...)
	if err != nil || !strings.Contains(out, "resuming pending request") {
		t.Fatalf("re-running after the failure: %v", err)
	}
	db := r.db(clusterPod)
	if got := checksum(t, db, "shop.orders"); got != sums["shop.orders"] {
		t.Errorf("CHECKSUM TABLE shop.orders = %d after the resumed restore, %d at %s", got, sums["shop.orders"], to)
	}
	if _, err := os.Stat(filepath.Join(r.volumeDir("data-"+clusterPod), "restore-in-progress")); err == nil {
		t.Error("restore-in-progress is still on the volume after the restore")
	}

	// The node takes no pods: the deleted pod never comes back, and the
	// command times out naming the phase and the pod's state.
	r.cordon(true)
	out, err = r.kubectlPlugin(restoreArgs(kc, "--to", to, "--timeout", "20s")...)
	if err == nil || !strings.Contains(out, "not Ready after 20s") || !strings.Contains(out, "stays in configmap") {
		t.Fatalf("a pod that never comes back: %v; want a timeout that keeps the request", err)
	}
	if p := r.pod(clusterPod); p.Status.Phase != corev1.PodPending {
		t.Errorf("pod %s is %s while the node is cordoned", clusterPod, p.Status.Phase)
	}
	r.cordon(false)
	out, err = r.kubectlPlugin(restoreArgs(kc, "--to", to, "--timeout", "5m")...)
	if err != nil || !strings.Contains(out, "resuming pending request") || !strings.Contains(out, "cleared request") {
		t.Fatalf("re-running once the node takes pods again: %v", err)
	}
	db = r.db(clusterPod)
	if got := checksum(t, db, "shop.orders"); got != sums["shop.orders"] {
		t.Errorf("CHECKSUM TABLE shop.orders = %d after the second restore, %d at %s", got, sums["shop.orders"], to)
	}
}

// serviceAccountWithout makes a service account bound to the chart's
// restore Role (restore/kube.RoleRules) less one verb on one resource.
func (r *release) serviceAccountWithout(name, resource, verb string) {
	t := r.t
	cs := r.c.Client()
	var rules []rbacv1.PolicyRule
	for _, rule := range kube.RoleRules("db") {
		if slices.Contains(rule.Resources, resource) {
			rule.Verbs = slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == verb })
		}
		rules = append(rules, rule)
	}
	if _, err := cs.CoreV1().ServiceAccounts(r.ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().Roles(r.ns).Create(t.Context(), &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(r.ns).Create(t.Context(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: r.ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// requests returns the restore-requests ConfigMap's data.
func (r *release) requests() map[string]string {
	r.t.Helper()
	cm, err := r.c.Client().CoreV1().ConfigMaps(r.ns).Get(r.t.Context(), kube.RequestsConfigMap("db"), metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return cm.Data
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// setSecret replaces a Secret's data.
func (r *release) setSecret(name string, data map[string]string) {
	r.t.Helper()
	s, err := r.c.Client().CoreV1().Secrets(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	s.Data, s.StringData = nil, data
	if _, err := r.c.Client().CoreV1().Secrets(r.ns).Update(r.t.Context(), s, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// volumeDir is the host directory of a claim's volume.
func (r *release) volumeDir(claim string) string {
	r.t.Helper()
	pvc, err := r.c.Client().CoreV1().PersistentVolumeClaims(r.ns).Get(r.t.Context(), claim, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	pv, err := r.c.Client().CoreV1().PersistentVolumes().Get(r.t.Context(), pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return pv.Spec.HostPath.Path
}

// cordon marks the node unschedulable, or schedulable again; a cordon is
// undone when the test ends.
func (r *release) cordon(on bool) {
	r.t.Helper()
	// Not the test's context: the cleanup runs after it ends.
	ctx := context.WithoutCancel(r.t.Context())
	set := func(v bool) error {
		n, err := r.c.Client().CoreV1().Nodes().Get(ctx, kubetest.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.Unschedulable = v
		_, err = r.c.Client().CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	}
	if err := set(on); err != nil {
		r.t.Fatalf("cordon %v: %v", on, err)
	}
	if on {
		r.t.Cleanup(func() { _ = set(false) })
	}
}
