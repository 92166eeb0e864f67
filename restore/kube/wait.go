package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ErrTimeout is wrapped by the error of a wait that ran out of time.
var ErrTimeout = errors.New("timed out")

// ErrRestoreFailed is wrapped when the restore init container exits with
// an error; the kubelet retries it, and so does a re-run.
var ErrRestoreFailed = errors.New("restore init container failed")

// waiter follows the pod from its deletion to the restored pod being Ready.
type waiter struct {
	o      Options
	oldUID types.UID
	begin  time.Time

	phase   string
	said    time.Time
	last    *corev1.Pod
	lastErr error
}

// Phases of the wait, named in progress lines and in a timeout.
const (
	phaseDeleting  = "waiting for the old pod to go away"
	phaseRecreate  = "waiting for the StatefulSet to recreate the pod"
	phasePending   = "waiting for the new pod to be scheduled and start"
	phaseRestoring = "restoring (init container " + RestoreContainer + " running)"
	phaseStarting  = "restore done, waiting for the server to become Ready"
)

// wait polls the pod until a pod with another UID than oldUID is Ready.
func (w *waiter) wait(ctx context.Context) (*corev1.Pod, error) {
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
			return nil, fmt.Errorf("wait for pod %s: %s: %w", w.o.Pod, w.phase, ctx.Err())
		case <-t.C:
		}
	}
}

// step reads the pod once and reports whether the restored pod is Ready.
func (w *waiter) step(ctx context.Context) (*corev1.Pod, bool, error) {
	pod, err := w.o.Client.CoreV1().Pods(w.o.Namespace).Get(ctx, w.o.Pod, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		w.last = nil
		w.say(phaseRecreate, "")
		return nil, false, nil
	case apierrors.IsForbidden(err):
		return nil, false, apiError("get", "pods", w.o.Namespace, w.o.Pod, err)
	case err != nil:
		// Transient API trouble: keep waiting, and say so on a timeout
		// (not the error of the read the deadline itself cut short).
		if ctx.Err() == nil {
			w.lastErr = err
		}
		return nil, false, nil
	}
	w.last = pod
	if w.oldUID != "" && pod.UID == w.oldUID {
		w.say(phaseDeleting, "")
		return nil, false, nil
	}
	if pod.DeletionTimestamp != nil {
		w.say(phaseDeleting, "")
		return nil, false, nil
	}
	if podReady(pod) {
		return pod, true, nil
	}
	st := initStatus(pod)
	switch {
	case st == nil:
		w.say(phasePending, strings.Join(slices.DeleteFunc([]string{string(pod.Status.Phase), podSummary(pod)}, func(s string) bool { return s == "" }), ", "))
	case failed(st) != nil:
		f := failed(st)
		// The message is the end of the container's log (the chart's
		// terminationMessagePolicy FallbackToLogsOnError), whose last
		// lines say why.
		return nil, false, fmt.Errorf("pod %s (uid %s): %w with exit code %d (%s): %s; see kubectl -n %s logs %s -c %s --previous",
			w.o.Pod, pod.UID, ErrRestoreFailed, f.ExitCode, f.Reason, lastWords(childout.Last(f.Message, 3, " "), 600), w.o.Namespace, w.o.Pod, RestoreContainer)
	case st.State.Terminated != nil && st.State.Terminated.ExitCode == 0:
		w.say(phaseStarting, containerSummary(pod))
	case st.State.Running != nil:
		w.say(phaseRestoring, "")
	default:
		w.say(phasePending, containerSummary(pod))
	}
	return nil, false, nil
}

// failed returns the restore container's failed termination, current or
// the last one before a restart.
func failed(st *corev1.ContainerStatus) *corev1.ContainerStateTerminated {
	if t := st.State.Terminated; t != nil && t.ExitCode != 0 {
		return t
	}
	if t := st.LastTerminationState.Terminated; t != nil && t.ExitCode != 0 && st.State.Running == nil {
		return t
	}
	return nil
}

// say prints a progress line when the phase changes, and repeats it every
// Progress while it does not.
func (w *waiter) say(phase, detail string) {
	now := w.o.Now()
	if phase == w.phase && now.Sub(w.said) < w.o.Progress {
		return
	}
	w.phase, w.said = phase, now
	line := fmt.Sprintf("[%s] pod %s: %s", now.Sub(w.begin).Round(time.Second), w.o.Pod, phase)
	if detail != "" {
		line += " (" + detail + ")"
	}
	fmt.Fprintln(w.o.Out, line)
}

// timeout explains a wait that ran out of time: the phase, the pod's last
// status and its recent events (if the caller may read them).
func (w *waiter) timeout(ctx context.Context) error {
	var b strings.Builder
	fmt.Fprintf(&b, "pod %s not Ready after %s, while %s", w.o.Pod, w.o.Timeout, w.phase)
	if w.last != nil {
		fmt.Fprintf(&b, "; last status: uid %s, phase %s", w.last.UID, w.last.Status.Phase)
		if s := podSummary(w.last); s != "" {
			fmt.Fprintf(&b, ", %s", s)
		}
	} else {
		b.WriteString("; the pod does not exist (is the StatefulSet scaled down, or its controller stuck?)")
	}
	if w.lastErr != nil {
		fmt.Fprintf(&b, "; last API error: %v", w.lastErr)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	evs, err := w.o.Client.CoreV1().Events(w.o.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + w.o.Pod,
	})
	if err != nil {
		fmt.Fprintf(&b, "; events not readable (%v)", oneLine(err.Error()))
		return fmt.Errorf("%w: %s", ErrTimeout, b.String())
	}
	items := slices.DeleteFunc(evs.Items, func(e corev1.Event) bool {
		return e.InvolvedObject.Name != w.o.Pod || (w.last != nil && e.InvolvedObject.UID != "" && e.InvolvedObject.UID != w.last.UID)
	})
	slices.SortFunc(items, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	if len(items) > 5 {
		items = items[len(items)-5:]
	}
	if len(items) > 0 {
		b.WriteString("; events:")
		for _, e := range items {
			fmt.Fprintf(&b, " [%s %s: %s]", e.Type, e.Reason, oneLine(e.Message))
		}
	}
	return fmt.Errorf("%w: %s", ErrTimeout, b.String())
}

func eventTime(e corev1.Event) time.Time {
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// containerSummary lists the containers that are not running, with why.
func containerSummary(pod *corev1.Pod) string {
	var parts []string
	for i, set := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, st := range set {
			switch {
			case st.State.Waiting != nil:
				parts = append(parts, fmt.Sprintf("%s waiting: %s %s", st.Name, st.State.Waiting.Reason, oneLine(st.State.Waiting.Message)))
			case st.State.Terminated != nil && st.State.Terminated.ExitCode != 0:
				parts = append(parts, fmt.Sprintf("%s exited %d", st.Name, st.State.Terminated.ExitCode))
			case st.State.Running != nil && !st.Ready && i == 1:
				parts = append(parts, st.Name+" running, not ready")
			}
		}
	}
	return strings.TrimSpace(strings.Join(parts, ", "))
}

func initStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.InitContainerStatuses {
		if pod.Status.InitContainerStatuses[i].Name == RestoreContainer {
			return &pod.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// termination reads restore.sh's report from the restore container's
// termination message. nil, nil: the chart's restore.sh writes none. A
// report for another request means the pod started without serving this
// one (for example it read an older copy of the ConfigMap).
func termination(pod *corev1.Pod, id string) (*Termination, error) {
	st := initStatus(pod)
	if st == nil || st.State.Terminated == nil || strings.TrimSpace(st.State.Terminated.Message) == "" {
		return nil, nil
	}
	var t Termination
	if err := json.Unmarshal([]byte(st.State.Terminated.Message), &t); err != nil {
		return nil, fmt.Errorf("pod %s: %s termination message: %w", pod.Name, RestoreContainer, err)
	}
	if t.Request != id {
		return nil, fmt.Errorf("pod %s started without serving request %s (its datadir serves request %q)", pod.Name, id, t.Request)
	}
	return &t, nil
}

// report prints what the restore did, as far as the API shows it.
func report(w io.Writer, pod string, res *Result) {
	t := res.Termination
	switch {
	case t == nil:
		fmt.Fprintf(w, "pod %s is Ready (uid %s) after %s; restore result not reported by the chart\n", pod, res.PodUID, res.Elapsed.Round(time.Second))
	case t.Marker == nil:
		fmt.Fprintf(w, "pod %s is Ready (uid %s) after %s: request %s %s\n", pod, res.PodUID, res.Elapsed.Round(time.Second), t.Request, t.Result)
	default:
		m := t.Marker
		last := "-"
		if !m.LastCommit.IsZero() {
			last = m.LastCommit.UTC().Format(time.RFC3339Nano)
		}
		fmt.Fprintf(w, "pod %s is Ready (uid %s) after %s: request %s %s to %s: snapshot %s + %d transactions, last committed %s, stopped at %s, timeline %s\n",
			pod, res.PodUID, res.Elapsed.Round(time.Second), t.Request, t.Result, m.Target, m.Snapshot, m.Transactions, last, m.Stop, m.Timeline)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// lastWords is s on one line, shortened to its last n bytes: the end of a
// log says why it ended.
func lastWords(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = "…" + strings.ToValidUTF8(s[len(s)-n:], "")
	}
	return s
}
