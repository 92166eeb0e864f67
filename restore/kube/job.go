package kube

import (
	"errors"
	"fmt"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// JobTemplateKey is the key of the Job template in the chart's
// <release>-restore-job ConfigMap.
const JobTemplateKey = "job.yaml"

// Environment variables of the Job template's restore container that a
// restore to a new PVC sets (files/restore-job.sh reads them).
const (
	// EnvPod names the pod whose archive is restored; the template's
	// storage URL refers to it as $(POD_NAME), as the pod's own does.
	EnvPod = "POD_NAME"
	// EnvTarget is the restore target: an RFC 3339 time or latest.
	EnvTarget = "PITR_TO"
	// EnvRequest is an id the container echoes in its termination message.
	EnvRequest = "PITR_REQUEST"
	// EnvStorage is the archive URL (the binary's MYSQL_PITR_STORAGE).
	EnvStorage = "MYSQL_PITR_STORAGE"
)

// JobTemplateConfigMap is the name the chart gives the ConfigMap holding a
// release's restore Job template (mysql-pitr.restoreJobName).
func JobTemplateConfigMap(release string) string {
	return trunc63(release + "-restore-job")
}

func trunc63(name string) string {
	if len(name) > 63 {
		name = name[:63]
	}
	return strings.TrimRight(name, "-.")
}

// JobTemplate is the chart's restore Job, rendered without the parts a
// restore fills in: the PVC, the pod whose archive to restore, the target.
type JobTemplate struct {
	job *batchv1.Job
	// DataVolume is the name of the template's PersistentVolumeClaim
	// volume; the pod's volume of the same name is the PVC a new one is
	// cloned from.
	DataVolume string
}

// ParseJobTemplate decodes the template strictly (an unknown field is an
// error) and checks that it has what a restore fills in: one
// PersistentVolumeClaim volume and a container named RestoreContainer with
// the Env* variables.
func ParseJobTemplate(doc string) (*JobTemplate, error) {
	var job batchv1.Job
	if err := yaml.UnmarshalStrict([]byte(doc), &job); err != nil {
		return nil, fmt.Errorf("restore job template: %w", err)
	}
	t := &JobTemplate{job: &job}
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			if t.DataVolume != "" {
				return nil, fmt.Errorf("restore job template: two PersistentVolumeClaim volumes (%s, %s), want one for the new PVC", t.DataVolume, v.Name)
			}
			t.DataVolume = v.Name
		}
	}
	if t.DataVolume == "" {
		return nil, errors.New("restore job template: no PersistentVolumeClaim volume for the new PVC")
	}
	c := t.container()
	if c == nil {
		return nil, fmt.Errorf("restore job template: no container %s", RestoreContainer)
	}
	for _, name := range []string{EnvPod, EnvTarget, EnvRequest, EnvStorage} {
		if envIndex(c, name) < 0 {
			return nil, fmt.Errorf("restore job template: container %s has no %s", RestoreContainer, name)
		}
	}
	if envIndex(c, EnvPod) > envIndex(c, EnvStorage) {
		return nil, fmt.Errorf("restore job template: %s must come before %s, which refers to it", EnvPod, EnvStorage)
	}
	return t, nil
}

func (t *JobTemplate) container() *corev1.Container {
	cs := t.job.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == RestoreContainer {
			return &cs[i]
		}
	}
	return nil
}

func envIndex(c *corev1.Container, name string) int {
	for i, e := range c.Env {
		if e.Name == name {
			return i
		}
	}
	return -1
}

// Storage is the archive the Job restores pod from: the template's
// MYSQL_PITR_STORAGE with $(POD_NAME) expanded, as the kubelet will.
func (t *JobTemplate) Storage(pod string) string {
	c := t.container()
	return strings.ReplaceAll(c.Env[envIndex(c, EnvStorage)].Value, "$("+EnvPod+")", pod)
}

// Job returns the Job that restores pod's archive to target into the
// PersistentVolumeClaim pvc. The template is left unchanged.
func (t *JobTemplate) Job(name, namespace, pvc, pod, target, id string) *batchv1.Job {
	job := t.job.DeepCopy()
	job.Name, job.Namespace = name, namespace
	job.GenerateName, job.ResourceVersion, job.UID = "", "", ""
	if job.Annotations == nil {
		job.Annotations = map[string]string{}
	}
	job.Annotations[AnnotationSourcePod] = pod
	job.Annotations[AnnotationTarget] = target
	spec := &job.Spec.Template.Spec
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == t.DataVolume {
			spec.Volumes[i].PersistentVolumeClaim.ClaimName = pvc
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name != RestoreContainer {
			continue
		}
		c := &spec.Containers[i]
		for j := range c.Env {
			switch c.Env[j].Name {
			case EnvPod:
				c.Env[j] = corev1.EnvVar{Name: EnvPod, Value: pod}
			case EnvTarget:
				c.Env[j] = corev1.EnvVar{Name: EnvTarget, Value: target}
			case EnvRequest:
				c.Env[j] = corev1.EnvVar{Name: EnvRequest, Value: id}
			}
		}
	}
	return job
}

// Annotations a restore to a new PVC puts on the PVC and the Job.
const (
	AnnotationSourcePod = "mysql-pitr.io/restored-from-pod"
	AnnotationTarget    = "mysql-pitr.io/restore-target"
)

// JobName is the name of the Job that restores into pvc.
func JobName(pvc string) string {
	return trunc63("pitr-restore-" + pvc)
}
