{{/*
Names, labels and small computed values shared by every template.
Every object name in this chart comes from one of these helpers, so a
fullnameOverride or a second release never produces a colliding name.
*/}}

{{/* The chart name, overridable. */}}
{{- define "kubetrain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release-qualified base name of every namespaced object. A release whose name already
contains the chart name is not repeated ("kubetrain", not "kubetrain-kubetrain").
*/}}
{{- define "kubetrain.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding). They are qualified with the
release namespace: two releases of the same name in different namespaces must not fight over
one ClusterRole.
*/}}
{{- define "kubetrain.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "kubetrain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's objects: <fullname>-<component>, at most 63 characters. */}}
{{- define "kubetrain.componentName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "kubetrain.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" -}}
{{- end -}}

{{- define "kubetrain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of a component: stable across upgrades (selectors are immutable). */}}
{{- define "kubetrain.selectorLabels" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "kubetrain.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end -}}

{{/* All labels of a component's objects. */}}
{{- define "kubetrain.labels" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
helm.sh/chart: {{ include "kubetrain.chart" $root }}
{{ include "kubetrain.selectorLabels" (list $root $component) }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: kubetrain
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "kubetrain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetrain.componentName" (list . "operator")) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference from {repository, tag, digest}: a digest wins over a tag (skaffold's
remote profile sets it); an empty tag means the chart's appVersion.
Usage: include "kubetrain.image" (list $imageValues $.Chart.AppVersion)
*/}}
{{- define "kubetrain.image" -}}
{{- $img := index . 0 -}}
{{- $default := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $default $img.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "kubetrain.operatorImage" -}}
{{- include "kubetrain.image" (list .Values.operator.image .Chart.AppVersion) -}}
{{- end -}}

{{- define "kubetrain.trainerImage" -}}
{{- include "kubetrain.image" (list .Values.trainer.image .Chart.AppVersion) -}}
{{- end -}}

{{/* True ("true") when the operator watches every namespace. */}}
{{- define "kubetrain.clusterWide" -}}
{{- if eq .Values.watch.scope "cluster" -}}true{{- end -}}
{{- end -}}

{{/*
The namespaces the operator serves when namespace-scoped, as a JSON list (helpers can only
return strings). An empty watch.namespaces means the release namespace alone.
*/}}
{{- define "kubetrain.watchNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- .Values.watch.namespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/* The operator's command-line arguments (the process contract in docs/packaging.md). */}}
{{- define "kubetrain.operatorArgs" -}}
{{- if include "kubetrain.clusterWide" . }}
- --all-namespaces
{{- else }}
{{- range (include "kubetrain.watchNamespaces" . | fromJsonArray) }}
- --namespace
- {{ . }}
{{- end }}
{{- end }}
{{- with .Values.operator.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- MinIO */}}

{{- define "kubetrain.minio.fullname" -}}
{{- include "kubetrain.componentName" (list . "minio") -}}
{{- end -}}

{{/* The Secret holding the MinIO root credentials (also usable as a watch's credentialsSecretRef). */}}
{{- define "kubetrain.minio.secretName" -}}
{{- default (include "kubetrain.minio.fullname" .) .Values.minio.auth.existingSecret -}}
{{- end -}}

{{/* The S3 endpoint URL in-cluster clients use: the bundled MinIO or the external one. */}}
{{- define "kubetrain.minio.endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "kubetrain.minio.fullname" .) .Release.Namespace (int .Values.minio.service.port) -}}
{{- else -}}
{{- .Values.minio.external.endpoint -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- MLflow */}}

{{- define "kubetrain.mlflow.fullname" -}}
{{- include "kubetrain.componentName" (list . "mlflow") -}}
{{- end -}}

{{- define "kubetrain.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "kubetrain.mlflow.fullname" .) .Release.Namespace (int .Values.mlflow.service.port) -}}
{{- else -}}
{{- .Values.mlflow.external.trackingUri -}}
{{- end -}}
{{- end -}}

{{/*
MLflow's --allowed-hosts: every name the Service answers to in-cluster, with and without the
port (the Host header carries the port when it is not 80), plus loopback for port-forwards and
the configured extra hosts (e.g. the Ingress host). MLflow compares Host headers exactly unless
a pattern contains "*"; /health is exempt, so probes need no entry.
*/}}
{{- define "kubetrain.mlflow.allowedHosts" -}}
{{- $svc := include "kubetrain.mlflow.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $port := int .Values.mlflow.service.port -}}
{{- $hosts := list -}}
{{- range (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain)) -}}
{{- $hosts = append $hosts . -}}
{{- $hosts = append $hosts (printf "%s:%d" . $port) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*") -}}
{{- if and .Values.mlflow.ingress.enabled .Values.mlflow.ingress.host -}}
{{- $hosts = append $hosts .Values.mlflow.ingress.host -}}
{{- end -}}
{{- $hosts = concat $hosts .Values.mlflow.allowedHosts -}}
{{- $hosts | uniq | join "," -}}
{{- end -}}

{{/* ---------------------------------------------------------------- RBAC */}}

{{/*
The Secret names the operator may `get` when rbac.secretAccess.mode is "names": the configured
list, the bundled MinIO Secret, and the credentials of every DatasetWatch this chart creates.
Returned as a JSON list.
*/}}
{{- define "kubetrain.readableSecrets" -}}
{{- $names := .Values.rbac.secretAccess.names | default list -}}
{{- if .Values.minio.enabled -}}
{{- $names = append $names (include "kubetrain.minio.secretName" .) -}}
{{- end -}}
{{- range .Values.datasetWatches -}}
{{- with .spec -}}{{- with .source -}}{{- with .credentialsSecretRef -}}{{- with .name -}}
{{- $names = append $names . -}}
{{- end -}}{{- end -}}{{- end -}}{{- end -}}
{{- end -}}
{{- $names | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/*
The operator's permissions on namespaced resources, shared by the ClusterRole (cluster scope)
and the per-namespace Roles (namespaced scope). Why each rule exists is in docs/packaging.md.
*/}}
{{- define "kubetrain.namespacedRules" -}}
# DatasetWatches: the operator's own resource (kopf patches finalizers and progress annotations).
- apiGroups: ["kubetrain.dev"]
  resources: ["datasetwatches"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kubetrain.dev"]
  resources: ["datasetwatches/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion on Jobs/Deployments need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: ["kubetrain.dev"]
  resources: ["datasetwatches/finalizers"]
  verbs: ["update"]
# Events about watches (kopf posts core/v1 Events; events.k8s.io for newer clients).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Training Jobs, and their pods' termination messages (the trainer's result).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Serving rollout: Deployment + Service + Ingress per watch; ReplicaSets for rollout health.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "get", "list", "watch", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["create", "get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch"]
{{- $secrets := include "kubetrain.readableSecrets" . | fromJsonArray }}
{{- if eq .Values.rbac.secretAccess.mode "all" }}
# rbac.secretAccess.mode=all: every Secret of the namespace is readable (get only, no list/watch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- else if and (eq .Values.rbac.secretAccess.mode "names") $secrets }}
# The watches' credentials Secrets, by name only: other Secrets stay unreadable.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: {{ $secrets | toJson }}
  verbs: ["get"]
{{- end }}
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- operator settings */}}

{{/*
The operator's environment: its settings object reads KUBETRAIN_OPERATOR_<FIELD> for every
field (kubetrain_operator/settings.py). The chart computes ports, the peering name, the trainer
image and the MLflow URI; operator.settings overrides any of them or sets other fields.
Returned as a JSON object; rendered as env in name order.
*/}}
{{- define "kubetrain.operatorSettings" -}}
{{- $s := dict -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_HEALTH_PORT" (toString .Values.operator.healthPort) -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_METRICS_PORT" (toString .Values.operator.metricsPort) -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_PEERING_NAME" .Values.operator.peering.name -}}
{{- if .Values.operator.webhook.enabled -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_WEBHOOK_PORT" (toString .Values.operator.webhook.port) -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_WEBHOOK_PATH" .Values.operator.webhook.path -}}
{{- else -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_WEBHOOK_PORT" "0" -}}
{{- end -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_DEFAULT_IMAGE" (include "kubetrain.trainerImage" .) -}}
{{- with (include "kubetrain.mlflow.trackingUri" .) -}}
{{- $_ := set $s "KUBETRAIN_OPERATOR_DEFAULT_MLFLOW_URI" . -}}
{{- end -}}
{{- range $k, $v := .Values.operator.settings -}}
{{- $_ := set $s $k (toString $v) -}}
{{- end -}}
{{- $s | toJson -}}
{{- end -}}

{{/* ---------------------------------------------------------------- MinIO webhook */}}

{{/* The Secret with the webhook bearer token (generated by the chart unless one is given). */}}
{{- define "kubetrain.webhook.secretName" -}}
{{- default (include "kubetrain.componentName" (list . "webhook")) .Values.operator.webhook.token.existingSecret -}}
{{- end -}}

{{/* The URL MinIO's webhook target posts to: the operator's webhook Service. */}}
{{- define "kubetrain.webhook.endpoint" -}}
{{- printf "http://%s.%s.svc:%d%s" (include "kubetrain.componentName" (list . "webhook")) .Release.Namespace (int .Values.operator.webhook.port) .Values.operator.webhook.path -}}
{{- end -}}
