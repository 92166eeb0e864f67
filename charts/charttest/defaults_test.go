package chart_test

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestGeneratedSecrets installs without naming the password Secrets: in
// full mode the chart generates both, keeps them on uninstall, and the pods
// mount them; in sidecar-only mode the agent's account is the user's, so
// its Secret is required (TestSchemaRefusesBadValues).
func TestGeneratedSecrets(t *testing.T) {
	values := merge(baseValues(), map[string]any{
		"server": map[string]any{"rootPassword": map[string]any{"secretName": ""}},
		"mysql":  map[string]any{"pitrUser": map[string]any{"secretName": ""}},
	})
	out, err := render(t, values)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	r := decodeAll(t, out)
	want := map[string]string{"db-mysql-pitr-root": "root-password", "db-mysql-pitr-pitr": "pitr-password"}
	if len(r.secrets) != len(want) {
		t.Fatalf("%d Secrets rendered, want %d", len(r.secrets), len(want))
	}
	for _, s := range r.secrets {
		key, ok := want[s.Name]
		if !ok {
			t.Errorf("unexpected Secret %s", s.Name)
			continue
		}
		// Data holds base64 in YAML; decoding into the API type decodes it.
		if pw := string(s.Data[key]); len(pw) < 24 {
			t.Errorf("Secret %s key %s holds %q, want a random password", s.Name, key, pw)
		} else if _, err := base64.StdEncoding.DecodeString(pw); err == nil && strings.HasSuffix(pw, "=") {
			t.Errorf("Secret %s holds base64 of base64", s.Name)
		}
		if s.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("Secret %s is not kept on uninstall: the datadir keeps its password", s.Name)
		}
	}
	pod := &r.statefulSets[0].Spec.Template.Spec
	for volume, secret := range map[string]string{"root-password": "db-mysql-pitr-root", "pitr-password": "db-mysql-pitr-pitr"} {
		v := volumeOf(pod, volume)
		if v == nil || v.Secret == nil || v.Secret.SecretName != secret {
			t.Errorf("volume %s does not mount Secret %s: %+v", volume, secret, v)
		}
	}

	// With names given, nothing is generated.
	out, err = render(t, baseValues())
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	if r := decodeAll(t, out); len(r.secrets) != 0 {
		t.Errorf("%d Secrets rendered though the values name both", len(r.secrets))
	}
}

func volumeOf(pod *corev1.PodSpec, name string) *corev1.Volume {
	i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == name })
	if i < 0 {
		return nil
	}
	return &pod.Volumes[i]
}

// TestHelmTestHook checks the helm test Pod: mysql-pitr status against each
// pod's sidecar by its name in the headless Service, with the alert's lag,
// under the restricted profile, without an API token; none in sidecar-only
// mode (the chart does not know your pods' names).
func TestHelmTestHook(t *testing.T) {
	out, err := render(t, merge(baseValues(), map[string]any{"server": map[string]any{"replicas": 2}}))
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	r := decodeAll(t, out)
	if len(r.pods) != 1 {
		t.Fatalf("%d Pods rendered, want the helm test hook", len(r.pods))
	}
	p := r.pods[0]
	if p.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("Pod %s is not a helm test hook: %v", p.Name, p.Annotations)
	}
	c := p.Spec.Containers[0]
	want := []string{"status", "--max-lag=300s",
		"--url=http://db-mysql-pitr-0.db-mysql-pitr-headless.databases.svc:9097",
		"--url=http://db-mysql-pitr-1.db-mysql-pitr-headless.databases.svc:9097"}
	if !slices.Equal(c.Args, want) {
		t.Errorf("hook args %q, want %q", c.Args, want)
	}
	if c.Image != container(r.statefulSets[0].Spec.Template.Spec.Containers, "mysql-pitr").Image {
		t.Errorf("hook image %s is not the sidecar's", c.Image)
	}
	checkPodSecurity(t, &p.Spec, true)
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("hook restartPolicy %s, want Never", p.Spec.RestartPolicy)
	}
	for k := range p.Labels {
		if _, ok := r.statefulSets[0].Spec.Selector.MatchLabels[k]; ok && k != "app.kubernetes.io/instance" {
			t.Errorf("hook Pod carries selector label %s of the database pods", k)
		}
	}

	out, err = render(t, merge(baseValues(), map[string]any{"mode": "sidecar-only",
		"sidecarOnly": map[string]any{"statefulSetName": "orders-db", "podSelector": map[string]any{"app": "orders-db"}}}))
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	if r := decodeAll(t, out); len(r.pods) != 0 {
		t.Error("sidecar-only mode renders a helm test Pod")
	}
}
