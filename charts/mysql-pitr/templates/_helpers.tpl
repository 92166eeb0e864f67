{{/*
Names, labels and the pieces shared by the full StatefulSet and the
sidecar-only patch. Everything both modes render comes from a template here,
so the two cannot drift apart.
*/}}

{{- define "mysql-pitr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mysql-pitr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mysql-pitr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mysql-pitr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels selecting the database pods: the chart's own, or the user's in sidecar-only mode. */}}
{{- define "mysql-pitr.podSelector" -}}
{{- if eq .Values.mode "sidecar-only" }}
{{- toYaml .Values.sidecarOnly.podSelector }}
{{- else }}
{{- include "mysql-pitr.selectorLabels" . }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mysql-pitr.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.agentImage" -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) }}
{{- end }}

{{- define "mysql-pitr.serverImage" -}}
{{- printf "%s:%s" .Values.server.image.repository .Values.server.image.tag }}
{{- end }}

{{- define "mysql-pitr.restoreRequestsName" -}}
{{- printf "%s-restore-requests" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ConfigMap holding the restore Job template (restore/kube.JobTemplateConfigMap). */}}
{{- define "mysql-pitr.restoreJobName" -}}
{{- printf "%s-restore-job" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The Secrets of the root password and the agent's password: the ones the
values name, or the ones the chart generates (templates/secrets.yaml) when
they name none.
*/}}
{{- define "mysql-pitr.rootPasswordSecret" -}}
{{- .Values.server.rootPassword.secretName | default (printf "%s-root" (include "mysql-pitr.fullname" .)) }}
{{- end }}

{{- define "mysql-pitr.pitrPasswordSecret" -}}
{{- .Values.mysql.pitrUser.secretName | default (printf "%s-pitr" (include "mysql-pitr.fullname" .)) }}
{{- end }}

{{/*
Labels of the restore and drill Jobs' pods: the release and the component,
but not the selector labels, so that no Service, PodDisruptionBudget or
anti-affinity of the database pods ever selects them.
*/}}
{{- define "mysql-pitr.jobLabels" -}}
app.kubernetes.io/part-of: {{ include "mysql-pitr.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* The ServiceAccount of the Jobs' pods: the database pods' one (for web identity); sidecar-only mode creates none. */}}
{{- define "mysql-pitr.jobServiceAccountName" -}}
{{- if eq .Values.mode "full" }}{{ include "mysql-pitr.serviceAccountName" . }}{{ else }}{{ .Values.serviceAccount.name | default "default" }}{{ end }}
{{- end }}

{{- define "mysql-pitr.datadir" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.persistence.mountPath) .Values.persistence.dataSubdir }}
{{- end }}

{{- define "mysql-pitr.dataVolume" -}}
{{- if eq .Values.mode "sidecar-only" }}{{ .Values.sidecarOnly.dataVolumeName }}{{ else }}data{{ end }}
{{- end }}

{{/*
The pods whose archives a per-archive CronJob (drills, retention) works on,
as a JSON list: dict root, pods (the value naming them). With
storage.perPod, pods or else every pod of the chart's StatefulSet; without
it, [""] for the one archive.
*/}}
{{- define "mysql-pitr.archivePods" -}}
{{- $ := .root }}
{{- $pods := list "" }}
{{- if $.Values.storage.perPod }}
{{- $pods = .pods }}
{{- if and (not $pods) (eq $.Values.mode "full") }}
{{- range $i := until (int $.Values.server.replicas) }}
{{- $pods = append $pods (printf "%s-%d" (include "mysql-pitr.fullname" $) $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $pods }}
{{- end }}

{{/*
"true" when the agent's spool is on the data volume: agent.spool.persistent
true, or auto with encryption.ageRecipients (an agent without an identity
resumes from its spool's copy of the archive's end).
*/}}
{{- define "mysql-pitr.persistentSpool" -}}
{{- $p := .Values.agent.spool.persistent }}
{{- if eq (toString $p) "auto" }}
{{- if .Values.encryption.ageRecipients }}true{{ end }}
{{- else if $p }}true{{ end }}
{{- end }}

{{/* The spool's directory on the data volume, beside the datadir. */}}
{{- define "mysql-pitr.spoolSubPath" -}}mysql-pitr-spool{{- end }}

{{/* The archive URL of one pod; $(POD_NAME) is expanded by the kubelet in args and by the restore script from its env. */}}
{{- define "mysql-pitr.storageURL" -}}
{{- if .Values.storage.perPod }}
{{- printf "%s/$(POD_NAME)" (trimSuffix "/" .Values.storage.url) }}
{{- else }}
{{- .Values.storage.url }}
{{- end }}
{{- end }}

{{/* Mount paths of the secrets; only paths, never values, reach env and argv. */}}
{{- define "mysql-pitr.secretsDir" -}}/var/run/secrets/mysql-pitr{{- end }}
{{- define "mysql-pitr.pitrPasswordFile" -}}{{ include "mysql-pitr.secretsDir" . }}/mysql/password{{- end }}
{{- define "mysql-pitr.awsCredentialsFile" -}}{{ include "mysql-pitr.secretsDir" . }}/aws/credentials{{- end }}
{{- define "mysql-pitr.awsTokenFile" -}}{{ include "mysql-pitr.secretsDir" . }}/aws-token/token{{- end }}
{{- define "mysql-pitr.s3CaFile" -}}{{ include "mysql-pitr.secretsDir" . }}/s3-ca/ca.crt{{- end }}
{{- define "mysql-pitr.mysqlCaFile" -}}{{ include "mysql-pitr.secretsDir" . }}/mysql-ca/ca.crt{{- end }}
{{- define "mysql-pitr.ageIdentityFile" -}}{{ include "mysql-pitr.secretsDir" . }}/age/identity{{- end }}
{{- define "mysql-pitr.s3Ca" -}}{{ if or .Values.storage.caSecret .Values.storage.caConfigMap }}true{{ end }}{{- end }}

{{/* The restricted Pod Security Standard, for one container running as uid. */}}
{{- define "mysql-pitr.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnly }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The uid of the agent: the server's for physical snapshots, which read the datadir's files. */}}
{{- define "mysql-pitr.agentUID" -}}
{{- if eq .Values.backup.method "physical" }}{{ .Values.server.uid }}{{ else }}{{ include "mysql-pitr.imageUID" . }}{{ end }}
{{- end }}

{{/* The mysql-pitr image's user (distroless nonroot). */}}
{{- define "mysql-pitr.imageUID" -}}65532{{- end }}

{{/* Storage settings as environment variables, shared by the agent and the restore. */}}
{{- define "mysql-pitr.awsEnv" -}}
{{- include "mysql-pitr.awsEnvRole" (dict "root" . "roleArn" .Values.storage.credentials.webIdentity.roleArn) }}
{{- end }}

{{/* awsEnv with the web identity's role given: dict root, roleArn. */}}
{{- define "mysql-pitr.awsEnvRole" -}}
{{- $ := .root }}
{{- $role := .roleArn }}
{{- with $.Values.storage.credentials }}
{{- if .secretName }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: {{ include "mysql-pitr.awsCredentialsFile" $ }}
{{- end }}
{{- if .profile }}
- name: AWS_PROFILE
  value: {{ .profile | quote }}
{{- end }}
{{- if .webIdentity.enabled }}
- name: AWS_ROLE_ARN
  value: {{ $role | quote }}
- name: AWS_WEB_IDENTITY_TOKEN_FILE
  value: {{ include "mysql-pitr.awsTokenFile" $ }}
- name: AWS_ROLE_SESSION_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end }}
{{- end }}

{{/* Storage flags, as MYSQL_PITR_* variables so the restore script needs no argv for them. */}}
{{- define "mysql-pitr.storageEnv" -}}
- name: MYSQL_PITR_STORAGE
  value: {{ include "mysql-pitr.storageURL" . | quote }}
{{- with .Values.storage.region }}
- name: MYSQL_PITR_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.endpoint }}
- name: MYSQL_PITR_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if .Values.storage.pathStyle }}
- name: MYSQL_PITR_S3_PATH_STYLE
  value: "true"
{{- end }}
{{- with .Values.storage.sse }}
- name: MYSQL_PITR_S3_SSE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.sseKmsKeyId }}
- name: MYSQL_PITR_S3_SSE_KMS_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- if include "mysql-pitr.s3Ca" . }}
- name: MYSQL_PITR_S3_CA_FILE
  value: {{ include "mysql-pitr.s3CaFile" . }}
{{- end }}
{{- end }}

{{/* Storage flags as arguments, for the agent and the drill: nothing in them is secret. */}}
{{- define "mysql-pitr.storageArgs" -}}
- --storage={{ include "mysql-pitr.storageURL" . }}
{{- with .Values.storage.region }}
- --s3-region={{ . }}
{{- end }}
{{- with .Values.storage.endpoint }}
- --s3-endpoint={{ . }}
{{- end }}
{{- if .Values.storage.pathStyle }}
- --s3-path-style=true
{{- end }}
{{- with .Values.storage.sse }}
- --s3-sse={{ . }}
{{- end }}
{{- with .Values.storage.sseKmsKeyId }}
- --s3-sse-kms-key-id={{ . }}
{{- end }}
{{- if include "mysql-pitr.s3Ca" . }}
- --s3-ca-file={{ include "mysql-pitr.s3CaFile" . }}
{{- end }}
{{- end }}

{{/* The age identity, for the containers that decrypt (restores and drills) and no other. */}}
{{- define "mysql-pitr.ageIdentityEnv" -}}
{{- if .Values.encryption.identitySecret }}
- name: MYSQL_PITR_AGE_IDENTITY
  value: {{ include "mysql-pitr.ageIdentityFile" . }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.ageIdentityMount" -}}
{{- if .Values.encryption.identitySecret }}
- name: pitr-age-identity
  mountPath: {{ include "mysql-pitr.secretsDir" . }}/age
  readOnly: true
{{- end }}
{{- end }}

{{- define "mysql-pitr.ageIdentityVolume" -}}
{{- if .Values.encryption.identitySecret }}
- name: pitr-age-identity
  secret:
    secretName: {{ .Values.encryption.identitySecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.encryption.identitySecretKey }}
        path: identity
{{- end }}
{{- end }}

{{/* Volume mounts of the storage credentials. */}}
{{- define "mysql-pitr.awsMounts" -}}
{{- if .Values.storage.credentials.secretName }}
- name: aws-credentials
  mountPath: {{ include "mysql-pitr.secretsDir" . }}/aws
  readOnly: true
{{- end }}
{{- if .Values.storage.credentials.webIdentity.enabled }}
- name: aws-token
  mountPath: {{ include "mysql-pitr.secretsDir" . }}/aws-token
  readOnly: true
{{- end }}
{{- include "mysql-pitr.s3CaMount" . }}
{{- end }}

{{- define "mysql-pitr.s3CaMount" -}}
{{- if include "mysql-pitr.s3Ca" . }}
- name: pitr-s3-ca
  mountPath: {{ include "mysql-pitr.secretsDir" . }}/s3-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes of the storage credentials and CA, for the pods and the Jobs alike. */}}
{{- define "mysql-pitr.awsVolumes" -}}
{{- if .Values.storage.credentials.secretName }}
- name: aws-credentials
  secret:
    secretName: {{ .Values.storage.credentials.secretName }}
    defaultMode: 0440
    items:
      - key: {{ .Values.storage.credentials.secretKey }}
        path: credentials
{{- end }}
{{- if .Values.storage.credentials.webIdentity.enabled }}
- name: aws-token
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          audience: {{ .Values.storage.credentials.webIdentity.audience }}
          expirationSeconds: {{ .Values.storage.credentials.webIdentity.expirationSeconds }}
          path: token
{{- end }}
{{- include "mysql-pitr.s3CaVolume" . }}
{{- end }}

{{- define "mysql-pitr.s3CaVolume" -}}
{{- if .Values.storage.caSecret }}
- name: pitr-s3-ca
  secret:
    secretName: {{ .Values.storage.caSecret }}
    defaultMode: 0444
    items:
      - key: {{ .Values.storage.caKey }}
        path: ca.crt
{{- else if .Values.storage.caConfigMap }}
- name: pitr-s3-ca
  configMap:
    name: {{ .Values.storage.caConfigMap }}
    defaultMode: 0444
    items:
      - key: {{ .Values.storage.caKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{/*
The storage credentials of the prune Jobs: retention.cronJob's own Secret
(mounted where storage.credentials' would be) when set, else the pods'
(with web identity, retention.cronJob.webIdentityRoleArn in place of the
role when set).
*/}}
{{- define "mysql-pitr.pruneAwsEnv" -}}
{{- with .Values.retention.cronJob }}
{{- if .storageCredentialsSecret }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: {{ include "mysql-pitr.awsCredentialsFile" $ }}
{{- with .storageCredentialsProfile }}
- name: AWS_PROFILE
  value: {{ . | quote }}
{{- end }}
{{- else }}
{{- include "mysql-pitr.awsEnvRole" (dict "root" $ "roleArn" (.webIdentityRoleArn | default $.Values.storage.credentials.webIdentity.roleArn)) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.pruneAwsMounts" -}}
{{- if .Values.retention.cronJob.storageCredentialsSecret }}
- name: aws-credentials
  mountPath: {{ include "mysql-pitr.secretsDir" . }}/aws
  readOnly: true
{{- include "mysql-pitr.s3CaMount" . }}
{{- else }}
{{- include "mysql-pitr.awsMounts" . }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.pruneAwsVolumes" -}}
{{- with .Values.retention.cronJob }}
{{- if .storageCredentialsSecret }}
- name: aws-credentials
  secret:
    secretName: {{ .storageCredentialsSecret }}
    defaultMode: 0440
    items:
      - key: {{ .storageCredentialsKey }}
        path: credentials
{{- include "mysql-pitr.s3CaVolume" $ }}
{{- else }}
{{- include "mysql-pitr.awsVolumes" $ }}
{{- end }}
{{- end }}
{{- end }}

{{/* The retention flags of backup.keepSnapshots and backup.keepWithin. */}}
{{- define "mysql-pitr.keepArgs" -}}
{{- if .Values.backup.keepSnapshots }}
- --keep-snapshots={{ .Values.backup.keepSnapshots }}
{{- end }}
{{- with .Values.backup.keepWithin }}
- --keep-within={{ . }}
{{- end }}
{{- end }}

{{- define "mysql-pitr.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/*
The agent container. Every setting is a flag in args (nothing in it is
secret); the password and the S3 credentials are files.
*/}}
{{- define "mysql-pitr.agentContainer" -}}
- name: mysql-pitr
  image: {{ include "mysql-pitr.agentImage" . }}
  imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
  {{- if .Values.agent.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  args:
    - agent
    - --dsn={{ .Values.mysql.pitrUser.name }}@tcp(127.0.0.1:{{ .Values.server.port }})/
    - --password-file={{ include "mysql-pitr.pitrPasswordFile" . }}
    {{- with .Values.mysql.tls.mode }}
    - --mysql-tls={{ . }}
    {{- end }}
    {{- if .Values.mysql.tls.caSecret }}
    - --mysql-ca={{ include "mysql-pitr.mysqlCaFile" . }}
    {{- end }}
    {{- include "mysql-pitr.storageArgs" . | nindent 4 }}
    {{- range .Values.encryption.ageRecipients }}
    - --age-recipient={{ . }}
    {{- end }}
    - --server-id={{ .Values.binlog.agentServerId }}
    - --flush-interval={{ .Values.binlog.flushInterval }}
    - --listen=:{{ .Values.agent.metricsPort }}
    - --spool-dir=/var/spool/mysql-pitr
    - --spool-max={{ .Values.agent.spool.max }}
    {{- if ne .Values.agent.ack "off" }}
    - --ack={{ .Values.agent.ack }}
    {{- end }}
    {{- with .Values.agent.follow }}
    - --follow={{ join "," . }}
    {{- end }}
    - --agent-id=$(POD_NAME)
    - --datadir={{ include "mysql-pitr.datadir" . }}
    - --log-format=json
    - --log-level={{ .Values.agent.logLevel }}
    {{- with .Values.backup.schedule }}
    - --schedule={{ . }}
    - --snapshot-method={{ $.Values.backup.method }}
    {{- if $.Values.backup.threads }}
    - --snapshot-threads={{ $.Values.backup.threads }}
    {{- end }}
    {{- if not $.Values.retention.cronJob.enabled }}
    {{- with (include "mysql-pitr.keepArgs" $ | trim) }}{{ . | nindent 4 }}{{ end }}
    {{- end }}
    {{- end }}
    {{- range .Values.agent.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- include "mysql-pitr.podEnv" . | nindent 4 }}
    - name: TMPDIR
      value: /tmp
    {{- with (include "mysql-pitr.awsEnv" . | trim) }}{{ . | nindent 4 }}{{ end }}
  ports:
    - name: metrics
      containerPort: {{ .Values.agent.metricsPort }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: metrics
    periodSeconds: 2
    failureThreshold: 30
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 6
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
    periodSeconds: 5
    timeoutSeconds: 5
    failureThreshold: 3
  {{- with .Values.agent.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "mysql-pitr.restrictedSecurityContext" (dict "uid" (include "mysql-pitr.agentUID" .) "readOnly" true) | nindent 4 }}
  volumeMounts:
    {{- if include "mysql-pitr.persistentSpool" . }}
    # The spool on the data volume, beside the datadir: a new pod resumes
    # from it. The kubelet creates the directory with the mode of the
    # volume's root, which fsGroup makes group-writable.
    - name: {{ include "mysql-pitr.dataVolume" . }}
      mountPath: /var/spool/mysql-pitr
      subPath: {{ include "mysql-pitr.spoolSubPath" . }}
    {{- else }}
    - name: pitr-spool
      mountPath: /var/spool/mysql-pitr
    {{- end }}
    - name: pitr-tmp
      mountPath: /tmp
    - name: pitr-password
      mountPath: {{ include "mysql-pitr.secretsDir" . }}/mysql
      readOnly: true
    {{- if .Values.mysql.tls.caSecret }}
    - name: pitr-mysql-ca
      mountPath: {{ include "mysql-pitr.secretsDir" . }}/mysql-ca
      readOnly: true
    {{- end }}
    {{- with (include "mysql-pitr.awsMounts" . | trim) }}{{ . | nindent 4 }}{{ end }}
    # The agent reads the restore marker in the datadir (a new timeline after
    # a restore); physical snapshots' tools read the datadir's files at the
    # server's path, read-write because they are not verified on a read-only mount.
    - name: {{ include "mysql-pitr.dataVolume" . }}
      mountPath: {{ .Values.persistence.mountPath }}
      readOnly: {{ ne .Values.backup.method "physical" }}
{{- end }}

{{/*
The restore init containers: the first copies the static binary into a
shared emptyDir, the second runs files/restore.sh in the server image, which
has the server binaries the restore's temporary server needs.
*/}}
{{- define "mysql-pitr.restoreInitContainers" -}}
{{- include "mysql-pitr.copyBinaryContainer" (dict "root" . "resources" .Values.restore.resources) }}
- name: pitr-restore
  image: {{ include "mysql-pitr.serverImage" . }}
  imagePullPolicy: {{ .Values.server.image.pullPolicy }}
  command: ["sh", "/opt/mysql-pitr/scripts/restore.sh"]
  # restore.sh reports the request it served here; kubectl mysql-pitr restore reads it
  # from the pod's status. On failure the end of the log takes its place,
  # so kubectl mysql-pitr restore can say why.
  terminationMessagePath: /dev/termination-log
  terminationMessagePolicy: FallbackToLogsOnError
  env:
    {{- include "mysql-pitr.podEnv" . | nindent 4 }}
    - name: PITR_BINARY
      value: /pitr-bin/mysql-pitr
    - name: PITR_REQUESTS_DIR
      value: /var/run/mysql-pitr/restore-requests
    - name: PITR_VOLUME
      value: {{ .Values.persistence.mountPath | quote }}
    - name: PITR_DATADIR
      value: {{ include "mysql-pitr.datadir" . | quote }}
    - name: PITR_THREADS
      value: {{ .Values.restore.threads | quote }}
    - name: PITR_TERMINATION_LOG
      value: /dev/termination-log
    - name: TMPDIR
      value: /tmp
    {{- with (include "mysql-pitr.storageEnv" . | trim) }}{{ . | nindent 4 }}{{ end }}
    {{- with (include "mysql-pitr.awsEnv" . | trim) }}{{ . | nindent 4 }}{{ end }}
    {{- with (include "mysql-pitr.ageIdentityEnv" . | trim) }}{{ . | nindent 4 }}{{ end }}
  {{- with .Values.restore.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "mysql-pitr.restrictedSecurityContext" (dict "uid" .Values.server.uid "readOnly" true) | nindent 4 }}
  volumeMounts:
    - name: {{ include "mysql-pitr.dataVolume" . }}
      mountPath: {{ .Values.persistence.mountPath }}
    - name: pitr-bin
      mountPath: /pitr-bin
      readOnly: true
    - name: pitr-scripts
      mountPath: /opt/mysql-pitr/scripts
      readOnly: true
    - name: pitr-restore-requests
      mountPath: /var/run/mysql-pitr/restore-requests
      readOnly: true
    - name: pitr-restore-tmp
      mountPath: /tmp
    {{- with (include "mysql-pitr.awsMounts" . | trim) }}{{ . | nindent 4 }}{{ end }}
    {{- with (include "mysql-pitr.ageIdentityMount" . | trim) }}{{ . | nindent 4 }}{{ end }}
{{- end }}

{{/*
The init container that hands the static binary from the mysql-pitr image to
a server image (the restore in the pod, the restore Job, the drill): dict
root, resources.
*/}}
{{- define "mysql-pitr.copyBinaryContainer" -}}
{{- $ := .root -}}
- name: pitr-copy-binary
  image: {{ include "mysql-pitr.agentImage" $ }}
  imagePullPolicy: {{ $.Values.agent.image.pullPolicy }}
  command: ["/mysql-pitr", "copy-self", "/pitr-bin/mysql-pitr"]
  {{- with .resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "mysql-pitr.restrictedSecurityContext" (dict "uid" $.Values.server.uid "readOnly" true) | nindent 4 }}
  volumeMounts:
    - name: pitr-bin
      mountPath: /pitr-bin
{{- end }}

{{/*
The pod-level settings of the restore and drill Jobs: the database pods'
ServiceAccount (for web identity) without its API token, the restricted
profile with the server's uid, the pods' scheduling values.
*/}}
{{- define "mysql-pitr.jobPodSpec" -}}
serviceAccountName: {{ include "mysql-pitr.jobServiceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
restartPolicy: Never
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.server.uid }}
  runAsGroup: {{ .Values.server.uid }}
  fsGroup: {{ .Values.server.uid }}
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes the agent and the restore need, in both modes. */}}
{{- define "mysql-pitr.pitrVolumes" -}}
{{- if not (include "mysql-pitr.persistentSpool" .) }}
- name: pitr-spool
  emptyDir:
    sizeLimit: {{ .Values.agent.spool.sizeLimit }}
{{- end }}
- name: pitr-tmp
  emptyDir: {}
- name: pitr-password
  secret:
    secretName: {{ include "mysql-pitr.pitrPasswordSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.mysql.pitrUser.secretKey }}
        path: password
{{- with (include "mysql-pitr.awsVolumes" . | trim) }}
{{ . }}
{{- end }}
{{- if .Values.mysql.tls.caSecret }}
- name: pitr-mysql-ca
  secret:
    secretName: {{ .Values.mysql.tls.caSecret }}
    defaultMode: 0444
    items:
      - key: {{ .Values.mysql.tls.caKey }}
        path: ca.crt
{{- end }}
{{- if .Values.restore.enabled }}
{{- with (include "mysql-pitr.ageIdentityVolume" . | trim) }}
{{ . }}
{{- end }}
- name: pitr-bin
  emptyDir:
    sizeLimit: 256Mi
- name: pitr-restore-tmp
  emptyDir: {}
- name: pitr-restore-requests
  configMap:
    name: {{ include "mysql-pitr.restoreRequestsName" . }}
    optional: true
{{- end }}
{{- if or .Values.restore.enabled (eq .Values.mode "full") }}
- name: pitr-scripts
  configMap:
    name: {{ include "mysql-pitr.fullname" . }}-scripts
    defaultMode: 0555
{{- end }}
{{- if eq .Values.mode "full" }}
# The init script, not executable: the images' entrypoint sources a *.sh of
# /docker-entrypoint-initdb.d that is not executable, with docker_process_sql
# defined, and runs one that is in a shell of its own, without it.
- name: pitr-initdb
  configMap:
    name: {{ include "mysql-pitr.fullname" . }}-scripts
    items:
      - key: init-pitr-user.sh
        path: 10-mysql-pitr-user.sh
        mode: 0444
{{- end }}
{{- end }}

{{/* Cross-field checks, and checks whose failure the schema cannot phrase clearly. */}}
{{- define "mysql-pitr.validate" -}}
{{- if not .Values.storage.url }}
{{- fail "storage.url is required: where the archive goes, e.g. --set storage.url=s3://my-bucket/mysql (S3 settings go in storage.region, storage.endpoint and storage.credentials)" }}
{{- end }}
{{- if not (regexMatch "^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^?#]*)?|file:///[^?#]*)$" .Values.storage.url) }}
{{- fail (printf "storage.url %q is not s3://BUCKET/PREFIX or file:///PATH (a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens): put S3 options in storage.region, storage.endpoint and storage.pathStyle, not in the URL, e.g. --set storage.url=s3://my-bucket/mysql" .Values.storage.url) }}
{{- end }}
{{- $keep := or .Values.backup.keepSnapshots .Values.backup.keepWithin }}
{{- if .Values.retention.cronJob.enabled }}
{{- if not $keep }}
{{- fail "retention.cronJob.enabled prunes by backup.keepSnapshots and backup.keepWithin: set at least one of them" }}
{{- end }}
{{- if and .Values.encryption.ageRecipients (not .Values.encryption.identitySecret) }}
{{- fail "retention.cronJob.enabled with encryption.ageRecipients needs encryption.identitySecret: prune reads the encrypted archive's manifests and records" }}
{{- end }}
{{- if and .Values.storage.perPod (eq .Values.mode "sidecar-only") (not .Values.retention.cronJob.pods) }}
{{- fail "retention.cronJob.pods is required for retention.cronJob in mode sidecar-only with storage.perPod: the names of the pods whose archives to prune" }}
{{- end }}
{{- else if and $keep (not .Values.backup.schedule) }}
{{- fail "backup.keepSnapshots and backup.keepWithin apply after scheduled snapshots: set backup.schedule, enable retention.cronJob, or set both to 0/\"\"" }}
{{- end }}
{{- if and (include "mysql-pitr.persistentSpool" .) (eq .Values.persistence.dataSubdir (include "mysql-pitr.spoolSubPath" .)) }}
{{- fail "persistence.dataSubdir is mysql-pitr-spool, the directory of the agent's persistent spool on the same volume: choose another, or set agent.spool.persistent to false" }}
{{- end }}
{{- if and .Values.storage.credentials.webIdentity.enabled (not .Values.storage.credentials.webIdentity.roleArn) }}
{{- fail "storage.credentials.webIdentity.roleArn is required when storage.credentials.webIdentity.enabled is true" }}
{{- end }}
{{- if and (eq .Values.mode "sidecar-only") (not .Values.mysql.pitrUser.secretName) }}
{{- fail "mysql.pitrUser.secretName is required in mode sidecar-only: the Secret holding the password of the account your server has for the agent, e.g. kubectl create secret generic db-pitr --from-literal=pitr-password=… and --set mysql.pitrUser.secretName=db-pitr" }}
{{- end }}
{{- if and (eq .Values.mode "sidecar-only") (not .Values.sidecarOnly.podSelector) }}
{{- fail "sidecarOnly.podSelector is required in mode sidecar-only: the labels of your StatefulSet's pods" }}
{{- end }}
{{- if and .Values.storage.caSecret .Values.storage.caConfigMap }}
{{- fail "storage.caSecret and storage.caConfigMap both name the S3 CA: set one" }}
{{- end }}
{{- if and .Values.drill.schedule .Values.storage.perPod (eq .Values.mode "sidecar-only") (not .Values.drill.pods) }}
{{- fail "drill.pods is required for drills in mode sidecar-only with storage.perPod: the names of the pods whose archives to drill" }}
{{- end }}
{{- if eq (int .Values.binlog.agentServerId) (int .Values.server.serverIdBase) }}
{{- fail "binlog.agentServerId must differ from server.serverIdBase (the servers' server_id)" }}
{{- end }}
{{- end }}
