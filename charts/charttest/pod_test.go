package chart_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/go-sql-driver/mysql"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/restore/kube"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
	"github.com/mysql-pitr/mysql-pitr/storage/s3"
)

const podName = "db-mysql-pitr-0"

// TestPodAsProcesses runs the chart's pod as processes: the sidecar, the
// restore init containers, the restore Job and the retention CronJob's Job,
// each with the command, args and env of the rendered StatefulSet or Job
// template, against a real MariaDB and a real S3 server (see podRunner for
// how paths are mapped), with the archive encrypted by age. It proves that
// the chart wires the binary right: flags, env names, file paths, scripts,
// the age identity where the archive is read, and the sidecar's spool on
// the data volume.
func TestPodAsProcesses(t *testing.T) {
	helmBinary(t)
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 1000})
	gw := testbed.StartS3(t)
	gw.SetEnv(t) // for this test's own reads of the archive; the containers get only their rendered env
	bin := buildBinary(t)
	metricsPort, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	identity, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}

	values := merge(baseValues(), map[string]any{
		"server": map[string]any{"flavor": "mariadb", "image": map[string]any{"repository": "mariadb", "tag": "10.11"},
			"port": src.Port(), "serverIdBase": 1000},
		"storage": map[string]any{"url": "s3://" + gw.Bucket + "/pods", "region": gw.Region, "endpoint": gw.Endpoint, "pathStyle": true},
		// The sidecar takes a snapshot every 2 s and prunes nothing: the
		// retention CronJob keeps the newest one.
		"backup":     map[string]any{"schedule": "@every 2s", "keepSnapshots": 1},
		"retention":  map[string]any{"cronJob": map[string]any{"enabled": true, "storageCredentialsSecret": "pitr-s3-prune"}},
		"binlog":     map[string]any{"flushInterval": "200ms"},
		"agent":      map[string]any{"metricsPort": metricsPort},
		"restore":    map[string]any{"enabled": true, "threads": 2},
		"encryption": map[string]any{"ageRecipients": []any{identity.Recipient().String()}, "identitySecret": "pitr-age"},
	})
	out, err := render(t, values)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	r := decodeAll(t, out)
	spec := statefulSetPod(r.statefulSets[0], podName)
	agentImage := container(spec.Containers, "mysql-pitr").Image

	// The Secrets the user creates before installing, and the ConfigMaps the
	// chart renders.
	s3Credentials := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", gw.AccessKey, gw.SecretKey)
	objects := clusterObjects{
		configMaps: map[string]map[string]string{},
		secrets: map[string]map[string]string{
			"db-pitr":       {"pitr-password": src.PitrPassword() + "\n"},
			"pitr-s3":       {"credentials": s3Credentials},
			"pitr-s3-prune": {"credentials": s3Credentials},
			"pitr-age":      {"identity": identity.String() + "\n"},
			"db-root":       {"root-password": "not-used-by-these-containers"},
		},
	}
	for name, cm := range r.configMaps {
		objects.configMaps[name] = cm.Data
	}
	// The mysql-pitr image holds the binary as its entrypoint; the server
	// image's programs (sh, mariadbd, mariadb-install-db) are the host's.
	images := map[string]map[string]string{agentImage: {"/mysql-pitr": bin}}

	db := src.DB(t)
	sqlExec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	sqlExec("CREATE DATABASE shop")
	sqlExec("CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(64))")
	sqlExec("INSERT INTO shop.orders VALUES (1, 'before the agent'), (2, 'before the agent')")

	archive := openArchive(t, gw, "pods/"+podName, identity)

	// (a) The sidecar, on the server's volume: it archives the binlog and
	// takes the scheduled snapshots.
	volume := filepath.Dir(src.DataDir())
	live := newPodRunner(t, podName, spec, objects, images, map[string]string{"data": volume})
	agent := live.start("mysql-pitr")
	// The kubelet's view: the rendered startup and readiness probes pass.
	for _, pr := range []struct {
		name  string
		probe func(*corev1.Container) *corev1.Probe
	}{
		{"startup", func(c *corev1.Container) *corev1.Probe { return c.StartupProbe }},
		{"readiness", func(c *corev1.Container) *corev1.Probe { return c.ReadinessProbe }},
	} {
		testbed.Eventually(t, 60*time.Second, func() error {
			sidecarRunning(t, agent)
			ok, err := live.probe("mysql-pitr", pr.probe)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				return fmt.Errorf("the %s probe does not pass; sidecar output:\n%s", pr.name, agent.out.String())
			}
			return nil
		})
	}
	testbed.Eventually(t, 90*time.Second, func() error {
		sidecarRunning(t, agent)
		if snaps, err := catalog.LoadSnapshots(t.Context(), archive); err != nil || len(snaps.Complete) == 0 {
			return fmt.Errorf("no complete snapshot (%v); sidecar output:\n%s", err, agent.out.String())
		}
		return nil
	})
	before := segmentKeys(t, archive)
	sqlExec("INSERT INTO shop.orders VALUES (3, 'kept'), (4, 'kept')")
	waitArchived(t, agent, src, archive)
	// The target lies in a later second than the kept rows' commits and
	// the snapshots taken with them, the next row in a later one still:
	// the sidecar snapshots on the wall clock every 2 s, so the seconds
	// are the clock's, not set on the session.
	testbed.NextSecond(t, time.Now())
	target := time.Now().UTC().Truncate(time.Second)
	testbed.NextSecond(t, target)
	sqlExec("INSERT INTO shop.orders VALUES (5, 'after the target')")
	waitArchived(t, agent, src, archive)
	if after := segmentKeys(t, archive); len(after) <= len(before) {
		t.Errorf("no new binlog segments in the bucket after the writes: %d before, %d after", len(before), len(after))
	}
	if code, err := agent.stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("the sidecar on SIGTERM: exit %d, %v\n%s", code, err, agent.out.String())
	}
	if tails, _ := filepath.Glob(filepath.Join(volume, spoolSubPath, "*", "archive-tail.json")); len(tails) != 1 {
		t.Fatalf("the sidecar's spool on the data volume holds %d archive-tail.json, want 1", len(tails))
	}

	// (a2) The pod is recreated: new emptyDirs, the same volume. The sidecar
	// holds only the public key, so it cannot read the archive's end; it
	// resumes from the copy in the spool it kept on the volume, on the same
	// timeline (with the spool lost it would begin an unverified one).
	timelines := timelineIDs(t, archive)
	recreated := newPodRunner(t, podName, spec, objects, images, map[string]string{"data": volume})
	agent = recreated.start("mysql-pitr")
	sqlExec("INSERT INTO shop.orders VALUES (6, 'after the pod was recreated')")
	waitArchived(t, agent, src, archive)
	if code, err := agent.stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("the recreated pod's sidecar on SIGTERM: exit %d, %v\n%s", code, err, agent.out.String())
	}
	if got := timelineIDs(t, archive); !slices.Equal(got, timelines) || len(got) != 1 {
		t.Errorf("timelines after the pod was recreated: %v, want %v (one, continued)", got, timelines)
	}

	// (b) kubectl mysql-pitr restore records a request for the pod; the restarted pod's
	// init containers restore its volume.
	req := kube.Request{ID: "req-1", To: target.Format(time.RFC3339), Created: time.Now()}
	objects.configMaps[kube.RequestsConfigMap("db")] = map[string]string{podName: req.Format()}
	pvc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(pvc, "data"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pvc, "data", "old-datadir-file"), []byte("the datadir before the restore"), 0o640); err != nil {
		t.Fatal(err)
	}
	restarted := newPodRunner(t, podName, spec, objects, images, map[string]string{"data": pvc})
	runInit(t, restarted)
	restore := lastRun(t, restarted)
	var term kube.Termination
	if err := json.Unmarshal([]byte(restore.termination()), &term); err != nil {
		t.Fatalf("restore.sh's termination message %q: %v", restore.termination(), err)
	}
	if term.Request != "req-1" || term.Result != "restored" || term.Marker == nil || term.Marker.Transactions == 0 || term.Marker.Snapshot == "" {
		t.Errorf("termination message %+v: want request req-1 restored from the sidecar's snapshot, with the marker", term)
	}
	if b, _ := os.ReadFile(filepath.Join(pvc, "data", "mysql-pitr-request")); string(b) != "req-1\n" {
		t.Errorf("datadir marker mysql-pitr-request = %q, want req-1", b)
	}
	if _, err := os.Stat(filepath.Join(pvc, "restore-in-progress")); !os.IsNotExist(err) {
		t.Errorf("restore-in-progress left on the volume (%v): the server would refuse to start", err)
	}
	aside, _ := filepath.Glob(filepath.Join(pvc, "data.before-restore-*", "old-datadir-file"))
	if len(aside) != 1 {
		t.Errorf("the old datadir was not moved aside on the volume: %v", aside)
	}
	if got, want := orderIDs(t, filepath.Join(pvc, "data")), []int{1, 2, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("restored shop.orders ids %v, want %v (everything committed by %s, nothing after)", got, want, target.Format(time.RFC3339))
	}

	// (c) The next start of the pod finds the request served: nothing
	// happens to the datadir.
	state := dirState(t, pvc)
	again := newPodRunner(t, podName, spec, objects, images, map[string]string{"data": pvc})
	runInit(t, again)
	if err := json.Unmarshal([]byte(lastRun(t, again).termination()), &term); err != nil || term.Request != "req-1" || term.Result != "already-restored" {
		t.Errorf("second start: termination %+v (%v), want request req-1 already-restored", term, err)
	}
	if now := dirState(t, pvc); !slices.Equal(now, state) {
		t.Errorf("second start changed the volume:\nbefore %v\nafter  %v", state, now)
	}

	// (d) kubectl mysql-pitr restore --to-new-pvc: the Job made from the chart's
	// template restores the same archive into an empty volume.
	tmpl, err := kube.ParseJobTemplate(r.configMaps[kube.JobTemplateConfigMap("db")].Data[kube.JobTemplateKey])
	if err != nil {
		t.Fatal(err)
	}
	job := tmpl.Job(kube.JobName("orders-at-target"), "databases", "orders-at-target", podName, req.To, "req-2")
	newPVC := t.TempDir()
	jobPod := newPodRunner(t, job.Name+"-x7k2p", &job.Spec.Template.Spec, objects, images, map[string]string{tmpl.DataVolume: newPVC})
	runInit(t, jobPod)
	proc, code := jobPod.run(t.Context(), "pitr-restore", 5*time.Minute)
	if code != 0 {
		t.Fatalf("restore Job container exited %d:\n%s", code, proc.out.String())
	}
	term = kube.Termination{}
	if err := json.Unmarshal([]byte(proc.termination()), &term); err != nil || term.Request != "req-2" || term.Marker == nil || term.Marker.Target != req.To {
		t.Errorf("restore-job.sh's termination message %q (%v): want request req-2 with the marker for %s", proc.termination(), err, req.To)
	}
	if got, want := orderIDs(t, filepath.Join(newPVC, tmpl.DatadirOnVolume())), []int{1, 2, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("restore Job: shop.orders ids %v, want %v", got, want)
	}

	// (e) The retention CronJob's Job prunes the encrypted archive to the
	// newest snapshot, with the age identity and its own credentials: the
	// pods' credentials Secret here holds keys S3 refuses, so a Job that
	// used it would fail.
	kept, err := catalog.LoadSnapshots(t.Context(), archive)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept.Complete) < 2 {
		t.Fatalf("%d complete snapshots: the sidecar took too few for retention to delete any", len(kept.Complete))
	}
	newest := kept.Complete[len(kept.Complete)-1].ID
	cronJobs := cronJobsOf(r, "retention")
	if len(cronJobs) != 1 {
		t.Fatalf("%d retention CronJobs, want 1", len(cronJobs))
	}
	pruneObjects := clusterObjects{configMaps: objects.configMaps, secrets: maps.Clone(objects.secrets)}
	pruneObjects.secrets["pitr-s3"] = map[string]string{"credentials": "[default]\naws_access_key_id = refused\naws_secret_access_key = refused\n"}
	prune := newPodRunner(t, cronJobs[0].Name+"-29000000-x7k2p", &cronJobs[0].Spec.JobTemplate.Spec.Template.Spec, pruneObjects, images, nil)
	proc, code = prune.run(t.Context(), "pitr-prune", 2*time.Minute)
	if code != 0 {
		t.Fatalf("prune Job container exited %d:\n%s", code, proc.out.String())
	}
	kept, err = catalog.LoadSnapshots(t.Context(), archive)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept.Complete) != 1 || kept.Complete[0].ID != newest {
		var ids []catalog.SnapshotID
		for _, m := range kept.Complete {
			ids = append(ids, m.ID)
		}
		t.Errorf("after the prune Job: complete snapshots %v, want only the newest %s\n%s", ids, newest, proc.out.String())
	}
	// What prune wrote (its records) decrypts with the identity: the archive
	// still loads whole.
	if _, err := catalog.Load(t.Context(), archive, catalog.LoadOptions{}); err != nil {
		t.Errorf("the archive after the prune Job: %v", err)
	}
}

// timelineIDs lists the archive's timelines.
func timelineIDs(t *testing.T, st storage.Storage) []catalog.TimelineID {
	t.Helper()
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []catalog.TimelineID
	for _, tl := range arch.Timelines {
		ids = append(ids, tl.ID)
	}
	return ids
}

// statefulSetPod is the pod spec the StatefulSet controller makes for pod:
// the template plus a PersistentVolumeClaim volume per claim template.
func statefulSetPod(sts *appsv1.StatefulSet, pod string) *corev1.PodSpec {
	spec := sts.Spec.Template.Spec.DeepCopy()
	for _, c := range sts.Spec.VolumeClaimTemplates {
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + pod}}})
	}
	return spec
}

// buildBinary builds mysql-pitr as the Dockerfile does.
func buildBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "mysql-pitr")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", out, "./cmd/mysql-pitr")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// runInit runs the pod's init containers in order; each must exit 0.
func runInit(t *testing.T, p *podRunner) {
	t.Helper()
	for _, c := range p.spec.InitContainers {
		if c.RestartPolicy != nil {
			continue // a native sidecar
		}
		proc, code := p.run(t.Context(), c.Name, 5*time.Minute)
		if code != 0 {
			t.Fatalf("pod %s: init container %s exited %d:\n%s", p.name, c.Name, code, proc.out.String())
		}
		p.last = proc
	}
}

func lastRun(t *testing.T, p *podRunner) *containerProc {
	t.Helper()
	if p.last == nil {
		t.Fatal("no container ran")
	}
	return p.last
}

// openArchive opens the pod's archive in the test server's bucket,
// decrypting with identity.
func openArchive(t *testing.T, gw *testbed.S3, prefix string, identity age.Identity) storage.Storage {
	t.Helper()
	cfg, err := s3.ParseURL(gw.URL(prefix))
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := crypt.New(st, crypt.Options{Identities: []age.Identity{identity}})
	if err != nil {
		t.Fatal(err)
	}
	return dec
}

// segmentKeys lists the archive's binlog segment objects.
func segmentKeys(t *testing.T, st storage.Storage) []string {
	t.Helper()
	arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, tl := range arch.Timelines {
		for _, s := range tl.Segments {
			ks = append(ks, s.Ref().DataKey())
		}
	}
	return ks
}

// waitArchived waits until the archive in storage reaches the server's
// current binlog position.
func waitArchived(t *testing.T, agent *containerProc, src *testbed.MariaDB, st storage.Storage) {
	t.Helper()
	var file string
	var pos uint64
	var x, y any
	if err := src.DB(t).QueryRowContext(t.Context(), "SHOW MASTER STATUS").Scan(&file, &pos, &x, &y); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, 60*time.Second, func() error {
		sidecarRunning(t, agent)
		arch, err := catalog.Load(t.Context(), st, catalog.LoadOptions{})
		if err == nil && len(arch.Timelines) == 0 {
			err = errors.New("no timeline")
		}
		if err != nil {
			return fmt.Errorf("the archive to reach %s:%d: %v; sidecar output:\n%s", file, pos, err, agent.out.String())
		}
		if end, _ := arch.Last().End(); end.File < file || end.File == file && end.Pos < pos {
			return fmt.Errorf("the archive to reach %s:%d, it ends at %s; sidecar output:\n%s", file, pos, end, agent.out.String())
		}
		return nil
	})
}

// sidecarRunning fails the test if the sidecar has exited: the conditions
// polled while it runs check it first.
func sidecarRunning(t *testing.T, agent *containerProc) {
	t.Helper()
	if agent.exited() {
		t.Fatalf("the sidecar exited (%v):\n%s", agent.err, agent.out.String())
	}
}

// orderIDs starts a server on a restored datadir and lists shop.orders.
func orderIDs(t *testing.T, datadir string) []int {
	t.Helper()
	run, err := os.MkdirTemp("", "srv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(run)
	srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: mysqld.MariaDB, Datadir: datadir, RunDir: run, SkipGrants: true})
	if err != nil {
		t.Fatalf("start a server on the restored datadir %s: %v", datadir, err)
	}
	defer srv.Stop(context.WithoutCancel(t.Context()))
	return queryIDs(t, srv.Config())
}

func queryIDs(t *testing.T, cfg *mysql.Config) []int {
	t.Helper()
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT id FROM shop.orders ORDER BY id")
	if err != nil {
		t.Fatalf("read shop.orders on the restored server: %v", err)
	}
	defer rows.Close()
	var ids []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// dirState lists every file under dir with its size and modification time.
func dirState(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, fmt.Sprintf("%s %d %s", rel, fi.Size(), fi.ModTime().Format(time.RFC3339Nano)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
