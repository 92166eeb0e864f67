// Package kube restores a pod of the mysql-pitr chart in place: it plans the
// restore against storage, records a request for the pod in the chart's
// restore-requests ConfigMap, deletes the pod so its StatefulSet recreates it
// on the same PersistentVolumeClaim, waits for the chart's restore init
// container (files/restore.sh) to serve the request and the pod to become
// Ready, and clears the request.
//
// Every step can be repeated: a run that failed leaves its request in the
// ConfigMap, and a later run to the same target resumes it instead of
// starting over.
//
// With Options.NewPVC it leaves the pod alone and restores the pod's archive
// into a new PersistentVolumeClaim, cloned from the pod's, through a Job made
// from the chart's template (newpvc.go).
package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/mysql-pitr/mysql-pitr/restore"
)

// Defaults of Options.
const (
	DefaultTimeout  = 30 * time.Minute
	DefaultPoll     = 2 * time.Second
	DefaultProgress = 30 * time.Second
)

// ErrNotConfirmed is returned when the restore was not confirmed; nothing
// in the cluster was changed.
var ErrNotConfirmed = errors.New("restore not confirmed")

// ErrPending is returned when the pod already has a pending request for
// another target; nothing in the cluster was changed.
var ErrPending = errors.New("another restore request is pending")

// Options configure Run.
type Options struct {
	Client    kubernetes.Interface
	Namespace string
	Pod       string
	// Release names the Helm release; empty takes the pod's
	// app.kubernetes.io/instance label.
	Release string
	Target  restore.Target
	// Plan plans the restore (restore.Make against storage). It runs before
	// any call to the cluster; its refusal ends the run.
	Plan func(ctx context.Context) (*restore.Plan, error)
	// PrintPlan shows the plan before confirmation (may be nil).
	PrintPlan func(w io.Writer, p *restore.Plan)
	// Yes skips confirmation. Otherwise Confirm is asked; without Confirm
	// the run is refused with ErrNotConfirmed.
	Yes     bool
	Confirm func() (bool, error)
	// Timeout bounds the wait for the restored pod to become Ready.
	Timeout time.Duration
	// Poll is how often the pod is read while waiting; Progress how often a
	// progress line repeats an unchanged phase.
	Poll, Progress time.Duration
	// Out receives the plan, progress lines and the report.
	Out io.Writer
	// Now and NewID are replaced by tests.
	Now   func() time.Time
	NewID func(time.Time) string

	// NewPVC, when set, restores into a new PersistentVolumeClaim of this
	// name through a Job instead of restoring the pod in place.
	NewPVC string
	// Storage is the archive URL the plan was made against. With NewPVC the
	// Job must restore from the same archive (the query string aside); ""
	// skips that check.
	Storage string
}

// Result is what an in-place restore did.
type Result struct {
	Plan      *restore.Plan
	ConfigMap string
	Request   Request
	// Resumed is set when a pending request from an earlier run was reused.
	Resumed bool
	// PodUID is the restored pod's UID (with NewPVC, the Job's pod's).
	PodUID types.UID
	// Termination is the restore init container's report; nil if the chart's
	// restore.sh does not write one.
	Termination *Termination
	// Cleared is set when the request was removed from the ConfigMap.
	Cleared bool
	Elapsed time.Duration

	// PVC and Job name what a restore to a new PVC created; JobDeleted is
	// set once the finished Job was deleted (the PVC stays).
	PVC, Job   string
	JobDeleted bool
}

func (o *Options) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Progress <= 0 {
		o.Progress = DefaultProgress
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = NewID
	}
}

// Run restores the pod in place; see the package comment for the steps.
// A refused plan, a refused confirmation, a missing ConfigMap, a pod without
// the chart's restore init container and a conflicting pending request all
// return before anything in the cluster is changed.
func Run(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.NewPVC != "" {
		return runNewPVC(ctx, o)
	}
	begin := o.Now()
	p, err := makePlan(ctx, o)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: p}

	pod, err := restorablePod(ctx, o)
	if err != nil {
		return nil, err
	}
	release, err := releaseOf(o, pod)
	if err != nil {
		return nil, err
	}
	res.ConfigMap = RequestsConfigMap(release)
	if err := findPending(ctx, o, release, res); err != nil {
		return nil, err
	}

	if err := confirm(o, fmt.Sprintf("restore pod %s/%s", o.Namespace, o.Pod)); err != nil {
		return nil, err
	}
	if err := recordRequest(ctx, o, res); err != nil {
		return nil, err
	}

	oldUID, err := restartPod(ctx, o, pod, res)
	if err != nil {
		return nil, err
	}
	w := waiter{o: o, oldUID: oldUID, begin: begin}
	if err := w.waitRestored(ctx, res); err != nil {
		return nil, err
	}
	res.Elapsed = o.Now().Sub(begin)
	report(o.Out, o.Pod, res)
	if err := clearServed(ctx, o, res); err != nil {
		return res, err
	}
	return res, nil
}

// validate refuses options Run cannot work with.
func (o *Options) validate() error {
	switch {
	case o.Client == nil || o.Plan == nil:
		return errors.New("kube restore: client and planner are required")
	case o.Pod == "":
		return errors.New("kube restore: no pod given")
	case o.Namespace == "":
		return errors.New("kube restore: no namespace given")
	case o.Target.Kind == restore.AtPosition:
		return errors.New("kube restore: the chart's restore.sh restores to a time or latest, not to a binlog position")
	}
	return nil
}

// makePlan plans the restore and shows the plan; it runs before any call to
// the cluster.
func makePlan(ctx context.Context, o Options) (*restore.Plan, error) {
	p, err := o.Plan(ctx)
	if err != nil {
		return nil, err
	}
	if o.PrintPlan != nil {
		o.PrintPlan(o.Out, p)
	}
	return p, nil
}

// restorablePod reads the pod and refuses one that deleting would not
// restore (checkPod).
func restorablePod(ctx context.Context, o Options) (*corev1.Pod, error) {
	pod, err := o.Client.CoreV1().Pods(o.Namespace).Get(ctx, o.Pod, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("pod %s not found in namespace %s (if an earlier run deleted it, its StatefulSet recreates it: run again once it exists; kubectl -n %s get pod %s)",
				o.Pod, o.Namespace, o.Namespace, o.Pod)
		}
		return nil, apiError("get", "pods", o.Namespace, o.Pod, err)
	}
	if err := checkPod(pod); err != nil {
		return nil, err
	}
	return pod, nil
}

// findPending reads the release's requests ConfigMap (res.ConfigMap) for a
// request the pod already has: one to the same target is resumed (set in
// res), one to another target refuses the run.
func findPending(ctx context.Context, o Options, release string, res *Result) error {
	cm, err := o.Client.CoreV1().ConfigMaps(o.Namespace).Get(ctx, res.ConfigMap, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("configmap %s not found in namespace %s: the chart creates it with restore.enabled=true (is the release %q right?)",
				res.ConfigMap, o.Namespace, release)
		}
		return apiError("get", "configmaps", o.Namespace, res.ConfigMap, err)
	}
	v, ok := cm.Data[o.Pod]
	if !ok {
		return nil
	}
	old, err := ParseRequest(v)
	switch {
	case err == nil && old.To == o.Target.String():
		res.Request, res.Resumed = old, true
		return nil
	case err == nil:
		return fmt.Errorf("%w for pod %s in configmap %s: id=%s to=%s (written %s); re-run with --to %s to finish it, or remove it: kubectl -n %s patch configmap %s --type json -p '[{\"op\":\"remove\",\"path\":\"/data/%s\"}]'",
			ErrPending, o.Pod, res.ConfigMap, old.ID, old.To, fmtTime(old.Created), old.To, o.Namespace, res.ConfigMap, o.Pod)
	default:
		return fmt.Errorf("configmap %s, key %s: %w; fix or remove the key", res.ConfigMap, o.Pod, err)
	}
}

// recordRequest writes a new request for the pod into the ConfigMap, unless
// a pending one is resumed.
func recordRequest(ctx context.Context, o Options, res *Result) error {
	to := o.Target.String()
	if res.Resumed {
		fmt.Fprintf(o.Out, "resuming pending request %s for pod %s (target %s)\n", res.Request.ID, o.Pod, to)
		return nil
	}
	res.Request = Request{ID: o.NewID(o.Now()), To: to, Created: o.Now()}
	if err := writeRequest(ctx, o, res.ConfigMap, res.Request); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "recorded request %s in configmap %s for pod %s\n", res.Request.ID, res.ConfigMap, o.Pod)
	return nil
}

// waitRestored waits for the restarted pod to become Ready and reads its
// restore init container's report into res. An error leaves the request
// in the ConfigMap for a re-run to resume.
func (w *waiter) waitRestored(ctx context.Context, res *Result) error {
	ready, err := w.wait(ctx)
	if err != nil {
		return fmt.Errorf("%w; request %s stays in configmap %s: re-run the same command to resume", err, res.Request.ID, res.ConfigMap)
	}
	res.PodUID = ready.UID
	res.Termination, err = termination(ready, res.Request.ID)
	if err != nil {
		return fmt.Errorf("%w; request %s stays in configmap %s: re-run the same command to restart the pod and resume", err, res.Request.ID, res.ConfigMap)
	}
	return nil
}

// clearServed removes the served request from the ConfigMap. Without a
// report from restore.sh the request is left: nothing shows it was served.
func clearServed(ctx context.Context, o Options, res *Result) error {
	if res.Termination == nil {
		fmt.Fprintf(o.Out, "restore.sh reported no result, so request %s stays in configmap %s (harmless once served: check kubectl -n %s logs %s -c %s)\n",
			res.Request.ID, res.ConfigMap, o.Namespace, o.Pod, RestoreContainer)
		return nil
	}
	if err := clearRequest(ctx, o, res.ConfigMap, res.Request.ID); err != nil {
		return fmt.Errorf("pod %s is restored, but %w; the request is served, so it is harmless: a later pod start sees its id in the datadir", o.Pod, err)
	}
	res.Cleared = true
	fmt.Fprintf(o.Out, "cleared request %s from configmap %s\n", res.Request.ID, res.ConfigMap)
	return nil
}

// releaseOf is the Helm release of the pod: Options.Release, or the pod's
// app.kubernetes.io/instance label.
func releaseOf(o Options, pod *corev1.Pod) (string, error) {
	if o.Release != "" {
		return o.Release, nil
	}
	if r := pod.Labels["app.kubernetes.io/instance"]; r != "" {
		return r, nil
	}
	return "", fmt.Errorf("pod %s has no app.kubernetes.io/instance label: give --release", o.Pod)
}

// confirm asks for confirmation unless Options.Yes.
func confirm(o Options, what string) error {
	if o.Yes {
		return nil
	}
	if o.Confirm == nil {
		return fmt.Errorf("%w: stdin is not a terminal; pass --yes to %s", ErrNotConfirmed, what)
	}
	ok, err := o.Confirm()
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: nothing was changed", ErrNotConfirmed)
	}
	return nil
}

// checkPod refuses a pod that deleting would not restore: one no
// StatefulSet recreates, or one without the chart's restore init container.
func checkPod(pod *corev1.Pod) error {
	owned := false
	for _, ref := range pod.OwnerReferences {
		if ref.Kind == "StatefulSet" {
			owned = true
		}
	}
	if !owned {
		return fmt.Errorf("pod %s is not managed by a StatefulSet: deleting it would not bring it back", pod.Name)
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == RestoreContainer {
			return nil
		}
	}
	return fmt.Errorf("pod %s has no %s init container: install the chart with restore.enabled=true (and let the StatefulSet roll out) first", pod.Name, RestoreContainer)
}

// writeRequest adds the request to the ConfigMap. The update carries the
// resourceVersion that was read, so a concurrent writer makes it fail with
// a conflict; then the ConfigMap is read again and the request is written
// only if the pod still has none.
func writeRequest(ctx context.Context, o Options, name string, r Request) error {
	cms := o.Client.CoreV1().ConfigMaps(o.Namespace)
	for attempt := 0; ; attempt++ {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return apiError("get", "configmaps", o.Namespace, name, err)
		}
		if v, ok := cm.Data[o.Pod]; ok {
			return fmt.Errorf("%w for pod %s: configmap %s changed while this run was starting (now %q)", ErrPending, o.Pod, name, v)
		}
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[o.Pod] = r.Format()
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 4 {
			return apiError("update", "configmaps", o.Namespace, name, err)
		}
	}
}

// clearRequest removes the pod's key if it still holds request id; a
// request someone wrote since is left alone.
func clearRequest(ctx context.Context, o Options, name, id string) error {
	cms := o.Client.CoreV1().ConfigMaps(o.Namespace)
	for attempt := 0; ; attempt++ {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return apiError("get", "configmaps", o.Namespace, name, err)
		}
		r, err := ParseRequest(cm.Data[o.Pod])
		if err != nil || r.ID != id {
			return nil
		}
		cm = cm.DeepCopy()
		delete(cm.Data, o.Pod)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 4 {
			return apiError("update", "configmaps", o.Namespace, name, err)
		}
	}
}

// restartPod deletes the pod so its StatefulSet recreates it and the new
// pod's init container serves the request; it returns the UID the restored
// pod must differ from (empty: any pod will do). When resuming, a pod that
// is already running the restore, or that already served the request, is
// left alone: deleting it would only start the restore over.
func restartPod(ctx context.Context, o Options, pod *corev1.Pod, res *Result) (types.UID, error) {
	if res.Resumed {
		if st := initStatus(pod); st != nil {
			if st.State.Running != nil && pod.DeletionTimestamp == nil {
				fmt.Fprintf(o.Out, "pod %s is already running %s: waiting for it\n", o.Pod, RestoreContainer)
				return "", nil
			}
			if t, _ := termination(pod, res.Request.ID); t != nil && podReady(pod) {
				fmt.Fprintf(o.Out, "pod %s already served request %s\n", o.Pod, res.Request.ID)
				return "", nil
			}
		}
	}
	uid := pod.UID
	err := o.Client.CoreV1().Pods(o.Namespace).Delete(ctx, o.Pod, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid},
	})
	switch {
	case err == nil:
		fmt.Fprintf(o.Out, "deleted pod %s (uid %s); its StatefulSet recreates it on the same volume\n", o.Pod, uid)
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		// Gone already, or replaced since it was read: the pod that comes
		// up reads the request either way.
		fmt.Fprintf(o.Out, "pod %s (uid %s) is already gone\n", o.Pod, uid)
	default:
		return "", fmt.Errorf("%w; request %s stays in configmap %s: re-run the same command to resume", apiError("delete", "pods", o.Namespace, o.Pod, err), res.Request.ID, res.ConfigMap)
	}
	return uid, nil
}

// apiError names the verb and resource a Forbidden error lacks, which is
// what the caller's Role needs to grant.
func apiError(verb, resource, ns, name string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s %s %s in namespace %s: forbidden: the caller needs verb %q on %q (the chart's restore Role from restore.rbac.create grants it): %w",
			verb, resource, name, ns, verb, resource, err)
	}
	return fmt.Errorf("%s %s %s in namespace %s: %w", verb, resource, name, ns, err)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "at an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}
