package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"path"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrPVCExists is returned when the PVC to restore into already exists;
// nothing in the cluster was changed.
var ErrPVCExists = errors.New("persistentvolumeclaim already exists")

// ErrJobFailed is wrapped when the restore Job fails.
var ErrJobFailed = errors.New("restore job failed")

// jobNameLabel selects a Job's pods; the Job controller sets it
// (Kubernetes 1.27+, the chart's minimum).
const jobNameLabel = "batch.kubernetes.io/job-name"

// runNewPVC restores the pod's archive into a new PVC through a Job made
// from the chart's template; the pod is not touched. Everything that could
// refuse the restore (the plan, the pod and its PVC, the template, a PVC or
// Job already in the way, the confirmation) is checked before the PVC is
// created. The finished Job is deleted; the PVC stays.
func runNewPVC(ctx context.Context, o Options) (*Result, error) {
	begin := o.Now()
	p, err := makePlan(ctx, o)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: p, PVC: o.NewPVC, Job: JobName(o.NewPVC)}

	pod, err := sourcePod(ctx, o)
	if err != nil {
		return nil, err
	}
	release, err := releaseOf(o, pod)
	if err != nil {
		return nil, err
	}
	tmpl, err := jobTemplate(ctx, o, release)
	if err != nil {
		return nil, err
	}
	if o.Storage != "" && !sameArchive(o.Storage, tmpl.Storage(o.Pod)) {
		return nil, fmt.Errorf("the plan was made against %s, but the chart's restore Job restores pod %s from %s: give that as --storage",
			o.Storage, o.Pod, tmpl.Storage(o.Pod))
	}
	src, err := dataClaim(ctx, o, pod, tmpl.DataVolume)
	if err != nil {
		return nil, err
	}
	if err := checkNotInTheWay(ctx, o, res.Job); err != nil {
		return nil, err
	}

	to := o.Target.String()
	if err := createPVC(ctx, o, clonePVC(src, o.NewPVC, o.Pod, to), src.Name); err != nil {
		return nil, err
	}
	id := o.NewID(o.Now())
	job := tmpl.Job(res.Job, o.Namespace, o.NewPVC, o.Pod, to, id)
	if _, err := o.Client.BatchV1().Jobs(o.Namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("%w; PVC %s was created and is empty: delete it (kubectl -n %s delete pvc %s) before trying again with that name",
			apiError("create", "jobs", o.Namespace, res.Job, err), o.NewPVC, o.Namespace, o.NewPVC)
	}
	fmt.Fprintf(o.Out, "created job %s: restoring pod %s's archive to %s into PVC %s\n", res.Job, o.Pod, to, o.NewPVC)

	w := jobWaiter{o: o, name: res.Job, begin: begin}
	if err := w.waitDone(ctx, res, id); err != nil {
		return res, err
	}
	res.Elapsed = o.Now().Sub(begin)
	reportNewPVC(o, res, tmpl.DatadirOnVolume())
	if err := deleteJob(ctx, o, res.Job); err != nil {
		return res, fmt.Errorf("PVC %s is restored, but %w: delete the job by hand (kubectl -n %s delete job %s)", o.NewPVC, err, o.Namespace, res.Job)
	}
	res.JobDeleted = true
	fmt.Fprintf(o.Out, "deleted job %s; PVC %s stays\n", res.Job, o.NewPVC)
	return res, nil
}

// sourcePod reads the pod whose archive and volume the restore starts from.
func sourcePod(ctx context.Context, o Options) (*corev1.Pod, error) {
	pod, err := o.Client.CoreV1().Pods(o.Namespace).Get(ctx, o.Pod, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("pod %s not found in namespace %s: give the pod whose archive and volume to restore from", o.Pod, o.Namespace)
		}
		return nil, apiError("get", "pods", o.Namespace, o.Pod, err)
	}
	return pod, nil
}

// dataClaim reads the PVC behind the pod's data volume, whose size and
// storage class the new PVC takes.
func dataClaim(ctx context.Context, o Options, pod *corev1.Pod, volume string) (*corev1.PersistentVolumeClaim, error) {
	claim := ""
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim == "" {
		return nil, fmt.Errorf("pod %s has no volume %s backed by a PersistentVolumeClaim to clone size and storage class from", o.Pod, volume)
	}
	src, err := o.Client.CoreV1().PersistentVolumeClaims(o.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return nil, apiError("get", "persistentvolumeclaims", o.Namespace, claim, err)
	}
	return src, nil
}

// checkNotInTheWay refuses the restore when the new PVC or the Job already
// exists.
func checkNotInTheWay(ctx context.Context, o Options, job string) error {
	switch _, err := o.Client.CoreV1().PersistentVolumeClaims(o.Namespace).Get(ctx, o.NewPVC, metav1.GetOptions{}); {
	case err == nil:
		return fmt.Errorf("%w: %s in namespace %s; nothing was changed: choose another name, or delete it first if it holds nothing you need (kubectl -n %s delete pvc %s)",
			ErrPVCExists, o.NewPVC, o.Namespace, o.Namespace, o.NewPVC)
	case !apierrors.IsNotFound(err):
		return apiError("get", "persistentvolumeclaims", o.Namespace, o.NewPVC, err)
	}
	switch _, err := o.Client.BatchV1().Jobs(o.Namespace).Get(ctx, job, metav1.GetOptions{}); {
	case err == nil:
		return fmt.Errorf("job %s already exists in namespace %s (an earlier restore to a PVC of this name?); nothing was changed: delete it first (kubectl -n %s delete job %s)",
			job, o.Namespace, o.Namespace, job)
	case !apierrors.IsNotFound(err):
		return apiError("get", "jobs", o.Namespace, job, err)
	}
	return nil
}

// createPVC describes the new PVC, asks for confirmation and creates it;
// from is the claim it was cloned from.
func createPVC(ctx context.Context, o Options, pvc *corev1.PersistentVolumeClaim, from string) error {
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	fmt.Fprintf(o.Out, "new PVC %s: %s, storage class %s, cloned from %s; the pod %s is not touched\n",
		o.NewPVC, size.String(), storageClass(pvc), from, o.Pod)
	if err := confirm(o, fmt.Sprintf("create PVC %s/%s and restore into it", o.Namespace, o.NewPVC)); err != nil {
		return err
	}
	if _, err := o.Client.CoreV1().PersistentVolumeClaims(o.Namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%w: %s was created by someone else meanwhile; nothing was changed", ErrPVCExists, o.NewPVC)
		}
		return apiError("create", "persistentvolumeclaims", o.Namespace, o.NewPVC, err)
	}
	fmt.Fprintf(o.Out, "created PVC %s\n", o.NewPVC)
	return nil
}

// waitDone waits for the Job to finish and reads its pod's report of
// request id into res. A failed Job is deleted (the PVC stays); one whose
// report cannot be read is left for inspection.
func (w *jobWaiter) waitDone(ctx context.Context, res *Result, id string) error {
	done, err := w.wait(ctx)
	if err != nil {
		if errors.Is(err, ErrJobFailed) {
			if derr := deleteJob(ctx, w.o, w.name); derr != nil {
				err = fmt.Errorf("%w; deleting the failed job: %w", err, derr)
			}
		}
		return err
	}
	res.PodUID = done.UID
	if res.Termination, err = jobTermination(done, id); err != nil {
		return fmt.Errorf("%w; job %s is left for inspection (kubectl -n %s delete job %s when done)", err, w.name, w.o.Namespace, w.name)
	}
	return nil
}

// jobTemplate reads and parses the release's Job template.
func jobTemplate(ctx context.Context, o Options, release string) (*JobTemplate, error) {
	name := JobTemplateConfigMap(release)
	cm, err := o.Client.CoreV1().ConfigMaps(o.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("configmap %s not found in namespace %s: the chart creates it with restore.enabled=true (is the release %q right?)",
				name, o.Namespace, release)
		}
		return nil, apiError("get", "configmaps", o.Namespace, name, err)
	}
	t, err := ParseJobTemplate(cm.Data[JobTemplateKey])
	if err != nil {
		return nil, fmt.Errorf("configmap %s: %w", name, err)
	}
	return t, nil
}

// sameArchive compares two archive URLs without their query strings, which
// carry connection options, not the location.
func sameArchive(a, b string) bool {
	strip := func(u string) string {
		u, _, _ = strings.Cut(u, "?")
		return strings.TrimRight(u, "/")
	}
	return strip(a) == strip(b)
}

// clonePVC returns a new claim with src's size, storage class, access modes
// and volume mode, labelled with src's chart labels and annotated with what
// it holds.
func clonePVC(src *corev1.PersistentVolumeClaim, name, pod, target string) *corev1.PersistentVolumeClaim {
	labels := map[string]string{"app.kubernetes.io/managed-by": "mysql-pitr"}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance"} {
		if v, ok := src.Labels[k]; ok {
			labels[k] = v
		}
	}
	size := src.Spec.Resources.Requests[corev1.ResourceStorage]
	if c, ok := src.Status.Capacity[corev1.ResourceStorage]; ok && c.Cmp(size) > 0 {
		size = c
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: src.Namespace, Labels: labels,
			Annotations: map[string]string{AnnotationSourcePod: pod, AnnotationTarget: target},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      src.Spec.AccessModes,
			StorageClassName: src.Spec.StorageClassName,
			VolumeMode:       src.Spec.VolumeMode,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
}

func storageClass(pvc *corev1.PersistentVolumeClaim) string {
	if pvc.Spec.StorageClassName == nil {
		return "(cluster default)"
	}
	return *pvc.Spec.StorageClassName
}

// deleteJob deletes the Job and, through the garbage collector, its pods.
func deleteJob(ctx context.Context, o Options, name string) error {
	bg := metav1.DeletePropagationBackground
	err := o.Client.BatchV1().Jobs(o.Namespace).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError("delete", "jobs", o.Namespace, name, err)
	}
	return nil
}

// DatadirOnVolume is where the restored datadir is on the new PVC,
// relative to its root.
func (t *JobTemplate) DatadirOnVolume() string {
	c := t.container()
	datadir := ""
	if i := envIndex(c, "PITR_DATADIR"); i >= 0 {
		datadir = c.Env[i].Value
	}
	for _, m := range c.VolumeMounts {
		if m.Name == t.DataVolume && strings.HasPrefix(datadir, strings.TrimRight(m.MountPath, "/")+"/") {
			return path.Join(m.SubPath, strings.TrimPrefix(datadir, strings.TrimRight(m.MountPath, "/")+"/"))
		}
	}
	return datadir
}

// jobWaiter follows the restore Job until it finishes.
type jobWaiter struct {
	o     Options
	name  string
	begin time.Time

	phase   string
	said    time.Time
	job     *batchv1.Job
	pod     *corev1.Pod
	lastErr error
}

// Phases of the wait for the Job.
const (
	jobPhaseCreate  = "waiting for the job's pod"
	jobPhasePending = "waiting for the job's pod to be scheduled and start"
	jobPhaseCopy    = "copying the binary (init container pitr-copy-binary)"
	jobPhaseRestore = "restoring (container " + RestoreContainer + " running)"
)

// wait polls the Job until it completes (returning its pod) or fails.
func (w *jobWaiter) wait(ctx context.Context) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	t := time.NewTicker(w.o.Poll)
	defer t.Stop()
	for {
		pod, done, err := w.step(ctx)
		if err != nil || done {
			return pod, err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, w.timeout(context.WithoutCancel(ctx))
			}
			return nil, fmt.Errorf("wait for job %s: %s: %w; the job keeps running: %s", w.name, w.phase, ctx.Err(), w.leftJobHint())
		case <-t.C:
		}
	}
}

func (w *jobWaiter) leftJobHint() string {
	ns := w.o.Namespace
	return fmt.Sprintf("follow it with kubectl -n %s logs -f job/%s -c %s, and delete it when it is done (kubectl -n %s delete job %s; PVC %s stays)",
		ns, w.name, RestoreContainer, ns, w.name, w.o.NewPVC)
}

func (w *jobWaiter) step(ctx context.Context) (*corev1.Pod, bool, error) {
	job, err := w.o.Client.BatchV1().Jobs(w.o.Namespace).Get(ctx, w.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, false, fmt.Errorf("job %s was deleted before it finished; PVC %s may hold a partial restore", w.name, w.o.NewPVC)
	case apierrors.IsForbidden(err):
		return nil, false, apiError("get", "jobs", w.o.Namespace, w.name, err)
	case err != nil:
		w.lastErr = err
		return nil, false, nil
	}
	w.job = job
	pods, err := w.o.Client.CoreV1().Pods(w.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: jobNameLabel + "=" + w.name})
	switch {
	case apierrors.IsForbidden(err):
		return nil, false, apiError("list", "pods", w.o.Namespace, "of job "+w.name, err)
	case err != nil:
		w.lastErr = err
	default:
		w.pod = nil
		for i := range pods.Items {
			p := &pods.Items[i]
			if w.pod == nil || p.CreationTimestamp.After(w.pod.CreationTimestamp.Time) {
				w.pod = p
			}
		}
	}
	if jobCondition(job, batchv1.JobComplete) != nil {
		if w.pod == nil {
			return nil, false, fmt.Errorf("job %s completed but its pod is gone: its result cannot be read; PVC %s should hold the restore", w.name, w.o.NewPVC)
		}
		return w.pod, true, nil
	}
	if c := jobCondition(job, batchv1.JobFailed); c != nil {
		return nil, false, w.failure(c)
	}
	switch p := w.pod; {
	case p == nil:
		w.say(jobPhaseCreate, "")
	case p.Status.Phase == corev1.PodPending && len(p.Status.InitContainerStatuses) > 0 && p.Status.InitContainerStatuses[0].State.Running != nil:
		w.say(jobPhaseCopy, "")
	case containerRunning(p, RestoreContainer):
		w.say(jobPhaseRestore, "")
	default:
		w.say(jobPhasePending, podSummary(p))
	}
	return nil, false, nil
}

func (w *jobWaiter) say(phase, detail string) {
	now := w.o.Now()
	if phase == w.phase && now.Sub(w.said) < w.o.Progress {
		return
	}
	w.phase, w.said = phase, now
	line := fmt.Sprintf("[%s] job %s: %s", now.Sub(w.begin).Round(time.Second), w.name, phase)
	if detail != "" {
		line += " (" + detail + ")"
	}
	fmt.Fprintln(w.o.Out, line)
}

// failure explains a failed Job: the failed container's exit code, reason
// and message (the chart sets terminationMessagePolicy
// FallbackToLogsOnError, so that is the end of its log), else the Job's
// condition.
func (w *jobWaiter) failure(c *batchv1.JobCondition) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: job %s", ErrJobFailed.Error(), w.name)
	var t *corev1.ContainerStateTerminated
	name := ""
	if w.pod != nil {
		for _, set := range [][]corev1.ContainerStatus{w.pod.Status.InitContainerStatuses, w.pod.Status.ContainerStatuses} {
			for _, st := range set {
				if s := st.State.Terminated; s != nil && s.ExitCode != 0 && t == nil {
					t, name = s, st.Name
				}
			}
		}
	}
	logs := ""
	if t != nil {
		fmt.Fprintf(&b, ": container %s exited %d (%s)", name, t.ExitCode, t.Reason)
		logs = childout.Last(t.Message, 20, "\n")
	} else {
		fmt.Fprintf(&b, ": %s: %s", c.Reason, oneLine(c.Message))
	}
	fmt.Fprintf(&b, "; PVC %s is left as it is and may hold a partial restore: delete it (kubectl -n %s delete pvc %s) before trying again with that name",
		w.o.NewPVC, w.o.Namespace, w.o.NewPVC)
	if logs != "" {
		fmt.Fprintf(&b, "; the container's last log lines:\n    %s", strings.ReplaceAll(logs, "\n", "\n    "))
	}
	return wrapText{ErrJobFailed, b.String()}
}

// wrapText is an error with its own text that wraps a sentinel.
type wrapText struct {
	err  error
	text string
}

func (e wrapText) Error() string { return e.text }
func (e wrapText) Unwrap() error { return e.err }

func (w *jobWaiter) timeout(ctx context.Context) error {
	var b strings.Builder
	fmt.Fprintf(&b, "job %s not finished after %s, while %s", w.name, w.o.Timeout, w.phase)
	if w.pod != nil {
		fmt.Fprintf(&b, "; pod %s: phase %s", w.pod.Name, w.pod.Status.Phase)
		if s := podSummary(w.pod); s != "" {
			fmt.Fprintf(&b, ", %s", s)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		evs, err := w.o.Client.CoreV1().Events(w.o.Namespace).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + w.pod.Name,
		})
		if err == nil {
			items := evs.Items
			if len(items) > 5 {
				items = items[len(items)-5:]
			}
			for _, e := range items {
				fmt.Fprintf(&b, "; event %s %s: %s", e.Type, e.Reason, oneLine(e.Message))
			}
		}
	}
	if w.lastErr != nil {
		fmt.Fprintf(&b, "; last API error: %v", w.lastErr)
	}
	fmt.Fprintf(&b, "; the job keeps running: %s", w.leftJobHint())
	return fmt.Errorf("%w: %s", ErrTimeout, b.String())
}

func jobCondition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if c := &job.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

func containerRunning(p *corev1.Pod, name string) bool {
	for _, st := range p.Status.ContainerStatuses {
		if st.Name == name && st.State.Running != nil {
			return true
		}
	}
	return false
}

// podSummary is containerSummary plus why a pod is not scheduled (a PVC
// that cannot be provisioned shows there).
func podSummary(p *corev1.Pod) string {
	parts := []string{}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			parts = append(parts, fmt.Sprintf("not scheduled: %s %s", c.Reason, oneLine(c.Message)))
		}
	}
	if s := containerSummary(p); s != "" {
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// jobTermination reads files/restore-job.sh's report from the restore
// container's termination message.
func jobTermination(p *corev1.Pod, id string) (*Termination, error) {
	for _, st := range p.Status.ContainerStatuses {
		if st.Name != RestoreContainer || st.State.Terminated == nil {
			continue
		}
		msg := strings.TrimSpace(st.State.Terminated.Message)
		if msg == "" {
			return nil, nil
		}
		var t Termination
		if err := json.Unmarshal([]byte(msg), &t); err != nil {
			return nil, fmt.Errorf("pod %s: %s termination message: %w", p.Name, RestoreContainer, err)
		}
		if t.Request != id {
			return nil, fmt.Errorf("pod %s reports request %q, want %s", p.Name, t.Request, id)
		}
		return &t, nil
	}
	return nil, nil
}

// reportNewPVC prints what the Job restored.
func reportNewPVC(o Options, res *Result, datadir string) {
	w := o.Out
	t := res.Termination
	if t == nil || t.Marker == nil {
		fmt.Fprintf(w, "restored pod %s's archive into PVC %s after %s (the job reported no details); the datadir is %s on the volume\n",
			o.Pod, res.PVC, res.Elapsed.Round(time.Second), datadir)
		return
	}
	m := t.Marker
	last := "-"
	if !m.LastCommit.IsZero() {
		last = m.LastCommit.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "restored pod %s's archive into PVC %s after %s: to %s: snapshot %s + %d transactions, last committed %s, stopped at %s, timeline %s; the datadir is %s on the volume\n",
		o.Pod, res.PVC, res.Elapsed.Round(time.Second), m.Target, m.Snapshot, m.Transactions, last, m.Stop, m.Timeline, datadir)
}

// lastLines returns the last n non-empty lines of s.
