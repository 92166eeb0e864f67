package chart_test

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// renderCase is one set of values and what its rendering must hold.
type renderCase struct {
	name   string
	values map[string]any
	// flavor is the server flavor the config must be written for ("" in
	// sidecar-only mode, which renders no server).
	flavor string
	// wantArgs are agent flags that must be present; noArgs flag names
	// that must be absent.
	wantArgs, noArgs []string
	wantKinds        []string // kinds that must be rendered
	noKinds          []string // kinds that must not be rendered
	// restore: the restore init containers and Job template are
	// rendered (restore.enabled, on by default).
	restore       bool
	nativeSidecar bool
	// drills are the pods whose archives a drill CronJob tests, in order
	// ("" for the one archive without storage.perPod); prunes likewise for
	// the retention CronJobs.
	drills, prunes []string
	// persistentSpool: the agent's spool is on the data volume.
	persistentSpool bool
}

func renderCases() []renderCase {
	return []renderCase{
		{
			name:   "mysql defaults",
			flavor: "mysql",
			wantArgs: []string{"--schedule=0 3 * * *", "--snapshot-method=logical", "--keep-snapshots=7",
				"--storage=s3://pitr-archive/prod/$(POD_NAME)", "--s3-region=eu-west-1", "--flush-interval=1s",
				"--password-file=/var/run/secrets/mysql-pitr/mysql/password", "--datadir=/var/lib/mysql-pvc/data"},
			noArgs:    []string{"--keep-within"},
			wantKinds: []string{"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount"},
			noKinds:   []string{"ServiceMonitor", "PrometheusRule", "Role", "RoleBinding"},
			restore:   true,
		},
		{
			name:   "mariadb with retention by age",
			flavor: "mariadb",
			values: map[string]any{
				"server":  map[string]any{"flavor": "mariadb", "image": map[string]any{"repository": "mariadb", "tag": "11.4"}},
				"backup":  map[string]any{"schedule": "@every 6h", "keepSnapshots": 0, "keepWithin": "168h", "threads": 4},
				"binlog":  map[string]any{"flushInterval": "500ms"},
				"storage": map[string]any{"endpoint": "https://minio.storage:9000", "pathStyle": true, "perPod": false},
			},
			wantArgs: []string{"--schedule=@every 6h", "--keep-within=168h", "--snapshot-threads=4", "--flush-interval=500ms",
				"--storage=s3://pitr-archive/prod", "--s3-endpoint=https://minio.storage:9000", "--s3-path-style=true"},
			noArgs:    []string{"--keep-snapshots"},
			wantKinds: []string{"StatefulSet"},
			restore:   true,
		},
		{
			name:   "physical snapshots, hard anti-affinity",
			flavor: "mariadb",
			values: map[string]any{
				"server":          map[string]any{"flavor": "mariadb", "image": map[string]any{"repository": "mariadb", "tag": "11.4"}},
				"backup":          map[string]any{"method": "physical"},
				"agent":           map[string]any{"image": map[string]any{"tag": "0.1.0-physical"}},
				"podAntiAffinity": map[string]any{"type": "hard"},
			},
			wantArgs: []string{"--snapshot-method=physical"},
			restore:  true,
		},
		{
			name:   "no schedule",
			flavor: "mysql",
			values: map[string]any{"backup": map[string]any{"schedule": "", "keepSnapshots": 0}, "restore": map[string]any{"enabled": false}},
			noArgs: []string{"--schedule", "--snapshot-method", "--keep-snapshots", "--keep-within"},
		},
		{
			name:      "service monitor and prometheus rule",
			flavor:    "mysql",
			values:    map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}}},
			wantKinds: []string{"ServiceMonitor", "PrometheusRule"},
			restore:   true,
		},
		{
			name:      "prometheus rule without service monitor",
			flavor:    "mysql",
			values:    map[string]any{"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}},
			wantKinds: []string{"PrometheusRule"},
			noKinds:   []string{"ServiceMonitor"},
			restore:   true,
		},
		{
			name:   "restore enabled with rbac, web identity",
			flavor: "mysql",
			values: map[string]any{
				"restore": map[string]any{"enabled": true, "rbac": map[string]any{"create": true}},
				"storage": map[string]any{"credentials": map[string]any{"secretName": "",
					"webIdentity": map[string]any{"enabled": true, "roleArn": "arn:aws:iam::123456789012:role/pitr"}}},
			},
			wantKinds: []string{"Role", "RoleBinding"},
			restore:   true,
		},
		{
			name:          "native sidecar",
			flavor:        "mysql",
			values:        map[string]any{"agent": map[string]any{"nativeSidecar": true}},
			nativeSidecar: true,
			restore:       true,
		},
		{
			name:   "restore, drills, retention, encryption and TLS",
			flavor: "mariadb",
			values: map[string]any{
				"server":     map[string]any{"flavor": "mariadb", "image": map[string]any{"repository": "mariadb", "tag": "11.4"}, "replicas": 2},
				"restore":    map[string]any{"enabled": true, "rbac": map[string]any{"create": true}},
				"drill":      map[string]any{"schedule": "30 4 * * 0", "resources": map[string]any{"limits": map[string]any{"memory": "2Gi"}}},
				"encryption": map[string]any{"ageRecipients": []any{ageRecipient1, ageRecipient2}, "identitySecret": "pitr-age"},
				"mysql":      map[string]any{"tls": map[string]any{"mode": "verify-ca", "caSecret": "db-ca"}},
				"storage":    map[string]any{"caSecret": "s3-ca", "caKey": "bundle.pem"},
				"backup":     map[string]any{"keepSnapshots": 14, "keepWithin": "336h"},
				"retention": map[string]any{"cronJob": map[string]any{"enabled": true, "storageCredentialsSecret": "pitr-s3-prune",
					"storageCredentialsKey": "prune.ini", "storageCredentialsProfile": "pruner"}},
			},
			wantArgs: []string{"--age-recipient=" + ageRecipient1, "--age-recipient=" + ageRecipient2, "--mysql-tls=verify-ca",
				"--mysql-ca=/var/run/secrets/mysql-pitr/mysql-ca/ca.crt", "--s3-ca-file=/var/run/secrets/mysql-pitr/s3-ca/ca.crt",
				"--schedule=0 3 * * *"},
			noArgs:          []string{"--age-identity", "--keep-snapshots", "--keep-within"},
			wantKinds:       []string{"CronJob", "Role"},
			restore:         true,
			drills:          []string{"db-mysql-pitr-0", "db-mysql-pitr-1"},
			prunes:          []string{"db-mysql-pitr-0", "db-mysql-pitr-1"},
			persistentSpool: true,
		},
		{
			name:   "retention CronJob without snapshot schedule, web identity, persistent spool without encryption",
			flavor: "mysql",
			values: map[string]any{
				"backup": map[string]any{"schedule": "", "keepSnapshots": 0, "keepWithin": "720h"},
				"storage": map[string]any{"perPod": false, "credentials": map[string]any{"secretName": "",
					"webIdentity": map[string]any{"enabled": true, "roleArn": "arn:aws:iam::123456789012:role/pitr-writer"}}},
				"retention": map[string]any{"cronJob": map[string]any{"enabled": true, "schedule": "@daily",
					"webIdentityRoleArn": "arn:aws:iam::123456789012:role/pitr-pruner", "extraArgs": []any{"--orphan-grace=2h"}}},
				"agent": map[string]any{"spool": map[string]any{"persistent": true}},
			},
			noArgs:          []string{"--schedule", "--keep-snapshots", "--keep-within", "--age-recipient"},
			wantKinds:       []string{"CronJob"},
			prunes:          []string{""},
			persistentSpool: true,
			restore:         true,
		},
		{
			name:   "encryption with the spool on an emptyDir",
			flavor: "mysql",
			values: map[string]any{
				"encryption": map[string]any{"ageRecipients": []any{ageRecipient1}},
				"agent":      map[string]any{"spool": map[string]any{"persistent": false}, "nativeSidecar": true},
			},
			wantArgs:      []string{"--age-recipient=" + ageRecipient1, "--keep-snapshots=7"},
			nativeSidecar: true,
			restore:       true,
		},
		{
			name:   "one archive, drill, S3 CA from a ConfigMap",
			flavor: "mysql",
			values: map[string]any{
				"storage": map[string]any{"perPod": false, "caConfigMap": "s3-ca"},
				"drill":   map[string]any{"schedule": "@weekly", "extraArgs": []any{"--keep-scratch"}},
			},
			wantArgs: []string{"--s3-ca-file=/var/run/secrets/mysql-pitr/s3-ca/ca.crt", "--storage=s3://pitr-archive/prod"},
			noArgs:   []string{"--age-recipient", "--mysql-ca", "--mysql-tls"},
			drills:   []string{""},
			restore:  true,
		},
		{
			name: "sidecar-only with drills and encryption",
			values: map[string]any{
				"mode":        "sidecar-only",
				"sidecarOnly": map[string]any{"statefulSetName": "orders-db", "podSelector": map[string]any{"app": "orders-db"}, "dataVolumeName": "datadir"},
				"server":      map[string]any{"rootPassword": map[string]any{"secretName": ""}},
				"restore":     map[string]any{"enabled": true, "rbac": map[string]any{"create": true}},
				"drill":       map[string]any{"schedule": "@daily", "pods": []any{"orders-db-0"}},
				"encryption":  map[string]any{"ageRecipients": []any{ageRecipient1}, "identitySecret": "pitr-age", "identitySecretKey": "keys.txt"},
				"retention":   map[string]any{"cronJob": map[string]any{"enabled": true, "pods": []any{"orders-db-0", "orders-db-1"}}},
			},
			wantArgs:        []string{"--age-recipient=" + ageRecipient1},
			noArgs:          []string{"--keep-snapshots"},
			wantKinds:       []string{"CronJob", "Role"},
			noKinds:         []string{"StatefulSet"},
			restore:         true,
			drills:          []string{"orders-db-0"},
			prunes:          []string{"orders-db-0", "orders-db-1"},
			persistentSpool: true,
		},
		{
			name: "sidecar-only",
			values: map[string]any{
				"mode":        "sidecar-only",
				"sidecarOnly": map[string]any{"statefulSetName": "orders-db", "podSelector": map[string]any{"app": "orders-db"}, "dataVolumeName": "datadir"},
				"server":      map[string]any{"rootPassword": map[string]any{"secretName": ""}},
				"metrics":     map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
				"restore":     map[string]any{"enabled": false},
			},
			wantArgs:  []string{"--schedule=0 3 * * *", "--keep-snapshots=7"},
			wantKinds: []string{"ConfigMap", "Service", "ServiceMonitor"},
			noKinds:   []string{"StatefulSet", "PodDisruptionBudget", "ServiceAccount"},
		},
		{
			name: "sidecar-only with restore",
			values: map[string]any{
				"mode":        "sidecar-only",
				"sidecarOnly": map[string]any{"statefulSetName": "orders-db", "podSelector": map[string]any{"app": "orders-db"}},
				"restore":     map[string]any{"enabled": true},
			},
			noKinds: []string{"StatefulSet"},
			restore: true,
		},
	}
}

// Public keys in age's format for the encryption values.
const (
	ageRecipient1 = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	ageRecipient2 = "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg"
)

// rendered is what one helm template run produced, decoded.
type rendered struct {
	statefulSets []*appsv1.StatefulSet
	configMaps   map[string]*corev1.ConfigMap
	services     []*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
	roles        []*rbacv1.Role
	cronJobs     []*batchv1.CronJob
	kinds        map[string]int
	monitors     []*serviceMonitor
	rules        []*prometheusRule
	pods         []*corev1.Pod    // helm test hooks
	secrets      []*corev1.Secret // generated passwords
}

// decodeStrict decodes one YAML document into v, failing on unknown fields.
func decodeStrict(doc []byte, v any) error {
	return yaml.UnmarshalStrict(doc, v)
}

// decodeAll splits helm's output into documents and decodes each strictly
// into its Kubernetes API type; an unknown kind or field fails the test.
func decodeAll(t *testing.T, out string) *rendered {
	t.Helper()
	r := &rendered{configMaps: map[string]*corev1.ConfigMap{}, kinds: map[string]int{}}
	for i, doc := range strings.Split(out, "\n---") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		if tm.Kind == "" {
			if strings.TrimSpace(stripComments(doc)) != "" {
				t.Fatalf("document %d has no kind:\n%s", i, doc)
			}
			continue
		}
		var obj any
		switch tm.Kind {
		case "StatefulSet":
			s := &appsv1.StatefulSet{}
			r.statefulSets, obj = append(r.statefulSets, s), s
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Service":
			s := &corev1.Service{}
			r.services, obj = append(r.services, s), s
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			r.pdbs, obj = append(r.pdbs, p), p
		case "Role":
			role := &rbacv1.Role{}
			r.roles, obj = append(r.roles, role), role
		case "CronJob":
			c := &batchv1.CronJob{}
			r.cronJobs, obj = append(r.cronJobs, c), c
		case "RoleBinding":
			obj = &rbacv1.RoleBinding{}
		case "Pod":
			p := &corev1.Pod{}
			r.pods, obj = append(r.pods, p), p
		case "Secret":
			sec := &corev1.Secret{}
			r.secrets, obj = append(r.secrets, sec), sec
		case "ServiceMonitor":
			m := &serviceMonitor{}
			r.monitors, obj = append(r.monitors, m), m
		case "PrometheusRule":
			p := &prometheusRule{}
			r.rules, obj = append(r.rules, p), p
		default:
			t.Fatalf("document %d: unexpected kind %s", i, tm.Kind)
		}
		if err := decodeStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s in document %d does not decode strictly: %v\n%s", tm.Kind, i, err, doc)
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			r.configMaps[cm.Name] = cm
		}
		r.kinds[tm.Kind]++
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestTemplate(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, merge(baseValues(), tc.values))
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			r := decodeAll(t, out)
			for _, k := range tc.wantKinds {
				if r.kinds[k] == 0 {
					t.Errorf("no %s rendered", k)
				}
			}
			for _, k := range tc.noKinds {
				if r.kinds[k] != 0 {
					t.Errorf("%d %s rendered, want none", r.kinds[k], k)
				}
			}

			var pod *corev1.PodSpec
			if tc.flavor == "" {
				pod = sidecarPatch(t, r)
			} else {
				if len(r.statefulSets) != 1 {
					t.Fatalf("got %d StatefulSets, want 1", len(r.statefulSets))
				}
				sts := r.statefulSets[0]
				pod = &sts.Spec.Template.Spec
				checkServer(t, r, sts, tc.flavor)
			}
			checkPodSecurity(t, pod, tc.flavor != "")
			agent := checkAgent(t, pod, tc)
			checkNoSecretsInEnv(t, pod)
			checkRestore(t, r, pod, tc.restore)
			checkMonitoring(t, r)
			values := merge(baseValues(), tc.values)
			job := checkRestoreJob(t, r, pod, tc.restore)
			drills := checkDrills(t, r, values, tc.drills)
			prunes := checkPrunes(t, r, values, agent, tc.prunes)
			checkSpool(t, pod, agent, tc.persistentSpool, tc.flavor != "")
			checkRole(t, r)
			checkEncryptionAndTLS(t, values, pod, job, drills, prunes)
			if tc.values["backup"] != nil && tc.values["backup"].(map[string]any)["method"] == "physical" {
				if got := *agent.SecurityContext.RunAsUser; got != 999 {
					t.Errorf("physical snapshots: agent runs as uid %d, want the server's 999 (it reads the datadir)", got)
				}
			}
		})
	}
}

// sidecarPatch decodes the sidecar-only patch strictly as a StatefulSet.
func sidecarPatch(t *testing.T, r *rendered) *corev1.PodSpec {
	t.Helper()
	cm, ok := r.configMaps["db-mysql-pitr-sidecar-patch"]
	if !ok {
		t.Fatalf("sidecar-only: no db-mysql-pitr-sidecar-patch ConfigMap (have %v)", keys(r.configMaps))
	}
	var sts appsv1.StatefulSet
	if err := decodeStrict([]byte(cm.Data["patch.yaml"]), &sts); err != nil {
		t.Fatalf("sidecar patch does not decode strictly as a StatefulSet: %v\n%s", err, cm.Data["patch.yaml"])
	}
	for _, c := range sts.Spec.Template.Spec.Containers {
		if c.Name != "mysql-pitr" {
			t.Errorf("sidecar patch adds container %s; it must add only the agent", c.Name)
		}
	}
	return &sts.Spec.Template.Spec
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// checkServer checks the server side: my.cnf has what PITR needs for the
// flavor, the datadir is a subdirectory of the volume, and the volume claim
// and Services exist.
func checkServer(t *testing.T, r *rendered, sts *appsv1.StatefulSet, flavor string) {
	t.Helper()
	cm, ok := r.configMaps["db-mysql-pitr-config"]
	if !ok {
		t.Fatalf("no db-mysql-pitr-config ConfigMap (have %v)", keys(r.configMaps))
	}
	cnf := cm.Data["my.cnf"]
	want := []string{"log_bin = binlog", "binlog_format = ROW", "sync_binlog = 1", "binlog_expire_logs_seconds = 604800"}
	if flavor == "mariadb" {
		want = append(want, "gtid_strict_mode = ON")
	} else {
		want = append(want, "gtid_mode = ON", "enforce_gtid_consistency = ON")
	}
	for _, w := range want {
		if !strings.Contains(cnf, w) {
			t.Errorf("my.cnf lacks %q:\n%s", w, cnf)
		}
	}
	if strings.Contains(cnf, "server_id") || strings.Contains(cnf, "server-id") {
		t.Errorf("my.cnf sets server_id; it must come from the pod ordinal")
	}
	datadir := regexp.MustCompile(`(?m)^\s*datadir\s*=\s*(\S+)`).FindStringSubmatch(cnf)
	if datadir == nil {
		t.Fatalf("my.cnf sets no datadir:\n%s", cnf)
	}
	server := container(sts.Spec.Template.Spec.Containers, "server")
	if server == nil {
		t.Fatal("no server container")
	}
	mount := mountOf(server, "data")
	if mount == "" {
		t.Fatal("server container does not mount the data volume")
	}
	if path.Dir(path.Clean(datadir[1])) != path.Clean(mount) {
		t.Errorf("datadir %s is not a direct subdirectory of the volume mount %s: a restore could not move it aside on the same volume", datadir[1], mount)
	}
	checkInitScript(t, &sts.Spec.Template.Spec, server)
	wantBinary := map[string]string{"mysql": "mysqld", "mariadb": "mariadbd"}[flavor]
	if got := envValue(server, "SERVER_BINARY"); got != wantBinary {
		t.Errorf("SERVER_BINARY = %q, want %q", got, wantBinary)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("want one volumeClaimTemplate named data, got %d", len(sts.Spec.VolumeClaimTemplates))
	}
	var headless bool
	for _, s := range r.services {
		if s.Name == sts.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone {
			headless = true
		}
	}
	if !headless {
		t.Errorf("no headless Service named %s", sts.Spec.ServiceName)
	}
}

// checkInitScript checks that the agent account's init script reaches the
// image's entrypoint without an execute bit: the official images source a
// *.sh of /docker-entrypoint-initdb.d that is not executable, with
// docker_process_sql defined, and run one that is in a shell of its own,
// where docker_process_sql is not defined and the script fails.
func checkInitScript(t *testing.T, pod *corev1.PodSpec, server *corev1.Container) {
	t.Helper()
	const path = "/docker-entrypoint-initdb.d/10-mysql-pitr-user.sh"
	i := slices.IndexFunc(server.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path })
	if i < 0 {
		t.Fatalf("the server container mounts nothing at %s", path)
	}
	m := server.VolumeMounts[i]
	v := volume(pod, m.Name)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("%s is not from a ConfigMap volume", path)
	}
	mode := v.ConfigMap.DefaultMode
	for _, it := range v.ConfigMap.Items {
		if it.Path == m.SubPath && it.Mode != nil {
			mode = it.Mode
		}
	}
	if mode == nil || *mode&0o111 != 0 {
		t.Errorf("%s is mounted executable (mode %o): the images' entrypoint would run it without docker_process_sql", path, ptrValue(mode))
	}
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0o644
	}
	return *p
}

// checkPodSecurity checks the restricted profile: on every container of the
// patch or pod, and the pod's own settings in full mode.
func checkPodSecurity(t *testing.T, pod *corev1.PodSpec, full bool) {
	t.Helper()
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false")
	}
	podSeccomp := full && pod.SecurityContext != nil && pod.SecurityContext.SeccompProfile != nil &&
		pod.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	if full && (pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot) {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		var problems []string
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			problems = append(problems, "runAsNonRoot is not true")
		}
		if sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			problems = append(problems, "runAsUser is unset or 0")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			problems = append(problems, "allowPrivilegeEscalation is not false")
		}
		if sc.Privileged != nil && *sc.Privileged {
			problems = append(problems, "privileged")
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
			problems = append(problems, "capabilities are not drop [ALL] with nothing added")
		}
		if !podSeccomp && (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			problems = append(problems, "seccompProfile is not RuntimeDefault")
		}
		// The agent and the init containers always get a read-only root; the
		// server's is a value (true by default).
		if c.Name != "server" && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem) {
			problems = append(problems, "readOnlyRootFilesystem is not true")
		}
		for _, p := range problems {
			t.Errorf("container %s: %s", c.Name, p)
		}
	}
}

// checkAgent checks the sidecar's probes and its flags against the case and
// returns it.
func checkAgent(t *testing.T, pod *corev1.PodSpec, tc renderCase) *corev1.Container {
	t.Helper()
	agent := container(pod.Containers, "mysql-pitr")
	if native := container(pod.InitContainers, "mysql-pitr"); native != nil {
		if agent != nil {
			t.Fatal("the agent is both a container and an init container")
		}
		if native.RestartPolicy == nil || *native.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Error("the agent as an init container lacks restartPolicy Always: it would block the server")
		}
		agent = native
	}
	if agent == nil {
		t.Fatal("no mysql-pitr container")
	}
	if native := container(pod.InitContainers, "mysql-pitr") != nil; native != tc.nativeSidecar {
		t.Errorf("agent is a native sidecar: %v, want %v", native, tc.nativeSidecar)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", agent.ReadinessProbe, "/readyz"},
		{"livenessProbe", agent.LivenessProbe, "/healthz"},
		{"startupProbe", agent.StartupProbe, "/healthz"},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("agent %s is not an HTTP probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "metrics" {
			t.Errorf("agent %s = %s on port %s, want %s on metrics", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	if len(agent.Args) == 0 || agent.Args[0] != "agent" {
		t.Fatalf("agent args %q do not start with the agent subcommand", agent.Args)
	}
	for _, w := range tc.wantArgs {
		if !slices.Contains(agent.Args, w) {
			t.Errorf("agent args lack %q: %q", w, agent.Args)
		}
	}
	for _, n := range tc.noArgs {
		for _, a := range agent.Args {
			if a == n || strings.HasPrefix(a, n+"=") {
				t.Errorf("agent args have %q, want no %s", a, n)
			}
		}
	}
	if !slices.Contains(agent.Args, "--agent-id=$(POD_NAME)") || envValue(agent, "POD_NAME") != "" || !hasFieldRef(agent, "POD_NAME", "metadata.name") {
		t.Errorf("agent id is not the pod name from the downward API")
	}
	// The password file the agent reads is on a mounted Secret.
	var pwFile string
	for _, a := range agent.Args {
		if f, ok := strings.CutPrefix(a, "--password-file="); ok {
			pwFile = f
		}
	}
	if pwFile == "" || !onSecretVolume(pod, agent, pwFile) {
		t.Errorf("agent --password-file %q is not on a mounted Secret", pwFile)
	}
	if f := envValue(agent, "AWS_SHARED_CREDENTIALS_FILE"); f != "" && !onSecretVolume(pod, agent, f) {
		t.Errorf("AWS_SHARED_CREDENTIALS_FILE %s is not on a mounted Secret", f)
	}
	return agent
}

// spoolSubPath is the persistent spool's directory on the data volume.
const spoolSubPath = "mysql-pitr-spool"

// checkSpool checks where the agent's --spool-dir is: on the data volume
// (the one holding the datadir) at spoolSubPath, beside the datadir and
// writable, or on an emptyDir with a sizeLimit. With the spool on the volume
// in full mode, the pod's fsGroup is what lets the agent (another uid than
// the server's) write there: the kubelet creates a subPath directory with
// the mode of the volume's root, which fsGroup makes group-writable.
func checkSpool(t *testing.T, pod *corev1.PodSpec, agent *corev1.Container, persistent, full bool) {
	t.Helper()
	dir := argValue(agent.Args, "--spool-dir")
	var m *corev1.VolumeMount
	for i := range agent.VolumeMounts {
		if agent.VolumeMounts[i].MountPath == dir {
			m = &agent.VolumeMounts[i]
		}
	}
	if m == nil {
		t.Fatalf("agent --spool-dir=%s is not a mount of its own", dir)
	}
	datadir := argValue(agent.Args, "--datadir")
	dataVolume := volumeAt(agent, datadir)
	if !persistent {
		if v := volume(pod, m.Name); v == nil || v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || m.SubPath != "" {
			t.Errorf("agent spool is on volume %s (subPath %q), want an emptyDir with a sizeLimit", m.Name, m.SubPath)
		}
		return
	}
	if m.Name != dataVolume || m.SubPath != spoolSubPath || m.ReadOnly {
		t.Errorf("agent spool is on volume %s subPath %q (read-only %v), want the datadir's volume %s at subPath %s, writable",
			m.Name, m.SubPath, m.ReadOnly, dataVolume, spoolSubPath)
	}
	// Beside the datadir, not in it: the server and a restore own the datadir.
	volumeMount := mountOf(agent, dataVolume)
	if rel := strings.TrimPrefix(datadir, volumeMount+"/"); rel == spoolSubPath || strings.HasPrefix(spoolSubPath, rel+"/") {
		t.Errorf("the spool %s/%s is in the datadir %s", volumeMount, spoolSubPath, datadir)
	}
	if volume(pod, "pitr-spool") != nil {
		t.Error("the spool's emptyDir is rendered although the spool is on the data volume")
	}
	if full && (pod.SecurityContext == nil || pod.SecurityContext.FSGroup == nil) {
		t.Error("no pod fsGroup: the agent could not write its spool on the data volume")
	}
}

// secretish matches environment variable names that would carry secrets.
var secretish = regexp.MustCompile(`PASSWORD|SECRET|ACCESS_KEY|TOKEN|CREDENTIALS|IDENTITY`)

// checkNoSecretsInEnv checks that no container takes a Secret through its
// environment: secrets are mounted files, and variables with secret-like
// names hold only the path of a file on a mounted Secret (or projected
// token) volume.
func checkNoSecretsInEnv(t *testing.T, pod *corev1.PodSpec) {
	t.Helper()
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				t.Errorf("container %s takes its environment from Secret %s", c.Name, e.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("container %s: %s comes from Secret %s", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
			if secretish.MatchString(e.Name) && !onSecretVolume(pod, &c, e.Value) {
				t.Errorf("container %s: %s=%q looks like a secret in the environment; want the path of a file on a mounted Secret", c.Name, e.Name, e.Value)
			}
		}
		for _, a := range append(append([]string{}, c.Command...), c.Args...) {
			if strings.HasPrefix(a, "--password=") || strings.Contains(strings.ToLower(a), "secret_access_key") {
				t.Errorf("container %s has a secret in its command line: %q", c.Name, a)
			}
		}
	}
}

// checkRestore checks the restore init containers and their ConfigMap.
func checkRestore(t *testing.T, r *rendered, pod *corev1.PodSpec, enabled bool) {
	t.Helper()
	copyBin, restore := container(pod.InitContainers, "pitr-copy-binary"), container(pod.InitContainers, "pitr-restore")
	if !enabled {
		if copyBin != nil || restore != nil {
			t.Error("restore init containers rendered with restore.enabled=false")
		}
		return
	}
	if copyBin == nil || restore == nil {
		t.Fatal("restore.enabled: missing the pitr-copy-binary or pitr-restore init container")
	}
	if i, j := slices.IndexFunc(pod.InitContainers, func(c corev1.Container) bool { return c.Name == "pitr-copy-binary" }),
		slices.IndexFunc(pod.InitContainers, func(c corev1.Container) bool { return c.Name == "pitr-restore" }); i > j {
		t.Error("pitr-restore runs before pitr-copy-binary")
	}
	if native := slices.IndexFunc(pod.InitContainers, func(c corev1.Container) bool { return c.Name == "mysql-pitr" }); native >= 0 && native < 2 {
		t.Error("the native agent sidecar starts before the restore")
	}
	cm, ok := r.configMaps["db-restore-requests"]
	if !ok {
		t.Fatalf("no db-restore-requests ConfigMap (have %v)", keys(r.configMaps))
	}
	if len(cm.Data) != 0 {
		t.Errorf("restore-requests ConfigMap renders data %v; helm upgrade would reset pending requests", cm.Data)
	}
	var mounted bool
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == "db-restore-requests" && mountOf(restore, v.Name) != "" {
			mounted = true
		}
	}
	if !mounted {
		t.Error("pitr-restore does not mount the restore-requests ConfigMap")
	}
	if got := envValue(restore, "PITR_DATADIR"); path.Dir(got) != envValue(restore, "PITR_VOLUME") {
		t.Errorf("restore datadir %s is not a subdirectory of the volume %s", got, envValue(restore, "PITR_VOLUME"))
	}
	if envValue(restore, "MYSQL_PITR_STORAGE") == "" {
		t.Error("pitr-restore has no MYSQL_PITR_STORAGE")
	}
	scripts := r.configMaps["db-mysql-pitr-scripts"]
	if scripts == nil || !strings.Contains(scripts.Data["restore.sh"], "--force") || !strings.Contains(scripts.Data["restore.sh"], "restore-in-progress") {
		t.Error("restore.sh is missing, or does not restore with --force behind restore-in-progress")
	}
}

// checkMonitoring checks the ServiceMonitor and the PrometheusRule when rendered.
func checkMonitoring(t *testing.T, r *rendered) {
	t.Helper()
	for _, m := range r.monitors {
		if len(m.Spec.Endpoints) != 1 || m.Spec.Endpoints[0].Port != "metrics" || m.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v, want port metrics path /metrics", m.Spec.Endpoints)
		}
		var found bool
		for _, s := range r.services {
			if matches(m.Spec.Selector.MatchLabels, s.Labels) && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" }) {
				found = true
			}
		}
		if !found {
			t.Errorf("ServiceMonitor selects no Service with a metrics port (selector %v)", m.Spec.Selector.MatchLabels)
		}
	}
	for _, p := range r.rules {
		var exprs strings.Builder
		for _, g := range p.Spec.Groups {
			for _, rule := range g.Rules {
				fmt.Fprintln(&exprs, rule.Expr)
				if rule.Alert == "" || rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
					t.Errorf("rule %+v lacks an alert name, severity or summary", rule)
				}
			}
		}
		for _, metric := range []string{"mysqlpitr_binlog_archive_lag_seconds", "mysqlpitr_last_snapshot_success_timestamp_seconds", "increase(mysqlpitr_binlog_gaps_total"} {
			if !strings.Contains(exprs.String(), metric) {
				t.Errorf("PrometheusRule has no alert on %s:\n%s", metric, exprs.String())
			}
		}
	}
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func mountOf(c *corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume && m.SubPath == "" {
			return m.MountPath
		}
	}
	return ""
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func hasFieldRef(c *corev1.Container, name, field string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field {
			return true
		}
	}
	return false
}

// onSecretVolume reports whether file lies under a mount, in c, of a Secret
// volume (or a projected one, for service account tokens) of pod.
func onSecretVolume(pod *corev1.PodSpec, c *corev1.Container, file string) bool {
	for _, v := range pod.Volumes {
		if v.Secret == nil && v.Projected == nil {
			continue
		}
		if m := mountOf(c, v.Name); m != "" && strings.HasPrefix(file, m+"/") {
			return true
		}
	}
	return false
}

// serviceMonitor is the part of prometheus-operator's monitoring.coreos.com/v1
// ServiceMonitor the chart uses, with the operator's field names, so that a
// misspelt field fails strict decoding.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// prometheusRule is the part of prometheus-operator's monitoring.coreos.com/v1
// PrometheusRule the chart uses.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// TestDecodeStrict checks that the decoder the other tests rely on refuses
// what a lenient one would drop silently.
func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name, doc string
		wantErr   bool
	}{
		{"known fields", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n", false},
		{"unknown top-level field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndatas:\n  k: v\n", true},
		{"unknown nested field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  label:\n    x: y\n", true},
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeStrict([]byte(tc.doc), &corev1.ConfigMap{})
			if got := err != nil; got != tc.wantErr {
				t.Errorf("decodeStrict error = %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}
