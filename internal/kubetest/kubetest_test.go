package kubetest

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// TestVersionsMatchBuildScript keeps the versions the harness looks for
// equal to the ones scripts/kube-build.sh builds.
func TestVersionsMatchBuildScript(t *testing.T) {
	b, err := os.ReadFile("../../scripts/kube-build.sh")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"KUBE_VERSION": KubeVersion, "ETCD_VERSION": EtcdVersion} {
		m := regexp.MustCompile(`(?m)^` + name + `=(\S+)$`).FindSubmatch(b)
		if m == nil || string(m[1]) != want {
			t.Errorf("scripts/kube-build.sh sets %s=%s, the harness wants %s", name, m, want)
		}
	}
}

// TestClusterPodAddresses runs the agent in a pod of the mysql-pitr
// image in a restricted namespace. It streams from a server on the host
// (pod → host), and the kubelet's readiness probe and the test reach its
// HTTP port at the pod's address (host → pod).
func TestClusterPodAddresses(t *testing.T) {
	c := Get(t)
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	c.ExposeHostPort(t, src.Port())
	ns := c.Namespace(t, "smoke")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "agent", Image: c.AgentImage(t), ImagePullPolicy: corev1.PullNever,
				Args:  []string{"agent", "--storage=file:///tmp/archive", "--listen=:9097", "--server-id=28777"},
				Env:   []corev1.EnvVar{{Name: "MYSQL_PITR_DSN", Value: src.PitrDSN()}},
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9097}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("metrics")}}},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
	if _, err := c.Client().CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		p, err := c.Client().CoreV1().Pods(ns).Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ip = p.Status.PodIP
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod not Ready: %v", err)
	}
	if !strings.HasPrefix(ip, "127.77.") {
		t.Errorf("pod IP %s, want one of 127.77.0.0/16", ip)
	}
	resp, err := http.Get("http://" + ip + ":9097/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"connected": true`) {
		t.Errorf("GET /status: %s %s", resp.Status, body)
	}
}
