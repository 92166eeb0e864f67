package kubetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The cluster's storage: a default StorageClass whose PersistentVolumes are
// directories below the cluster's directory, made by the test binary for
// each claim of the class (nothing in Kubernetes provisions hostPath
// volumes). A hostPath volume is not chowned by the kubelet (fsGroup does
// not apply to it), so each directory gets the owner, group and mode the
// class's parameters name: those of the official server images' mysql user,
// group-writable and setgid as fsGroup would leave a volume.
const (
	// StorageClass is the name of the cluster's default StorageClass.
	StorageClass    = "kubetest-hostpath"
	provisionerName = "kubetest.mysql-pitr/hostpath"
	// provisionPoll is how often claims and released volumes are looked for.
	provisionPoll = 300 * time.Millisecond
)

func storageClass() *storagev1.StorageClass {
	del := corev1.PersistentVolumeReclaimDelete
	immediate := storagev1.VolumeBindingImmediate
	return &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: StorageClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       provisionerName,
		ReclaimPolicy:     &del,
		VolumeBindingMode: &immediate,
		Parameters:        map[string]string{"uid": "999", "gid": "999", "mode": "2770"},
	}
}

// provisioner makes and deletes the class's volumes.
type provisioner struct {
	client kubernetes.Interface
	dir    string
	logf   func(string, ...any)
}

// run provisions until ctx ends.
func (p *provisioner) run(ctx context.Context) {
	t := time.NewTicker(provisionPoll)
	defer t.Stop()
	for {
		if err := p.step(ctx); err != nil && ctx.Err() == nil {
			p.logf("provisioner: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step makes a volume for each pending claim of the class and deletes each
// released volume of the class.
func (p *provisioner) step(ctx context.Context) error {
	sc, err := p.client.StorageV1().StorageClasses().Get(ctx, StorageClass, metav1.GetOptions{})
	if err != nil {
		return err
	}
	claims, err := p.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		if c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != StorageClass || c.Spec.VolumeName != "" ||
			c.Status.Phase != corev1.ClaimPending || c.DeletionTimestamp != nil {
			continue
		}
		if err := p.provision(ctx, sc, c); err != nil {
			return err
		}
	}
	vols, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, v := range vols.Items {
		if v.Spec.StorageClassName != StorageClass || v.Status.Phase != corev1.VolumeReleased || v.Spec.HostPath == nil {
			continue
		}
		if err := os.RemoveAll(v.Spec.HostPath.Path); err != nil {
			return fmt.Errorf("delete volume %s: %w", v.Name, err)
		}
		err := p.client.CoreV1().PersistentVolumes().Delete(ctx, v.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

func (p *provisioner) provision(ctx context.Context, sc *storagev1.StorageClass, c *corev1.PersistentVolumeClaim) error {
	name := "pvc-" + string(c.UID)
	if _, err := p.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil
	}
	uid, _ := strconv.Atoi(sc.Parameters["uid"])
	gid, _ := strconv.Atoi(sc.Parameters["gid"])
	mode, err := strconv.ParseUint(sc.Parameters["mode"], 8, 32)
	if err != nil {
		return fmt.Errorf("storage class %s: mode %q: %w", sc.Name, sc.Parameters["mode"], err)
	}
	dir := filepath.Join(p.dir, c.Namespace+"-"+c.Name+"-"+string(c.UID)[:8])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	// Chmod after chown: chown clears the setgid bit.
	if err := os.Chmod(dir, os.FileMode(mode&0o777)|modeBits(mode)); err != nil {
		return err
	}
	hostPathType := corev1.HostPathDirectory
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: c.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   c.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              StorageClass,
			VolumeMode:                    c.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: c.Namespace, Name: c.Name, UID: c.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathType}},
		},
	}
	if _, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create volume for claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	p.logf("provisioner: volume %s for claim %s/%s at %s", name, c.Namespace, c.Name, dir)
	return nil
}

// modeBits converts the setuid, setgid and sticky bits of a Unix mode to
// Go's.
func modeBits(mode uint64) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}
