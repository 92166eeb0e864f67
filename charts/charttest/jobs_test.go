package chart_test

import (
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mysql-pitr/mysql-pitr/restore/kube"
)

// value returns the string at a dotted path of values ("" if absent).
func value(values map[string]any, key string) string {
	var cur any = values
	for _, k := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[k]
	}
	s, _ := cur.(string)
	return s
}

// checkRestoreJob checks the restore Job template that kubectl mysql-pitr restore
// --to-new-pvc fills in: restore/kube parses it, the Job it makes restores
// from the same archive with the same settings as the pod's restore init
// container, into the pod's data volume layout, under the restricted
// profile, and no Service selects its pod. It returns the Job's pod.
func checkRestoreJob(t *testing.T, r *rendered, pod *corev1.PodSpec, enabled bool) *corev1.PodSpec {
	t.Helper()
	cm, ok := r.configMaps["db-restore-job"]
	if !enabled {
		if ok {
			t.Error("restore Job template rendered with restore.enabled=false")
		}
		return nil
	}
	if !ok {
		t.Fatalf("restore.enabled: no db-restore-job ConfigMap (have %v)", keys(r.configMaps))
	}
	if got := kube.JobTemplateConfigMap("db"); got != cm.Name {
		t.Errorf("restore/kube looks for the template in %s, the chart renders %s", got, cm.Name)
	}
	tmpl, err := kube.ParseJobTemplate(cm.Data[kube.JobTemplateKey])
	if err != nil {
		t.Fatalf("restore/kube cannot use the chart's Job template: %v\n%s", err, cm.Data[kube.JobTemplateKey])
	}
	inPod := container(pod.InitContainers, "pitr-restore")
	if vol := volumeAt(inPod, envValue(inPod, "PITR_VOLUME")); vol != tmpl.DataVolume {
		t.Errorf("the Job's PVC volume is %q, the pod's data volume %q: kubectl mysql-pitr restore would clone the wrong claim", tmpl.DataVolume, vol)
	}
	job := tmpl.Job("pitr-restore-x", "databases", "x", "db-mysql-pitr-0", "2026-11-27T10:41:07Z", "req-1")
	spec := &job.Spec.Template.Spec
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit != 0 || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Error("the restore Job retries: a second attempt would find the PVC half-filled")
	}
	c := container(spec.Containers, "pitr-restore")
	if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Error("restore Job container: terminationMessagePolicy is not FallbackToLogsOnError; a failure would report no log")
	}
	if envValue(c, "PITR_TERMINATION_LOG") != c.TerminationMessagePath {
		t.Errorf("restore-job.sh reports to %q, the container's terminationMessagePath is %q", envValue(c, "PITR_TERMINATION_LOG"), c.TerminationMessagePath)
	}
	if got, want := tmpl.Storage("db-mysql-pitr-0"), strings.ReplaceAll(envValue(inPod, "MYSQL_PITR_STORAGE"), "$(POD_NAME)", "db-mysql-pitr-0"); got != want {
		t.Errorf("the Job restores from %s, the pod's init container from %s", got, want)
	}
	// Every storage, AWS, age and restore setting is the pod's.
	for _, e := range inPod.Env {
		switch e.Name {
		case "POD_NAME", "PITR_REQUESTS_DIR", "PITR_VOLUME":
			continue
		}
		if i := slices.IndexFunc(c.Env, func(j corev1.EnvVar) bool { return j.Name == e.Name }); i < 0 || !reflect.DeepEqual(c.Env[i], e) {
			t.Errorf("restore Job env %s differs from the pod's restore init container (%+v)", e.Name, e)
		}
	}
	if !strings.HasPrefix(envValue(c, "PITR_DATADIR"), mountOf(c, tmpl.DataVolume)+"/") {
		t.Errorf("restore Job datadir %s is not on the new PVC mounted at %s", envValue(c, "PITR_DATADIR"), mountOf(c, tmpl.DataVolume))
	}
	if got := tmpl.DatadirOnVolume(); got != "data" {
		t.Errorf("datadir on the new PVC = %q, want data", got)
	}
	scripts := scriptsOf(t, r, spec, c)
	if !strings.Contains(scripts["restore-job.sh"], `"$PITR_BINARY" "$@"`) {
		t.Error("restore-job.sh is missing from the scripts the Job mounts")
	}
	checkJobPod(t, r, spec, job.Spec.Template.Labels, "restore Job")
	return spec
}

// checkDrills checks one drill CronJob per pod in want: mysql-pitr drill
// from the copied binary in the server image, on that pod's archive, with a
// scratch emptyDir, never retried, never two at once.
func checkDrills(t *testing.T, r *rendered, values map[string]any, want []string) []*corev1.PodSpec {
	t.Helper()
	cronJobs := cronJobsOf(r, "drill")
	if len(cronJobs) != len(want) {
		t.Fatalf("%d drill CronJobs, want %d", len(cronJobs), len(want))
	}
	var specs []*corev1.PodSpec
	for i, cj := range cronJobs {
		if cj.Spec.Schedule == "" || cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != "Etc/UTC" || cj.Spec.ConcurrencyPolicy != "Forbid" {
			t.Errorf("CronJob %s: schedule %q, time zone %v, concurrency %s; want a schedule in UTC, Forbid", cj.Name, cj.Spec.Schedule, cj.Spec.TimeZone, cj.Spec.ConcurrencyPolicy)
		}
		if l := len(cj.Name); l > 52 {
			t.Errorf("CronJob name %s is %d characters; Kubernetes allows 52", cj.Name, l)
		}
		jt := cj.Spec.JobTemplate.Spec
		if jt.BackoffLimit == nil || *jt.BackoffLimit != 0 {
			t.Errorf("CronJob %s retries a failed drill: a failure must stay visible", cj.Name)
		}
		spec := &jt.Template.Spec
		copyBin, drill := container(spec.InitContainers, "pitr-copy-binary"), container(spec.Containers, "pitr-drill")
		if copyBin == nil || drill == nil {
			t.Fatalf("CronJob %s: want init container pitr-copy-binary and container pitr-drill", cj.Name)
		}
		if strings.Contains(drill.Image, "mysql-pitr") || drill.Image != serverImage(values) {
			t.Errorf("drill runs in image %s; want the server image (it needs the server's binaries)", drill.Image)
		}
		if len(drill.Command) != 1 || path.Dir(drill.Command[0]) != mountOf(copyBin, "pitr-bin") || mountOf(drill, "pitr-bin") != mountOf(copyBin, "pitr-bin") {
			t.Errorf("drill command %q is not the binary pitr-copy-binary copied", drill.Command)
		}
		if len(drill.Args) == 0 || drill.Args[0] != "drill" {
			t.Fatalf("drill args %q do not start with drill", drill.Args)
		}
		storage := argValue(drill.Args, "--storage")
		if pod := want[i]; pod != "" {
			if !strings.HasSuffix(storage, "/$(POD_NAME)") || envValue(drill, "POD_NAME") != pod {
				t.Errorf("drill %d: --storage=%s with POD_NAME=%q, want the archive of %s", i, storage, envValue(drill, "POD_NAME"), pod)
			}
		} else if storage != "s3://pitr-archive/prod" {
			t.Errorf("drill --storage=%s, want the one archive s3://pitr-archive/prod", storage)
		}
		scratch := argValue(drill.Args, "--scratch")
		if v := volumeAt(drill, scratch); v == "" || volume(spec, v).EmptyDir == nil || volume(spec, v).EmptyDir.SizeLimit == nil {
			t.Errorf("drill --scratch=%s is not on an emptyDir with a sizeLimit", scratch)
		}
		if drill.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
			t.Error("drill: terminationMessagePolicy is not FallbackToLogsOnError")
		}
		checkJobPod(t, r, spec, jt.Template.Labels, "drill "+cj.Name)
		specs = append(specs, spec)
	}
	return specs
}

// cronJobsOf returns the rendered CronJobs of a component (drill,
// retention), in order.
func cronJobsOf(r *rendered, component string) []*batchv1.CronJob {
	var out []*batchv1.CronJob
	for _, cj := range r.cronJobs {
		if cj.Labels["app.kubernetes.io/component"] == component {
			out = append(out, cj)
		}
	}
	return out
}

// checkPrunes checks one retention CronJob per pod in want: mysql-pitr prune
// in the mysql-pitr image on that pod's archive, with the keep flags of
// backup.keepSnapshots and backup.keepWithin (which the sidecar then does
// not get), the archive's recipients, the Job's own storage credentials when
// given, no data volume, never two at once. It returns the Jobs' pods.
func checkPrunes(t *testing.T, r *rendered, values map[string]any, agent *corev1.Container, want []string) []*corev1.PodSpec {
	t.Helper()
	cronJobs := cronJobsOf(r, "retention")
	if len(cronJobs) != len(want) {
		t.Fatalf("%d retention CronJobs, want %d", len(cronJobs), len(want))
	}
	if len(r.cronJobs) != len(cronJobsOf(r, "drill"))+len(cronJobs) {
		t.Errorf("CronJobs of another component than drill and retention: %d in all", len(r.cronJobs))
	}
	keep := keepArgs(values)
	for _, a := range agent.Args {
		if len(want) > 0 && (strings.HasPrefix(a, "--keep-snapshots=") || strings.HasPrefix(a, "--keep-within=")) {
			t.Errorf("the sidecar gets %s with retention.cronJob.enabled: retention would run twice, and in the sidecar without an identity or delete permission", a)
		}
	}
	var specs []*corev1.PodSpec
	for i, cj := range cronJobs {
		if cj.Spec.Schedule == "" || cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != "Etc/UTC" || cj.Spec.ConcurrencyPolicy != "Forbid" {
			t.Errorf("CronJob %s: schedule %q, time zone %v, concurrency %s; want a schedule in UTC, Forbid", cj.Name, cj.Spec.Schedule, cj.Spec.TimeZone, cj.Spec.ConcurrencyPolicy)
		}
		if l := len(cj.Name); l > 52 {
			t.Errorf("CronJob name %s is %d characters; Kubernetes allows 52", cj.Name, l)
		}
		jt := cj.Spec.JobTemplate.Spec
		if jt.BackoffLimit == nil || *jt.BackoffLimit != 0 {
			t.Errorf("CronJob %s retries a failed prune: a failure must stay visible", cj.Name)
		}
		spec := &jt.Template.Spec
		if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 || spec.Containers[0].Name != "pitr-prune" {
			t.Fatalf("CronJob %s: want one container pitr-prune and no init containers", cj.Name)
		}
		c := &spec.Containers[0]
		if c.Image != agent.Image || len(c.Command) != 0 {
			t.Errorf("prune runs %q in image %s; want the mysql-pitr image %s and its entrypoint", c.Command, c.Image, agent.Image)
		}
		if len(c.Args) == 0 || c.Args[0] != "prune" {
			t.Fatalf("prune args %q do not start with prune", c.Args)
		}
		var gotKeep, recipients []string
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--keep-snapshots=") || strings.HasPrefix(a, "--keep-within=") {
				gotKeep = append(gotKeep, a)
			}
			if strings.HasPrefix(a, "--age-recipient=") {
				recipients = append(recipients, a)
			}
		}
		if !slices.Equal(gotKeep, keep) {
			t.Errorf("prune keeps by %q, want %q (backup.keepSnapshots, backup.keepWithin)", gotKeep, keep)
		}
		var agentRecipients []string
		for _, a := range agent.Args {
			if strings.HasPrefix(a, "--age-recipient=") {
				agentRecipients = append(agentRecipients, a)
			}
		}
		if !slices.Equal(recipients, agentRecipients) {
			t.Errorf("prune writes its records for %q, the sidecar encrypts for %q", recipients, agentRecipients)
		}
		// The archive is the sidecar's, with the same storage flags.
		for _, a := range agent.Args {
			if strings.HasPrefix(a, "--s3-") {
				if !slices.Contains(c.Args, a) {
					t.Errorf("prune lacks the sidecar's %s", a)
				}
			}
		}
		storage := argValue(c.Args, "--storage")
		if pod := want[i]; pod != "" {
			if storage != argValue(agent.Args, "--storage") || envValue(c, "POD_NAME") != pod {
				t.Errorf("prune %d: --storage=%s with POD_NAME=%q, want the archive of %s", i, storage, envValue(c, "POD_NAME"), pod)
			}
		} else if storage != "s3://pitr-archive/prod" {
			t.Errorf("prune --storage=%s, want the one archive s3://pitr-archive/prod", storage)
		}
		for _, v := range spec.Volumes {
			if v.PersistentVolumeClaim != nil || v.HostPath != nil {
				t.Errorf("prune Job has volume %s on a claim or the host: it needs storage only", v.Name)
			}
		}
		checkPruneCredentials(t, values, spec, c, agent)
		if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
			t.Error("prune: terminationMessagePolicy is not FallbackToLogsOnError")
		}
		checkJobPod(t, r, spec, jt.Template.Labels, "prune "+cj.Name)
		specs = append(specs, spec)
	}
	return specs
}

// keepArgs are the retention flags the values ask for.
func keepArgs(values map[string]any) []string {
	var out []string
	n := 7 // the chart's default
	if b, ok := values["backup"].(map[string]any); ok {
		if v, ok := b["keepSnapshots"].(int); ok {
			n = v
		}
	}
	if n > 0 {
		out = append(out, fmt.Sprintf("--keep-snapshots=%d", n))
	}
	if w := value(values, "backup.keepWithin"); w != "" {
		out = append(out, "--keep-within="+w)
	}
	return out
}

// checkPruneCredentials checks the prune Job's storage credentials: with
// retention.cronJob.storageCredentialsSecret, that Secret's file and nothing
// of the pods' (no web identity either, which the SDK would prefer); without
// it, the pods' settings, with retention.cronJob.webIdentityRoleArn as the
// role when set.
func checkPruneCredentials(t *testing.T, values map[string]any, spec *corev1.PodSpec, c, agent *corev1.Container) {
	t.Helper()
	own := value(values, "retention.cronJob.storageCredentialsSecret")
	file := envValue(c, "AWS_SHARED_CREDENTIALS_FILE")
	if own != "" {
		key := value(values, "retention.cronJob.storageCredentialsKey")
		if key == "" {
			key = "credentials"
		}
		if src := fileSource(spec, c, file); src != "secret "+own+" "+key {
			t.Errorf("prune AWS_SHARED_CREDENTIALS_FILE %q comes from %q, want secret %s key %s", file, src, own, key)
		}
		for _, name := range []string{"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
			if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name }) {
				t.Errorf("prune has %s besides its own credentials file: the SDK would use the web identity", name)
			}
		}
		if got, want := envValue(c, "AWS_PROFILE"), value(values, "retention.cronJob.storageCredentialsProfile"); got != want {
			t.Errorf("prune AWS_PROFILE = %q, want %q", got, want)
		}
		if pods := value(values, "storage.credentials.secretName"); pods != "" {
			for _, v := range spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == pods {
					t.Errorf("prune Job mounts the pods' credentials Secret %s besides its own", pods)
				}
			}
		}
		return
	}
	for _, e := range agent.Env {
		if !strings.HasPrefix(e.Name, "AWS_") {
			continue
		}
		want := e
		if role := value(values, "retention.cronJob.webIdentityRoleArn"); e.Name == "AWS_ROLE_ARN" && role != "" {
			want.Value = role
		}
		i := slices.IndexFunc(c.Env, func(j corev1.EnvVar) bool { return j.Name == e.Name })
		if i < 0 || !reflect.DeepEqual(c.Env[i], want) {
			t.Errorf("prune env %s: want %+v", e.Name, want)
		}
	}
	if file != "" && fileSource(spec, c, file) != "secret "+value(values, "storage.credentials.secretName")+" credentials" {
		t.Errorf("prune AWS_SHARED_CREDENTIALS_FILE %q comes from %q, want the pods' Secret", file, fileSource(spec, c, file))
	}
}

// checkRole checks that the restore Role grants exactly what kubectl mysql-pitr restore
// uses (restore/kube.RoleRules, which its tests hold every API call to).
func checkRole(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.roles) == 0 {
		return
	}
	if len(r.roles) != 1 {
		t.Fatalf("%d Roles, want 1", len(r.roles))
	}
	if got, want := r.roles[0].Rules, kube.RoleRules("db"); !reflect.DeepEqual(got, want) {
		t.Errorf("restore Role rules:\n%+v\nwant exactly what kubectl mysql-pitr restore uses:\n%+v", got, want)
	}
}

// checkJobPod checks what every Job pod of the chart must hold: the
// restricted profile, no API token, no secrets in the environment, every
// mount backed by a volume, and labels no Service, PodDisruptionBudget or
// StatefulSet of the release selects.
func checkJobPod(t *testing.T, r *rendered, spec *corev1.PodSpec, labels map[string]string, what string) {
	t.Helper()
	checkJobLabels(t, r, labels, what)
	checkPodSecurity(t, spec, true)
	checkNoSecretsInEnv(t, spec)
	checkMounts(t, spec, what)
	if spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("%s: restartPolicy %s, want Never", what, spec.RestartPolicy)
	}
	if spec.ServiceAccountName == "" {
		t.Errorf("%s: no serviceAccountName (web identity needs the pods' account)", what)
	}
}

// checkJobLabels checks that none of the release's selectors picks the
// pods of a Job template with these labels.
func checkJobLabels(t *testing.T, r *rendered, labels map[string]string, what string) {
	t.Helper()
	for _, s := range r.services {
		if matches(s.Spec.Selector, labels) {
			t.Errorf("%s pods are selected by Service %s: they would receive its traffic", what, s.Name)
		}
	}
	for _, p := range r.pdbs {
		if p.Spec.Selector != nil && matches(p.Spec.Selector.MatchLabels, labels) {
			t.Errorf("%s pods are selected by PodDisruptionBudget %s", what, p.Name)
		}
	}
	for _, sts := range r.statefulSets {
		if matches(sts.Spec.Selector.MatchLabels, labels) {
			t.Errorf("%s pods are selected by StatefulSet %s", what, sts.Name)
		}
	}
}

// checkMounts checks that every container's mounts name a volume of the pod.
func checkMounts(t *testing.T, spec *corev1.PodSpec, what string) {
	t.Helper()
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if volume(spec, m.Name) == nil {
				t.Errorf("%s: container %s mounts %s, which is no volume of the pod", what, c.Name, m.Name)
			}
		}
	}
}

// checkEncryptionAndTLS checks where the keys, certificates and their flags
// go: the age identity only into the containers that decrypt (the restore
// init container, the restore Job, the drills), the MySQL CA into the agent,
// the S3 CA into everything that talks to storage; each flag's file on the
// right Secret or ConfigMap.
func checkEncryptionAndTLS(t *testing.T, values map[string]any, pod, job *corev1.PodSpec, drills, prunes []*corev1.PodSpec) {
	t.Helper()
	type where struct {
		spec *corev1.PodSpec
		c    *corev1.Container
	}
	var all, decrypting, storage []where
	add := func(spec *corev1.PodSpec) {
		if spec == nil {
			return
		}
		for _, set := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
			for i := range set {
				c := &set[i]
				w := where{spec, c}
				all = append(all, w)
				switch c.Name {
				case "pitr-restore", "pitr-drill", "pitr-prune":
					decrypting = append(decrypting, w)
					storage = append(storage, w)
				case "mysql-pitr":
					storage = append(storage, w)
				}
			}
		}
	}
	add(pod)
	add(job)
	for _, d := range append(slices.Clone(drills), prunes...) {
		add(d)
	}
	// fileFlag is a container's file for a flag: in args, or as MYSQL_PITR_*.
	fileFlag := func(c *corev1.Container, flag string) string {
		if v := argValue(c.Args, flag); v != "" {
			return v
		}
		return envValue(c, "MYSQL_PITR_"+strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_")))
	}

	identity := value(values, "encryption.identitySecret")
	for _, w := range all {
		var mounted bool
		for _, m := range w.c.VolumeMounts {
			if v := volume(w.spec, m.Name); v != nil && v.Secret != nil && identity != "" && v.Secret.SecretName == identity {
				mounted = true
			}
		}
		decrypts := slices.Contains(decrypting, w)
		if mounted != (decrypts && identity != "") {
			t.Errorf("container %s mounts the age identity: %v, want %v (only restores, drills and prunes decrypt)", w.c.Name, mounted, decrypts && identity != "")
		}
		// The delete credentials of retention.cronJob are the prune Jobs' alone.
		if own := value(values, "retention.cronJob.storageCredentialsSecret"); own != "" && w.c.Name != "pitr-prune" {
			for _, m := range w.c.VolumeMounts {
				if v := volume(w.spec, m.Name); v != nil && v.Secret != nil && v.Secret.SecretName == own {
					t.Errorf("container %s mounts retention.cronJob.storageCredentialsSecret %s: only the prune Jobs may delete", w.c.Name, own)
				}
			}
		}
		if file := fileFlag(w.c, "--age-identity"); file != "" || decrypts && identity != "" {
			key := value(values, "encryption.identitySecretKey")
			if key == "" {
				key = "identity"
			}
			if src := fileSource(w.spec, w.c, file); src != "secret "+identity+" "+key {
				t.Errorf("container %s: --age-identity %q comes from %q, want secret %s key %s", w.c.Name, file, src, identity, key)
			}
		}
	}

	if ca := value(values, "mysql.tls.caSecret"); ca != "" {
		agent := container(pod.Containers, "mysql-pitr")
		if file := argValue(agent.Args, "--mysql-ca"); fileSource(pod, agent, file) != "secret "+ca+" ca.crt" {
			t.Errorf("agent --mysql-ca %q comes from %q, want secret %s", file, fileSource(pod, agent, file), ca)
		}
	}

	s3Secret, s3ConfigMap := value(values, "storage.caSecret"), value(values, "storage.caConfigMap")
	key := value(values, "storage.caKey")
	if key == "" {
		key = "ca.crt"
	}
	for _, w := range storage {
		file := fileFlag(w.c, "--s3-ca-file")
		switch {
		case s3Secret != "":
			if src := fileSource(w.spec, w.c, file); src != "secret "+s3Secret+" "+key {
				t.Errorf("container %s: --s3-ca-file %q comes from %q, want secret %s key %s", w.c.Name, file, src, s3Secret, key)
			}
		case s3ConfigMap != "":
			if src := fileSource(w.spec, w.c, file); src != "configmap "+s3ConfigMap+" "+key {
				t.Errorf("container %s: --s3-ca-file %q comes from %q, want configmap %s key %s", w.c.Name, file, src, s3ConfigMap, key)
			}
		case file != "":
			t.Errorf("container %s has --s3-ca-file %s without a CA in the values", w.c.Name, file)
		}
	}
}

// fileSource names where file comes from in c: "secret NAME KEY" or
// "configmap NAME KEY" for a file of a mounted Secret or ConfigMap, "" if
// it is on no such mount.
func fileSource(spec *corev1.PodSpec, c *corev1.Container, file string) string {
	if file == "" {
		return ""
	}
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		v := volume(spec, m.Name)
		if v == nil {
			return ""
		}
		var kind, name string
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			kind, name, items = "secret", v.Secret.SecretName, v.Secret.Items
		case v.ConfigMap != nil:
			kind, name, items = "configmap", v.ConfigMap.Name, v.ConfigMap.Items
		default:
			return ""
		}
		key := rel
		for _, it := range items {
			if it.Path == rel {
				key = it.Key
			}
		}
		return kind + " " + name + " " + key
	}
	return ""
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// volumeAt is the volume c has mounted at dir, or at a parent of file dir.
func volumeAt(c *corev1.Container, dir string) string {
	best, name := "", ""
	for _, m := range c.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (dir == mp || strings.HasPrefix(dir, mp+"/")) && len(mp) > len(best) {
			best, name = mp, m.Name
		}
	}
	return name
}

// argValue is the value of --flag=value in args ("" if absent).
func argValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// serverImage is the server image the values name (the chart's default
// mysql:8.4 where they name none).
func serverImage(values map[string]any) string {
	repo, tag := value(values, "server.image.repository"), value(values, "server.image.tag")
	if repo == "" {
		repo = "mysql"
	}
	if tag == "" {
		tag = "8.4"
	}
	return repo + ":" + tag
}

// scriptsOf returns the rendered scripts ConfigMap that c mounts.
func scriptsOf(t *testing.T, r *rendered, spec *corev1.PodSpec, c *corev1.Container) map[string]string {
	t.Helper()
	v := volume(spec, volumeAt(c, "/opt/mysql-pitr/scripts"))
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("container %s mounts no scripts ConfigMap", c.Name)
	}
	cm, ok := r.configMaps[v.ConfigMap.Name]
	if !ok {
		t.Fatalf("container %s mounts ConfigMap %s, which the chart does not render", c.Name, v.ConfigMap.Name)
	}
	return cm.Data
}
