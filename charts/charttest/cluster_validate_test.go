package chart_test

import (
	"slices"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mysql-pitr/mysql-pitr/internal/kubetest"
	"github.com/mysql-pitr/mysql-pitr/restore/kube"
)

// TestClusterServerSideValidation sends every object the chart renders, for
// both families, both modes, with and without encryption, with drills,
// retention CronJobs, the restore Role and the helm test hook, to the test
// cluster's API server as a dry run with strict field validation, in a
// namespace enforcing the restricted Pod Security Standard; and every pod
// those objects would make (the StatefulSet's, the restore Job's, the
// CronJobs' Jobs', the hook's) as a Pod, which the PodSecurity admission
// judges as it would the real one. A refused object, an unknown field or a
// warning fails the test.
func TestClusterServerSideValidation(t *testing.T) {
	helmBinary(t)
	c := kubetest.Get(t)
	ns, podNS := c.Namespace(t, "validate"), c.Namespace(t, "validate-pods")
	sidecarOnly := map[string]any{"mode": "sidecar-only",
		"sidecarOnly": map[string]any{"statefulSetName": "orders-db", "podSelector": map[string]any{"app": "orders-db"}}}
	encrypted := map[string]any{"encryption": map[string]any{"ageRecipients": []any{ageRecipient1}, "identitySecret": "pitr-age"},
		"retention": map[string]any{"cronJob": map[string]any{"enabled": true}}}
	everything := map[string]any{"restore": map[string]any{"rbac": map[string]any{"create": true}},
		"drill": map[string]any{"schedule": "@daily"}, "server": map[string]any{"replicas": 2},
		"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}}}
	mariadb := map[string]any{"server": map[string]any{"flavor": "mariadb", "image": map[string]any{"repository": "mariadb", "tag": "11.8"}}}
	// The passwords the chart generates, as an install without Secrets has.
	generated := map[string]any{"server": map[string]any{"rootPassword": map[string]any{"secretName": ""}},
		"mysql": map[string]any{"pitrUser": map[string]any{"secretName": ""}}}
	cases := []struct {
		name   string
		values []map[string]any
	}{
		{"mysql, full, plain", []map[string]any{generated, everything}},
		{"mysql, full, encrypted", []map[string]any{everything, encrypted}},
		{"mariadb, full, plain", []map[string]any{mariadb, generated, everything}},
		{"mariadb, full, encrypted, native sidecar, physical", []map[string]any{mariadb, everything, encrypted,
			{"agent": map[string]any{"nativeSidecar": true}, "backup": map[string]any{"method": "physical"}}}},
		{"sidecar-only, plain", []map[string]any{sidecarOnly}},
		{"sidecar-only, encrypted", []map[string]any{sidecarOnly, encrypted, {"retention": map[string]any{"cronJob": map[string]any{"pods": []any{"orders-db-0"}}}}}},
	}
	client, warnings := warningClient(t, c)
	// A dry run creates nothing, and a pod is refused without its service
	// account: the pods' one exists for real in podNS.
	if _, err := client.CoreV1().ServiceAccounts(podNS).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "db-mysql-pitr"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			values := baseValues()
			for _, v := range tc.values {
				values = merge(values, v)
			}
			out, err := render(t, values)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			sent, skipped := dryRunStrict(t, c, ns, podNS, out)
			for _, k := range skipped {
				if k != "ServiceMonitor" && k != "PrometheusRule" {
					t.Errorf("the cluster does not know kind %s", k)
				}
			}
			r := decodeAll(t, out)
			pods := map[string]*corev1.PodSpec{}
			for _, sts := range r.statefulSets {
				pods["statefulset "+sts.Name] = statefulSetPod(sts, sts.Name+"-0")
			}
			if cm, ok := r.configMaps[kube.JobTemplateConfigMap("db")]; ok {
				tmpl, err := kube.ParseJobTemplate(cm.Data[kube.JobTemplateKey])
				if err != nil {
					t.Fatal(err)
				}
				job := tmpl.Job("pitr-restore-x", podNS, "x", "db-mysql-pitr-0", "2026-11-27T10:41:07Z", "req-1")
				if _, err := client.BatchV1().Jobs(podNS).Create(t.Context(), job, dryRun()); err != nil {
					t.Errorf("restore Job: the API server refuses it: %v", err)
				}
				pods["restore job"] = &job.Spec.Template.Spec
			}
			for _, cj := range r.cronJobs {
				pods["cronjob "+cj.Name] = &cj.Spec.JobTemplate.Spec.Template.Spec
			}
			for what, spec := range pods {
				warnings.reset()
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "validate"}, Spec: *spec}
				if _, err := client.CoreV1().Pods(podNS).Create(t.Context(), p, dryRun()); err != nil {
					t.Errorf("the pod of %s: the API server refuses it: %v", what, err)
				}
				if w := warnings.take(); len(w) > 0 {
					t.Errorf("the pod of %s: the API server warns: %q", what, w)
				}
			}
			t.Logf("%d objects and %d pods accepted (not sent, their CRDs absent: %v)", len(sent), len(pods), skipped)
		})
	}
}

func dryRun() metav1.CreateOptions {
	return metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
}

// warnings collects the API server's warning headers.
type warnings struct {
	mu  sync.Mutex
	got []string
}

func (w *warnings) HandleWarningHeader(code int, agent, msg string) {
	w.mu.Lock()
	w.got = append(w.got, msg)
	w.mu.Unlock()
}

func (w *warnings) reset() { w.take() }

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := slices.Clone(w.got)
	w.got = nil
	return got
}

// warningClient is the administrator's client with its warnings collected.
func warningClient(t *testing.T, c *kubetest.Cluster) (kubernetes.Interface, *warnings) {
	t.Helper()
	cfg := c.RESTConfig()
	w := &warnings{}
	cfg.WarningHandler = w
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client, w
}
