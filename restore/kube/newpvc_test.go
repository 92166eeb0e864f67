package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

const (
	newPVC    = "orders-at-1041"
	sourcePVC = "data-" + podName
)

var (
	jobsGVR = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
	pvcsGVR = schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"}
)

// jobTemplateYAML has the shape of the chart's templates/restore-job.yaml
// (charts/charttest checks the chart's own against ParseJobTemplate).
const jobTemplateYAML = `apiVersion: batch/v1
kind: Job
metadata:
  labels:
    app.kubernetes.io/instance: db
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
        - name: pitr-copy-binary
          image: ghcr.io/mysql-pitr/mysql-pitr:0.1.0
          command: ["/mysql-pitr", "copy-self", "/pitr-bin/mysql-pitr"]
          volumeMounts:
            - name: pitr-bin
              mountPath: /pitr-bin
      containers:
        - name: pitr-restore
          image: mariadb:11.4
          command: ["sh", "/opt/mysql-pitr/scripts/restore-job.sh"]
          terminationMessagePolicy: FallbackToLogsOnError
          env:
            - name: POD_NAME
              value: ""
            - name: PITR_TO
              value: ""
            - name: PITR_REQUEST
              value: ""
            - name: PITR_DATADIR
              value: /var/lib/mysql-pvc/data
            - name: MYSQL_PITR_STORAGE
              value: s3://pitr-archive/prod/$(POD_NAME)
          volumeMounts:
            - name: data
              mountPath: /var/lib/mysql-pvc
            - name: pitr-bin
              mountPath: /pitr-bin
      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: ""
        - name: pitr-bin
          emptyDir: {}
`

func podWithVolume() *corev1.Pod {
	p := testPod("uid-1")
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: sourcePVC}}}}
	return p
}

func sourceClaim() *corev1.PersistentVolumeClaim {
	class := "fast-ssd"
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: sourcePVC, Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/name": "mysql-pitr", "app.kubernetes.io/instance": "db"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("20Gi")}},
		},
		// Expanded since: the clone gets the larger size.
		Status: corev1.PersistentVolumeClaimStatus{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("30Gi")}},
	}
}

func jobTemplateConfigMap() *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "db-restore-job", Namespace: ns},
		Data: map[string]string{JobTemplateKey: jobTemplateYAML}}
}

func newPVCObjects() []runtime.Object {
	return []runtime.Object{podWithVolume(), sourceClaim(), jobTemplateConfigMap(), testConfigMap()}
}

func newPVCOptions(client *fake.Clientset, out *bytes.Buffer) Options {
	o := options(client, out)
	o.NewPVC = newPVC
	o.Storage = "s3://pitr-archive/prod/" + podName + "?region=eu-west-1"
	return o
}

// jobController simulates the Job controller and the kubelet running the
// chart's restore-job.sh: for the restore Job it creates a pod, runs the
// init container and the restore container, and completes or fails the
// Job. It works on the tracker, so its calls are not the restore's.
type jobController struct {
	client *fake.Clientset
	mode   string // "ok", "fail" (restore exits 1), "pending" (never scheduled)
	mu     sync.Mutex
	job    *batchv1.Job // the Job as the restore created it
}

func startJobController(t *testing.T, client *fake.Clientset, mode string) *jobController {
	t.Helper()
	c := &jobController{client: client, mode: mode}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { c.run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

func (c *jobController) created() *batchv1.Job {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.job
}

func (c *jobController) run(ctx context.Context) {
	tr := c.client.Tracker()
	name := JobName(newPVC)
	var obj runtime.Object
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		var err error
		if obj, err = tr.Get(jobsGVR, ns, name); err == nil {
			break
		}
	}
	job := obj.(*batchv1.Job).DeepCopy()
	c.mu.Lock()
	c.job = job.DeepCopy()
	c.mu.Unlock()
	step := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(15 * time.Millisecond):
			return true
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-x7k2p", Namespace: ns, UID: "job-pod-1",
			Labels: map[string]string{jobNameLabel: name}, CreationTimestamp: metav1.Now()},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	if c.mode == "pending" {
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: "Unschedulable", Message: "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims"}}
		_ = tr.Create(podsGVR, pod, ns)
		return
	}
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "pitr-copy-binary",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	_ = tr.Create(podsGVR, pod, ns)
	if !step() {
		return
	}
	pod.Status.InitContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: RestoreContainer,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	_ = tr.Update(podsGVR, pod, ns)
	if !step() {
		return
	}
	env := map[string]string{}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	st := &pod.Status.ContainerStatuses[0]
	if c.mode == "fail" {
		st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
			Message: "time=… level=INFO msg=\"fetching segments\"\nmysql-pitr: segment binlog/000001/000001/4-9000.zst: checksum mismatch\n"}}
		pod.Status.Phase = corev1.PodFailed
		_ = tr.Update(podsGVR, pod, ns)
		job.Status.Failed = 1
		job.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue,
			Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"}}
		_ = tr.Update(jobsGVR, job, ns)
		return
	}
	b, _ := json.Marshal(Termination{Request: env[EnvRequest], Result: "restored", Marker: &restore.Marker{
		ID: "r1", Target: env[EnvTarget], Snapshot: catalog.SnapshotID("20261127T000000Z"), Transactions: 42,
		Stop: catalog.Position{File: "binlog.000007", Pos: 4242},
	}})
	st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: string(b)}}
	pod.Status.Phase = corev1.PodSucceeded
	_ = tr.Update(podsGVR, pod, ns)
	job.Status.Succeeded = 1
	job.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
	_ = tr.Update(jobsGVR, job, ns)
}

func exists(t *testing.T, client *fake.Clientset, gvr schema.GroupVersionResource, name string) bool {
	t.Helper()
	_, err := client.Tracker().Get(gvr, ns, name)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestNewPVCClonesTheClaim checks what the test cluster cannot show (its
// volumes have exactly the size asked for, of one class): the new claim
// takes the larger of the source's request and capacity, its class and
// access modes, and the Job the template with the claim, the pod and the
// target filled in. The restore itself runs on the cluster
// (charts/charttest, TestClusterChart).
func TestNewPVCClonesTheClaim(t *testing.T) {
	client := newClient(t, newPVCObjects()...)
	ctl := startJobController(t, client, "ok")
	var out bytes.Buffer
	if _, err := Run(t.Context(), newPVCOptions(client, &out)); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	obj, err := client.Tracker().Get(pvcsGVR, ns, newPVC)
	if err != nil {
		t.Fatalf("the new PVC is not there: %v", err)
	}
	pvc := obj.(*corev1.PersistentVolumeClaim)
	if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != "30Gi" {
		t.Errorf("new PVC size %s, want the source's 30Gi capacity", got.String())
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast-ssd" || len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteOnce {
		t.Errorf("new PVC class %v, access modes %v; want fast-ssd, ReadWriteOnce", pvc.Spec.StorageClassName, pvc.Spec.AccessModes)
	}
	job := ctl.created()
	if job == nil {
		t.Fatal("no Job was created")
	}
	spec := job.Spec.Template.Spec
	if got := spec.Volumes[0].PersistentVolumeClaim.ClaimName; got != newPVC {
		t.Errorf("job mounts claim %q, want %s", got, newPVC)
	}
	env := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env[EnvPod] != podName || env[EnvTarget] != "2026-11-27T10:41:07Z" || env[EnvRequest] != "req-1" {
		t.Errorf("job env %v, want POD_NAME, PITR_TO and PITR_REQUEST filled in", env)
	}
	if got, want := strings.Join(writes(client), ","), "create persistentvolumeclaims,create jobs,delete jobs"; got != want {
		t.Errorf("writes = %s, want %s (the pod is not touched)", got, want)
	}
}

func TestNewPVCJobFails(t *testing.T) {
	client := newClient(t, newPVCObjects()...)
	startJobController(t, client, "fail")
	var out bytes.Buffer
	_, err := Run(t.Context(), newPVCOptions(client, &out))
	if !errors.Is(err, ErrJobFailed) {
		t.Fatalf("Run: %v, want %v\n%s", err, ErrJobFailed, out.String())
	}
	for _, s := range []string{"container pitr-restore exited 1 (Error)", "checksum mismatch", "PVC orders-at-1041 is left",
		"kubectl -n db delete pvc orders-at-1041"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
	if exists(t, client, jobsGVR, JobName(newPVC)) {
		t.Error("the failed job was not deleted")
	}
	if !exists(t, client, pvcsGVR, newPVC) {
		t.Error("the PVC was deleted; it must stay")
	}
}

func TestNewPVCTimeoutLeavesJob(t *testing.T) {
	client := newClient(t, newPVCObjects()...)
	startJobController(t, client, "pending")
	var out bytes.Buffer
	o := newPVCOptions(client, &out)
	o.Timeout = 300 * time.Millisecond
	_, err := Run(t.Context(), o)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run: %v, want %v", err, ErrTimeout)
	}
	for _, s := range []string{"not scheduled: Unschedulable", "unbound immediate PersistentVolumeClaims",
		"kubectl -n db logs -f job/pitr-restore-orders-at-1041 -c pitr-restore", "kubectl -n db delete job pitr-restore-orders-at-1041"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
	if !exists(t, client, jobsGVR, JobName(newPVC)) {
		t.Error("the job was deleted while it may still be restoring")
	}
}

// TestNewPVCRefuses: every refusal before the PVC exists leaves the cluster
// unchanged; a refusal after it says what is left.
func TestNewPVCRefuses(t *testing.T) {
	existing := sourceClaim()
	existing.Name = newPVC
	tests := []struct {
		name    string
		objects []runtime.Object
		rules   func() []rbacv1.PolicyRule
		edit    func(*Options)
		wantErr []string
		is      error
		// attempts are the writes tried (the last one rejected).
		attempts string
		// pvcLeft is whether the new PVC exists afterwards.
		pvcLeft bool
	}{
		{
			name:    "pvc already exists",
			objects: append(newPVCObjects(), existing),
			wantErr: []string{"orders-at-1041", "nothing was changed", "choose another name"},
			is:      ErrPVCExists,
			pvcLeft: true,
		},
		{
			name:    "plan made against another archive",
			objects: newPVCObjects(),
			edit:    func(o *Options) { o.Storage = "s3://pitr-archive/staging/" + podName },
			wantErr: []string{"s3://pitr-archive/staging/db-mysql-pitr-0", "s3://pitr-archive/prod/db-mysql-pitr-0"},
		},
		{
			name:    "no job template",
			objects: []runtime.Object{podWithVolume(), sourceClaim()},
			wantErr: []string{"configmap db-restore-job not found", "restore.enabled=true"},
		},
		{
			name:    "not confirmed",
			objects: newPVCObjects(),
			edit:    func(o *Options) { o.Yes = false },
			wantErr: []string{"--yes"},
			is:      ErrNotConfirmed,
		},
		{
			name:     "forbidden to create the pvc",
			objects:  newPVCObjects(),
			rules:    func() []rbacv1.PolicyRule { return without(RoleRules("db"), "persistentvolumeclaims", "create") },
			wantErr:  []string{`verb "create" on "persistentvolumeclaims"`},
			attempts: "create persistentvolumeclaims",
		},
		{
			name:     "forbidden to create the job",
			objects:  newPVCObjects(),
			rules:    func() []rbacv1.PolicyRule { return without(RoleRules("db"), "jobs", "create") },
			wantErr:  []string{`verb "create" on "jobs"`, "PVC orders-at-1041 was created and is empty", "kubectl -n db delete pvc orders-at-1041"},
			attempts: "create persistentvolumeclaims,create jobs",
			pvcLeft:  true,
		},
		{
			name:    "forbidden to read the source pvc",
			objects: newPVCObjects(),
			rules:   func() []rbacv1.PolicyRule { return without(RoleRules("db"), "persistentvolumeclaims", "get") },
			wantErr: []string{`verb "get" on "persistentvolumeclaims"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := RoleRules("db")
			if tt.rules != nil {
				rules = tt.rules()
			}
			client := newClientWithRules(rules, tt.objects...)
			var out bytes.Buffer
			o := newPVCOptions(client, &out)
			if tt.edit != nil {
				tt.edit(&o)
			}
			_, err := Run(t.Context(), o)
			if err == nil {
				t.Fatalf("Run succeeded, want an error\n%s", out.String())
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if got := strings.Join(writes(client), ","); got != tt.attempts {
				t.Errorf("writes = %q, want %q", got, tt.attempts)
			}
			if got := exists(t, client, pvcsGVR, newPVC); got != tt.pvcLeft {
				t.Errorf("new PVC exists: %v, want %v", got, tt.pvcLeft)
			}
		})
	}
}

func TestParseJobTemplate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(string) string
		wantErr string
	}{
		{name: "as the chart renders it", edit: func(s string) string { return s }},
		{name: "unknown field", edit: func(s string) string { return strings.Replace(s, "backoffLimit: 0", "backoffLimt: 0", 1) },
			wantErr: "backoffLimt"},
		{name: "no pvc volume", edit: func(s string) string {
			return strings.Replace(s, "persistentVolumeClaim:\n            claimName: \"\"", "emptyDir: {}", 1)
		}, wantErr: "no PersistentVolumeClaim volume"},
		{name: "no target variable", edit: func(s string) string { return strings.Replace(s, "name: PITR_TO", "name: PITR_UNTIL", 1) },
			wantErr: "no PITR_TO"},
		{name: "storage before pod name", edit: func(s string) string {
			pod := "            - name: POD_NAME\n              value: \"\"\n"
			storage := "              value: s3://pitr-archive/prod/$(POD_NAME)\n"
			return strings.Replace(strings.Replace(s, pod, "", 1), storage, storage+pod, 1)
		}, wantErr: "must come before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := ParseJobTemplate(tt.edit(jobTemplateYAML))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseJobTemplate error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.Storage(podName); got != "s3://pitr-archive/prod/db-mysql-pitr-0" {
				t.Errorf("Storage = %s", got)
			}
			if got := tmpl.DatadirOnVolume(); got != "data" {
				t.Errorf("DatadirOnVolume = %s, want data", got)
			}
			job := tmpl.Job("j", ns, "p", podName, "latest", "id-1")
			if job.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != "p" {
				t.Error("Job did not set the claim")
			}
			again := tmpl.Job("j", ns, "q", podName, "latest", "id-2")
			if job.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != "p" || again.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != "q" {
				t.Error("Job changed the template or an earlier Job")
			}
		})
	}
}
