package kube

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// newClient returns a fake clientset holding objects that refuses, as the
// API server would, every call the chart's restore Role (RoleRules) does not
// allow: every test of this package runs with exactly that Role.
func newClient(t *testing.T, objects ...runtime.Object) *fake.Clientset {
	t.Helper()
	return newClientWithRules(RoleRules("db"), objects...)
}

func newClientWithRules(rules []rbacv1.PolicyRule, objects ...runtime.Object) *fake.Clientset {
	c := fake.NewClientset(objects...)
	c.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if allows(rules, a) {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), actionName(a),
			fmt.Errorf("the restore Role does not allow %s", a.GetVerb()))
	})
	return c
}

// without returns rules without verb on resource.
func without(rules []rbacv1.PolicyRule, resource, verb string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		r = *r.DeepCopy()
		if slices.Contains(r.Resources, resource) {
			r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == verb })
		}
		out = append(out, r)
	}
	return out
}

// actionName is the object an action is about ("" for list and watch).
// Get, delete and patch actions name it (k8stesting.GetAction's method);
// create and update actions carry it.
func actionName(a k8stesting.Action) string {
	switch a := a.(type) {
	case k8stesting.GetAction:
		return a.GetName()
	case k8stesting.CreateAction:
		if m, err := meta.Accessor(a.GetObject()); err == nil {
			return m.GetName()
		}
	}
	return ""
}

// allows applies RBAC's rule matching: group, resource and verb must be
// listed; resourceNames, when given, restrict get, update, patch and
// delete to those names and allow no create, list or watch.
func allows(rules []rbacv1.PolicyRule, a k8stesting.Action) bool {
	res := a.GetResource().Resource
	if a.GetSubresource() != "" {
		res += "/" + a.GetSubresource()
	}
	for _, r := range rules {
		if !slices.Contains(r.APIGroups, a.GetResource().Group) || !slices.Contains(r.Resources, res) || !slices.Contains(r.Verbs, a.GetVerb()) {
			continue
		}
		if len(r.ResourceNames) == 0 {
			return true
		}
		switch a.GetVerb() {
		case "get", "update", "patch", "delete":
			if slices.Contains(r.ResourceNames, actionName(a)) {
				return true
			}
		}
	}
	return false
}

func TestAllows(t *testing.T) {
	rules := RoleRules("db")
	get := func(res, name string) k8stesting.Action {
		return k8stesting.NewGetAction(podsGVR.GroupVersion().WithResource(res), ns, name)
	}
	tests := []struct {
		name   string
		action k8stesting.Action
		want   bool
	}{
		{"get a pod", get("pods", "x"), true},
		{"get the requests configmap", get("configmaps", "db-restore-requests"), true},
		{"get the job template", get("configmaps", "db-restore-job"), true},
		{"get another configmap", get("configmaps", "db-mysql-pitr-config"), false},
		{"get a secret", get("secrets", "db-pitr"), false},
		{"list configmaps", k8stesting.NewListAction(configMapsGVR, configMapsGVR.GroupVersion().WithKind("ConfigMap"), ns, metav1.ListOptions{}), false},
		{"delete a pvc", k8stesting.NewDeleteAction(podsGVR.GroupVersion().WithResource("persistentvolumeclaims"), ns, "x"), false},
		{"update pod status", k8stesting.NewUpdateSubresourceAction(podsGVR, "status", ns, testPod("u")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := allows(rules, tt.action); got != tt.want {
				t.Errorf("allows = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRoleRulesAreUsed runs a successful in-place restore and a successful
// restore to a new PVC under the Role and checks that each of its grants
// was used: together with newClient refusing everything else, the Role is
// exactly what kubectl mysql-pitr restore needs.
func TestRoleRulesAreUsed(t *testing.T) {
	var actions []k8stesting.Action

	inPlace := newClient(t, testPod("uid-1"), testConfigMap())
	startController(t, inPlace, "ok")
	var out bytes.Buffer
	if _, err := Run(t.Context(), options(inPlace, &out)); err != nil {
		t.Fatalf("in place: %v\n%s", err, out.String())
	}
	actions = append(actions, inPlace.Actions()...)

	toPVC := newClient(t, newPVCObjects()...)
	startJobController(t, toPVC, "ok")
	out.Reset()
	if _, err := Run(t.Context(), newPVCOptions(toPVC, &out)); err != nil {
		t.Fatalf("to a new PVC: %v\n%s", err, out.String())
	}
	actions = append(actions, toPVC.Actions()...)

	used := map[string]bool{}
	for _, a := range actions {
		used[grantKey(a.GetResource().Group, a.GetResource().Resource, a.GetVerb(), actionName(a))] = true
	}
	for _, r := range RoleRules("db") {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						if !used[grantKey(g, res, v, n)] {
							t.Errorf("the Role grants %s but no restore used it", grantKey(g, res, v, n))
						}
					}
				}
			}
		}
	}
}

// grantKey names a use of a grant; the name counts only for the
// configmaps, the one resource the Role grants by name.
func grantKey(group, resource, verb, name string) string {
	if resource != "configmaps" {
		name = ""
	}
	return strings.TrimPrefix(group+"/", "/") + resource + " " + verb + " " + name
}
