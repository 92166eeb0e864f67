// Package chart_test tests the Helm chart in charts/mysql-pitr and the
// container images' build files: helm lint, helm template over a matrix of
// values decoded strictly into Kubernetes API types, the values schema's
// refusals, the documentation of every value, the static binary and the
// Dockerfiles' final stages; and the rendered pod run as local processes
// (the sidecar, the restore init containers, the restore Job) against a
// real MariaDB and S3 server. It lives outside the chart directory so that
// helm package never sees Go files.
package chart_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// Paths relative to this package's directory, where go test runs.
const (
	chartDir = "../mysql-pitr"
	repoRoot = "../.."
)

// kubeVersion is the cluster version the chart is rendered for. A go-installed
// helm defaults to v1.20, below the chart's kubeVersion.
const kubeVersion = "1.33.0"

// helmInstall is the hint a missing helm prints.
const helmInstall = "scripts/setup.sh (go install helm.sh/helm/v3/cmd/helm@v3.22.0)"

// helmBinary returns helm's path; a missing helm skips the test, or fails it
// under CI=true.
func helmBinary(t *testing.T) string {
	t.Helper()
	return testbed.Binary(t, "helm", helmInstall)
}

// baseValues are the values every render needs: the required Secrets and
// storage URL, and S3 credentials from a Secret.
func baseValues() map[string]any {
	return map[string]any{
		"storage": map[string]any{
			"url":         "s3://pitr-archive/prod",
			"region":      "eu-west-1",
			"credentials": map[string]any{"secretName": "pitr-s3"},
		},
		"server": map[string]any{"rootPassword": map[string]any{"secretName": "db-root"}},
		"mysql":  map[string]any{"pitrUser": map[string]any{"secretName": "db-pitr"}},
	}
}

// merge returns base with over merged into it, recursively for maps.
func merge(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if om, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// writeValues writes values to a file for helm's -f.
func writeValues(t *testing.T, values map[string]any) string {
	t.Helper()
	b, err := yaml.Marshal(values)
	if err != nil {
		t.Fatalf("marshal values: %v", err)
	}
	// Not t.TempDir: its path carries the test name, and helm splits -f
	// arguments at commas.
	dir, err := os.MkdirTemp("", "chart-values-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// helm runs helm with args and returns its combined output.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), helmBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// No user configuration or repositories leak into the test.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	err := cmd.Run()
	return out.String(), err
}

// render runs helm template with values and returns the rendered manifests.
func render(t *testing.T, values map[string]any) (string, error) {
	t.Helper()
	return helm(t, "template", "db", chartDir, "--namespace", "databases", "--kube-version", kubeVersion,
		"-f", writeValues(t, values))
}

func TestLint(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, "lint", "--strict", chartDir, "--kube-version", kubeVersion,
				"-f", writeValues(t, merge(baseValues(), tc.values)))
			if err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") || !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint is not clean:\n%s", out)
			}
		})
	}
}

func TestSchemaRefusesBadValues(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		// want are substrings of helm's error: the field's path and why.
		want []string
	}{
		{"unknown snapshot method", map[string]any{"backup": map[string]any{"method": "xtrabackup"}},
			[]string{"/backup/method", "logical", "physical"}},
		{"negative keepSnapshots", map[string]any{"backup": map[string]any{"keepSnapshots": -1}},
			[]string{"/backup/keepSnapshots", "minimum"}},
		{"missing storage url", map[string]any{"storage": map[string]any{"url": ""}},
			[]string{"storage.url is required", "e.g. --set storage.url=s3://my-bucket/mysql"}},
		{"storage url with options", map[string]any{"storage": map[string]any{"url": "s3://pitr-archive/p?region=x"}},
			[]string{`storage.url "s3://pitr-archive/p?region=x" is not s3://BUCKET/PREFIX`, "storage.region"}},
		{"unknown flavor", map[string]any{"server": map[string]any{"flavor": "postgres"}},
			[]string{"/server/flavor", "mariadb"}},
		{"unknown mode", map[string]any{"mode": "operator"},
			[]string{"/mode", "sidecar-only"}},
		{"bad keepWithin", map[string]any{"backup": map[string]any{"keepWithin": "7 days"}},
			[]string{"/backup/keepWithin"}},
		{"bad flush interval", map[string]any{"binlog": map[string]any{"flushInterval": "1"}},
			[]string{"/binlog/flushInterval"}},
		{"misspelled value", map[string]any{"backup": map[string]any{"keepSnapshot": 3}},
			[]string{"keepSnapshot"}},
		{"sidecar-only without the agent's password secret", map[string]any{"mode": "sidecar-only",
			"sidecarOnly": map[string]any{"statefulSetName": "db", "podSelector": map[string]any{"app": "db"}},
			"mysql":       map[string]any{"pitrUser": map[string]any{"secretName": ""}}},
			[]string{"mysql.pitrUser.secretName is required in mode sidecar-only", "kubectl create secret generic"}},
		{"retention without schedule", map[string]any{"backup": map[string]any{"schedule": ""}},
			[]string{"backup.keepSnapshots", "backup.schedule"}},
		{"web identity without role", map[string]any{"storage": map[string]any{"credentials": map[string]any{"webIdentity": map[string]any{"enabled": true}}}},
			[]string{"storage.credentials.webIdentity.roleArn"}},
		{"sidecar-only without statefulset", map[string]any{"mode": "sidecar-only", "sidecarOnly": map[string]any{"podSelector": map[string]any{"app": "db"}}},
			[]string{"/sidecarOnly", "statefulSetName"}},
		{"sidecar-only without selector", map[string]any{"mode": "sidecar-only", "sidecarOnly": map[string]any{"statefulSetName": "db"}},
			[]string{"sidecarOnly.podSelector"}},
		{"age recipient not an age key", map[string]any{"encryption": map[string]any{"ageRecipients": []any{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}}},
			[]string{"/encryption/ageRecipients/0"}},
		{"unknown mysql tls mode", map[string]any{"mysql": map[string]any{"tls": map[string]any{"mode": "required"}}},
			[]string{"/mysql/tls/mode", "verify-full"}},
		{"drill schedule with a time zone", map[string]any{"drill": map[string]any{"schedule": "CRON_TZ=Europe/Berlin 0 3 * * *"}},
			[]string{"/drill/schedule"}},
		{"s3 CA in a Secret and a ConfigMap", map[string]any{"storage": map[string]any{"caSecret": "a", "caConfigMap": "b"}},
			[]string{"storage.caSecret", "storage.caConfigMap"}},
		{"sidecar-only drills without pods", map[string]any{"mode": "sidecar-only",
			"sidecarOnly": map[string]any{"statefulSetName": "db", "podSelector": map[string]any{"app": "db"}}, "drill": map[string]any{"schedule": "@daily"}},
			[]string{"drill.pods"}},
		{"misspelt encryption value", map[string]any{"encryption": map[string]any{"identitySecretName": "x"}},
			[]string{"identitySecretName"}},
		{"retention CronJob without keep values", map[string]any{"backup": map[string]any{"keepSnapshots": 0},
			"retention": map[string]any{"cronJob": map[string]any{"enabled": true}}},
			[]string{"retention.cronJob.enabled", "backup.keepSnapshots"}},
		{"retention CronJob of an encrypted archive without an identity", map[string]any{
			"encryption": map[string]any{"ageRecipients": []any{ageRecipient1}},
			"retention":  map[string]any{"cronJob": map[string]any{"enabled": true}}},
			[]string{"retention.cronJob.enabled", "encryption.identitySecret"}},
		{"sidecar-only retention CronJob without pods", map[string]any{"mode": "sidecar-only",
			"sidecarOnly": map[string]any{"statefulSetName": "db", "podSelector": map[string]any{"app": "db"}},
			"retention":   map[string]any{"cronJob": map[string]any{"enabled": true}}},
			[]string{"retention.cronJob.pods"}},
		{"retention CronJob schedule with a time zone", map[string]any{"retention": map[string]any{"cronJob": map[string]any{"enabled": true, "schedule": "TZ=UTC 0 5 * * *"}}},
			[]string{"/retention/cronJob/schedule"}},
		{"misspelt retention value", map[string]any{"retention": map[string]any{"cronJob": map[string]any{"storageCredentialSecret": "x"}}},
			[]string{"storageCredentialSecret"}},
		{"retention role not an IAM role", map[string]any{"retention": map[string]any{"cronJob": map[string]any{"webIdentityRoleArn": "pruner"}}},
			[]string{"/retention/cronJob/webIdentityRoleArn"}},
		{"spool persistence not a choice", map[string]any{"agent": map[string]any{"spool": map[string]any{"persistent": "yes"}}},
			[]string{"/agent/spool/persistent", "auto"}},
		{"persistent spool named like the datadir", map[string]any{"agent": map[string]any{"spool": map[string]any{"persistent": true}},
			"persistence": map[string]any{"dataSubdir": "mysql-pitr-spool"}},
			[]string{"persistence.dataSubdir", "agent.spool.persistent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, merge(baseValues(), tc.values))
			if err == nil {
				t.Fatalf("helm template accepted the values; want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("helm's error does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}
