package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// stop stops everything and undoes the host changes; the reaper is told
// it has nothing left to do.
func (c *Cluster) stop() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if c.client != nil && c.kubeletRunning() {
		if err := c.deleteAllPods(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if c.cancel != nil {
		c.cancel()
		c.wg.Wait()
	}
	// The kubelet first, then the runtime, then the control plane.
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	if c.cni != nil {
		c.cni.close()
	}
	if c.state != nil {
		if err := c.state.undo(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.toReap != nil {
		_, _ = c.toReap.WriteString(reaperDone)
		c.toReap.Close()
		_ = c.reaper.Wait()
	}
	if err := c.checkHost(); err != nil {
		errs = append(errs, err)
	}
	if c.lock != nil {
		c.lock.Close()
	}
	c.logf("cluster stopped")
	return errors.Join(errs...)
}

// checkHost compares the host with how it was before the start: the
// kubelet's sysctls, the mounts, the cgroups, the kubelet's, containerd's
// and CNI's default paths, the iptables rules, and the processes.
func (c *Cluster) checkHost() error {
	after := takeSnapshot()
	ours := func(s string) bool {
		return strings.Contains(s, c.dir) || (c.state != nil && strings.Contains(s, c.state.Cgroup))
	}
	diffs, others := c.before.compare(after, ours)
	if procs := processesUsing(c.dir); len(procs) > 0 {
		diffs = append(diffs, "processes still running: "+strings.Join(procs, "; "))
	}
	for _, o := range others {
		c.logf("host changed meanwhile, not by the cluster: %s", o)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("the host is not as before the cluster started:\n%s", strings.Join(diffs, "\n"))
	}
	c.logf("host as before the cluster: %s; no process left", after.summary())
	return nil
}

// processesUsing lists the processes whose command line names dir.
func processesUsing(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, dir) {
			out = append(out, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	return out
}

func (c *Cluster) kubeletRunning() bool {
	for _, p := range c.procs {
		if p.name == "kubelet" {
			return !p.exited()
		}
	}
	return false
}

// deleteAllPods deletes the pods the tests left and waits until the
// kubelet stopped them.
func (c *Cluster) deleteAllPods(ctx context.Context) error {
	pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	grace := int64(5)
	for _, p := range pods.Items {
		err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return poll(wctx, 500*time.Millisecond, func() (bool, error) {
		pods, err := c.client.CoreV1().Pods("").List(wctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
}

// stop sends SIGTERM and, after grace, SIGKILL.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
