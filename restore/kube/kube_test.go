package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/restore"
)

const (
	ns      = "db"
	podName = "db-mysql-pitr-0"
	cmName  = "db-restore-requests"
)

var target = restore.Target{Kind: restore.AtTime, Time: time.Date(2026, 11, 27, 10, 41, 7, 0, time.UTC)}

func testPod(uid types.UID) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: podName, Namespace: ns, UID: uid,
			Labels:          map[string]string{"app.kubernetes.io/instance": "db"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db-mysql-pitr", UID: "sts"}},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "pitr-copy-binary"}, {Name: RestoreContainer}},
			Containers:     []corev1.Container{{Name: "mysql"}, {Name: "mysql-pitr"}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: RestoreContainer,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}},
		},
	}
}

func testConfigMap() *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cmName, Namespace: ns, ResourceVersion: "1"}}
}

// controller simulates the StatefulSet controller and the kubelet running
// the chart's restore.sh: when the pod is gone it recreates it with a new
// UID, runs the restore init container (serving the request in the
// ConfigMap as restore.sh would) and marks the pod Ready.
type controller struct {
	client *fake.Clientset
	// mode: "ok", or "stale" (the new pod reads an older ConfigMap).
	mode atomic.Value
	gen  atomic.Int32
}

func startController(t *testing.T, client *fake.Clientset, mode string) *controller {
	t.Helper()
	c := &controller{client: client}
	c.mode.Store(mode)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { c.run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// The controller works on the tracker, not through the client: its calls
// are not the restore's, so they are neither recorded nor held to the
// restore's Role.
var (
	podsGVR       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
)

func (c *controller) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		if _, err := c.client.Tracker().Get(podsGVR, ns, podName); !apierrors.IsNotFound(err) {
			continue
		}
		c.recreate(ctx)
	}
}

func (c *controller) recreate(ctx context.Context) {
	tr := c.client.Tracker()
	p := testPod(types.UID(fmt.Sprintf("uid-%d", c.gen.Add(1)+1)))
	p.Status.Conditions = nil
	p.Status.Phase = corev1.PodPending
	p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	if err := tr.Create(podsGVR, p, ns); err != nil {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(20 * time.Millisecond):
	}
	obj, err := tr.Get(configMapsGVR, ns, cmName)
	if err != nil {
		return
	}
	cm := obj.(*corev1.ConfigMap).DeepCopy()
	st := &p.Status.InitContainerStatuses[0]
	if c.mode.Load() == "stale" {
		cm.Data = map[string]string{podName: "id=older\nto=latest\n"}
	}
	msg := ""
	if r, err := ParseRequest(cm.Data[podName]); err == nil {
		b, _ := json.Marshal(Termination{Request: r.ID, Result: "restored", Marker: &restore.Marker{
			ID: "r1", Target: r.To, Snapshot: catalog.SnapshotID("20261127T000000Z"), Transactions: 42,
		}})
		msg = string(b)
	}
	st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: msg}}
	p.Status.Phase = corev1.PodRunning
	_ = tr.Update(podsGVR, p, ns)
	select {
	case <-ctx.Done():
		return
	case <-time.After(20 * time.Millisecond):
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	_ = tr.Update(podsGVR, p, ns)
}

func options(client *fake.Clientset, out *bytes.Buffer) Options {
	return Options{
		Client: client, Namespace: ns, Pod: podName, Target: target, Yes: true,
		Plan:    func(context.Context) (*restore.Plan, error) { return &restore.Plan{Target: target}, nil },
		Timeout: 5 * time.Second, Poll: 5 * time.Millisecond, Progress: time.Hour, Out: out,
		NewID: func(time.Time) string { return "req-1" },
	}
}

// writes lists the actions that changed something in the cluster.
func writes(client *fake.Clientset) []string {
	var ws []string
	for _, a := range client.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
		default:
			ws = append(ws, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return ws
}

func requestOf(t *testing.T, client *fake.Clientset) (string, bool) {
	t.Helper()
	// The tracker, not the client: reading here records no action.
	obj, err := client.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, ns, cmName)
	if apierrors.IsNotFound(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	v, ok := obj.(*corev1.ConfigMap).Data[podName]
	return v, ok
}

// What a real cluster shows is tested on one (charts/charttest,
// TestClusterChart and TestClusterRestoreFailures: the restore served and
// cleared, a pending request for another target, a failing init container,
// a pod that never comes back, a Role without delete on pods). The tests
// here inject what a cluster cannot be made to do on demand: a refused call
// for each verb, conflicting writers, a pod started on an older ConfigMap.

func TestRunRefusesBeforeTouching(t *testing.T) {
	forbidden := func(verb, resource string) k8stesting.ReactionFunc {
		return func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "x", errors.New("rbac says no"))
		}
	}
	tests := []struct {
		name    string
		objects []runtime.Object
		edit    func(*Options)
		react   func(*fake.Clientset)
		wantErr []string
		is      error
		// attempts is the one write tried (and rejected), if any.
		attempts string
	}{
		{
			name:    "plan refused",
			objects: []runtime.Object{testPod("uid-1"), testConfigMap()},
			edit: func(o *Options) {
				o.Plan = func(context.Context) (*restore.Plan, error) {
					return nil, fmt.Errorf("%w: target is before the oldest snapshot", restore.ErrRefused)
				}
			},
			wantErr: []string{"oldest snapshot"},
			is:      restore.ErrRefused,
		},
		{
			name:    "configmap missing",
			objects: []runtime.Object{testPod("uid-1")},
			wantErr: []string{"configmap db-restore-requests not found", "restore.enabled=true"},
		},
		{
			name:    "no terminal and no --yes",
			objects: []runtime.Object{testPod("uid-1"), testConfigMap()},
			edit:    func(o *Options) { o.Yes = false },
			wantErr: []string{"not a terminal", "--yes"},
			is:      ErrNotConfirmed,
		},
		{
			name:    "answered no",
			objects: []runtime.Object{testPod("uid-1"), testConfigMap()},
			edit:    func(o *Options) { o.Yes = false; o.Confirm = func() (bool, error) { return false, nil } },
			is:      ErrNotConfirmed,
		},
		{
			name: "pod without the restore init container",
			objects: func() []runtime.Object {
				p := testPod("uid-1")
				p.Spec.InitContainers = nil
				return []runtime.Object{p, testConfigMap()}
			}(),
			wantErr: []string{"restore.enabled=true"},
		},
		{
			name:    "position target",
			objects: []runtime.Object{testPod("uid-1"), testConfigMap()},
			edit: func(o *Options) {
				o.Target = restore.Target{Kind: restore.AtPosition, Position: catalog.Position{File: "mysql-bin.000001", Pos: 4}}
			},
			wantErr: []string{"binlog position"},
		},
		{
			name:    "forbidden to update the configmap",
			objects: []runtime.Object{testPod("uid-1"), testConfigMap()},
			react: func(c *fake.Clientset) {
				c.PrependReactor("update", "configmaps", forbidden("update", "configmaps"))
			},
			wantErr:  []string{`verb "update" on "configmaps"`},
			attempts: "update configmaps",
		},
		{
			name:    "forbidden to read the pod",
			objects: []runtime.Object{testPod("uid-1"), testConfigMap()},
			react:   func(c *fake.Clientset) { c.PrependReactor("get", "pods", forbidden("get", "pods")) },
			wantErr: []string{`verb "get" on "pods"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newClient(t, tt.objects...)
			if tt.react != nil {
				tt.react(client)
			}
			var out bytes.Buffer
			o := options(client, &out)
			if tt.edit != nil {
				tt.edit(&o)
			}
			_, err := Run(t.Context(), o)
			if err == nil {
				t.Fatal("Run succeeded, want an error")
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
			if v, ok := requestOf(t, client); ok && tt.is != ErrPending {
				t.Errorf("request written: %q", v)
			}
			if tt.name == "plan refused" && len(client.Actions()) > 0 {
				t.Errorf("plan refused but the API was called: %v", client.Actions())
			}
		})
	}
}

// TestRunFailureThenRerun: each failure leaves the request in place, and
// running the same command again completes the restore.
func TestRunFailureThenRerun(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		react   func(*fake.Clientset) func() // returns the undo
		wantErr []string
		is      error
	}{
		{
			name:    "pod started on an older configmap",
			mode:    "stale",
			wantErr: []string{"without serving request req-1", "re-run"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newClient(t, testPod("uid-1"), testConfigMap())
			ctl := startController(t, client, tt.mode)
			undo := func() {}
			if tt.react != nil {
				undo = tt.react(client)
			}
			var out bytes.Buffer
			o := options(client, &out)
			o.Timeout = 300 * time.Millisecond
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
			if v, ok := requestOf(t, client); !ok || !strings.HasPrefix(v, "id=req-1\n") {
				t.Fatalf("request after the failure = %q, %v; want req-1 kept", v, ok)
			}

			// The cause goes away; the same command again completes it.
			undo()
			ctl.mode.Store("ok")
			waitForPod(t, client)
			out.Reset()
			o.Timeout = 5 * time.Second
			o.NewID = func(time.Time) string { return "req-2" }
			res, err := Run(t.Context(), o)
			if err != nil {
				t.Fatalf("re-run: %v\n%s", err, out.String())
			}
			if !res.Resumed || res.Request.ID != "req-1" || res.Termination == nil || res.Termination.Request != "req-1" || !res.Cleared {
				t.Errorf("re-run: Resumed %v, request %s, termination %+v, cleared %v; want request req-1 resumed, served and cleared",
					res.Resumed, res.Request.ID, res.Termination, res.Cleared)
			}
			if v, ok := requestOf(t, client); ok {
				t.Errorf("request left after the re-run: %q", v)
			}
		})
	}
}

// waitForPod waits until the simulated controller has a pod in place.
func waitForPod(t *testing.T, client *fake.Clientset) {
	t.Helper()
	testbed.Eventually(t, 5*time.Second, func() error {
		if _, err := client.Tracker().Get(podsGVR, ns, podName); err != nil {
			return fmt.Errorf("the simulated controller has not recreated the pod: %v", err)
		}
		return nil
	})
}

// TestWriteRequestConflict: another operator writing a request for the same
// pod between this run's read and write makes the update conflict; the run
// reads again, sees the other request and stops without deleting the pod.
func TestWriteRequestConflict(t *testing.T) {
	tests := []struct {
		name  string
		other string // what the other operator wrote; "" only bumps the version
		is    error
	}{
		{name: "unrelated change", other: ""},
		{name: "request for the same pod", other: "id=theirs\nto=latest\n", is: ErrPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newClient(t, testPod("uid-1"), testConfigMap())
			startController(t, client, "ok")
			var once atomic.Bool
			client.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				if once.Swap(true) {
					return false, nil, nil
				}
				cm := testConfigMap()
				cm.Data = map[string]string{"db-mysql-pitr-1": "id=x\nto=latest\n"}
				if tt.other != "" {
					cm.Data[podName] = tt.other
				}
				if err := client.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, cm, ns); err != nil {
					return true, nil, err
				}
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, cmName, errors.New("changed"))
			})
			var out bytes.Buffer
			_, err := Run(t.Context(), options(client, &out))
			if tt.is != nil {
				if !errors.Is(err, tt.is) {
					t.Fatalf("Run: %v, want %v", err, tt.is)
				}
				if v, _ := requestOf(t, client); v != tt.other {
					t.Errorf("their request was clobbered: %q", v)
				}
				for _, w := range writes(client) {
					if w == "delete pods" {
						t.Error("pod deleted after a conflicting request")
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			cm, _ := client.CoreV1().ConfigMaps(ns).Get(t.Context(), cmName, metav1.GetOptions{})
			if _, ok := cm.Data["db-mysql-pitr-1"]; !ok {
				t.Error("the other pod's request was lost")
			}
		})
	}
}

func TestRequestFormat(t *testing.T) {
	tests := []struct {
		name, in string
		want     Request
		wantErr  bool
	}{
		{name: "written", in: Request{ID: "a-1", To: "latest", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}.Format(),
			want: Request{ID: "a-1", To: "latest", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{name: "kubectl style", in: "id=20261127-1\nto=2026-11-27T10:41:07Z\n", want: Request{ID: "20261127-1", To: "2026-11-27T10:41:07Z"}},
		{name: "blanks and CR", in: "  id = x_1 \r\nto= latest\r\n", want: Request{ID: "x_1", To: "latest"}},
		{name: "first wins", in: "id=a\nid=b\nto=latest\n", want: Request{ID: "a", To: "latest"}},
		{name: "bad id", in: "id=a b\nto=latest\n", wantErr: true},
		{name: "no to", in: "id=a\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseRequest(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("ParseRequest(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
	if id := NewID(time.Now()); !validID(id) {
		t.Errorf("NewID = %q, not an id restore.sh accepts", id)
	}
	long := strings.Repeat("r", 60)
	if got := RequestsConfigMap(long); len(got) != 63 || strings.HasSuffix(got, "-") {
		t.Errorf("RequestsConfigMap(60 chars) = %q, want 63 chars without a trailing '-'", got)
	}
}
