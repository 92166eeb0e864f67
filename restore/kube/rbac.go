package kube

import rbacv1 "k8s.io/api/rbac/v1"

// RoleRules are the permissions kubectl mysql-pitr restore uses in the
// release's namespace, all of them and nothing more: an in-place restore
// reads and deletes the pod and edits the restore-requests ConfigMap; a
// restore to a new PVC reads the pod, its PVC and the Job template, creates
// the PVC and the Job, follows the Job and its pod, and deletes the Job. The
// chart's restore Role (restore.rbac.create) grants exactly these, which the
// chart's tests check. Reading events, used only to explain a timeout, is
// optional and left out.
func RoleRules(release string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{RequestsConfigMap(release)}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{JobTemplateConfigMap(release)}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "create"}},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get", "create", "delete"}},
	}
}
