{{/* Names */}}

{{- define "ergon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name; kept short enough for "-postgres" and "-operator". */}}
{{- define "ergon.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ergon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ergon.operator.fullname" -}}
{{- printf "%s-operator" (include "ergon.fullname" .) }}
{{- end }}

{{- define "ergon.postgres.fullname" -}}
{{- printf "%s-postgres" (include "ergon.fullname" .) }}
{{- end }}

{{- define "ergon.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "ergon.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ergon.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (printf "%s-worker" (include "ergon.fullname" .)) .Values.worker.serviceAccount.name }}
{{- else }}
{{- required "worker.serviceAccount.name is required when worker.serviceAccount.create is false" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels, per the Helm and Kubernetes recommended labels. */}}

{{- define "ergon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ergon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ergon.labels" -}}
helm.sh/chart: {{ include "ergon.chart" . }}
{{ include "ergon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ergon
{{- end }}

{{/* Images */}}

{{- define "ergon.operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ergon.worker.image" -}}
{{- $repository := default .Values.image.repository .Values.worker.image.repository }}
{{- $tag := default (printf "%s-worker" (default .Chart.AppVersion .Values.image.tag)) .Values.worker.image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* Namespaces */}}

{{/*
JSON list of the namespaces the operator watches: operator.watchNamespaces, or its one-namespace
alias operator.watchNamespace; empty: all namespaces (cluster-wide RBAC).
*/}}
{{- define "ergon.watchNamespaces" -}}
{{- $list := .Values.operator.watchNamespaces | default list }}
{{- $one := .Values.operator.watchNamespace | default "" }}
{{- if and $one $list }}
{{- fail "\n\nSet operator.watchNamespaces (a list) or its one-namespace alias operator.watchNamespace, not both." }}
{{- end }}
{{- if $one }}
{{- $list = list $one }}
{{- end }}
{{- $list | uniq | toJson }}
{{- end }}

{{/* Namespace where FlowRuns are handled by default: the first watched one, or the release's. */}}
{{- define "ergon.primaryWorkerNamespace" -}}
{{- $watched := include "ergon.watchNamespaces" . | fromJsonArray }}
{{- if $watched }}{{ first $watched }}{{ else }}{{ .Release.Namespace }}{{ end }}
{{- end }}

{{/*
JSON list of the namespaces that get the worker ServiceAccount (and the bundled DSN Secret): every
watched namespace (or the release's when watching all), then worker.extraNamespaces.
*/}}
{{- define "ergon.workerNamespaces" -}}
{{- $namespaces := include "ergon.watchNamespaces" . | fromJsonArray }}
{{- if not $namespaces }}
{{- $namespaces = list .Release.Namespace }}
{{- end }}
{{- range .Values.worker.extraNamespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/* The Postgres store */}}

{{/* Fails the render unless exactly one way to reach Postgres is configured. */}}
{{- define "ergon.validateStore" -}}
{{- if and .Values.postgres.deploy .Values.postgres.existingSecret }}
{{- fail "\n\nSet only one of postgres.existingSecret (your Postgres) and postgres.deploy=true (a bundled Postgres for local clusters), not both." }}
{{- end }}
{{- if not (or .Values.postgres.deploy .Values.postgres.existingSecret) }}
{{- fail "\n\nErgon needs Postgres. Either point it at yours with --set postgres.existingSecret=NAME (a Secret in the release namespace with the DSN under the key `dsn`, e.g. kubectl create secret generic NAME --from-literal=dsn=postgresql://user:pw@host:5432/db), or deploy a small one for a local cluster with --set postgres.deploy=true." }}
{{- end }}
{{- end }}

{{- define "ergon.storeSecretName" -}}
{{- if .Values.postgres.deploy }}
{{- include "ergon.postgres.fullname" . }}
{{- else }}
{{- .Values.postgres.existingSecret }}
{{- end }}
{{- end }}

{{- define "ergon.storeSecretKey" -}}
{{- if .Values.postgres.deploy }}dsn{{ else }}{{ .Values.postgres.existingSecretKey }}{{ end }}
{{- end }}

{{/* Tenancy: a schema and a role per namespace (tenancy.mode=namespace). */}}
{{- define "ergon.perNamespace" -}}
{{- if eq .Values.tenancy.mode "namespace" }}true{{ end }}
{{- end }}

{{/* The operator writes each namespace's DSN Secret itself (namespace mode, provision). */}}
{{- define "ergon.provisionTenants" -}}
{{- if and (include "ergon.perNamespace" .) (eq .Values.tenancy.secrets "provision") }}true{{ end }}
{{- end }}

{{/* The Secret worker pods read their DSN from, in their own namespace: name/key. */}}
{{- define "ergon.workerStoreSecret" -}}
{{- if include "ergon.perNamespace" . }}
{{- printf "%s/dsn" (include "ergon.tenantSecretName" .) }}
{{- else }}
{{- printf "%s/%s" (include "ergon.storeSecretName" .) (include "ergon.storeSecretKey" .) }}
{{- end }}
{{- end }}

{{- define "ergon.tenantSecretName" -}}
{{- default (printf "%s-tenant-store" (include "ergon.fullname" .)) .Values.tenancy.secretName }}
{{- end }}

{{/*
Password of the bundled Postgres: the value if given; otherwise the one already in the release's
Secret (so upgrades keep it); otherwise a new random one. Computed once per render and cached in
.Values, because the Secret is rendered once per worker namespace.
*/}}
{{- define "ergon.postgres.password" -}}
{{- if .Values.postgres.password }}
{{- .Values.postgres.password }}
{{- else }}
{{- if not (hasKey .Values.postgres "generatedPassword") }}
{{- $password := randAlphaNum 32 }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ergon.postgres.fullname" .) }}
{{- if and $existing (hasKey $existing "data") (hasKey $existing.data "password") }}
{{- $password = index $existing.data "password" | b64dec }}
{{- end }}
{{- $_ := set .Values.postgres "generatedPassword" $password }}
{{- end }}
{{- .Values.postgres.generatedPassword }}
{{- end }}
{{- end }}

{{/* The bundled Postgres's superuser Secret: release namespace only, never a worker namespace. */}}
{{- define "ergon.postgres.adminSecretName" -}}
{{- printf "%s-admin" (include "ergon.postgres.fullname" .) }}
{{- end }}

{{/*
Password of the bundled Postgres's superuser `postgres`: the one already in the release's admin
Secret (so upgrades keep it), otherwise a new random one; cached like ergon.postgres.password.
*/}}
{{- define "ergon.postgres.adminPassword" -}}
{{- if not (hasKey .Values.postgres "generatedAdminPassword") }}
{{- $password := randAlphaNum 32 }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ergon.postgres.adminSecretName" .) }}
{{- if and $existing (hasKey $existing "data") (hasKey $existing.data "password") }}
{{- $password = index $existing.data "password" | b64dec }}
{{- end }}
{{- $_ := set .Values.postgres "generatedAdminPassword" $password }}
{{- end }}
{{- .Values.postgres.generatedAdminPassword }}
{{- end }}

{{/* The DSN of the bundled Postgres, reachable from every namespace. */}}
{{- define "ergon.postgres.dsn" -}}
{{- printf "postgresql://%s:%s@%s.%s.svc:5432/%s" .Values.postgres.user (include "ergon.postgres.password" .) (include "ergon.postgres.fullname" .) .Release.Namespace .Values.postgres.database }}
{{- end }}

{{/* Security */}}

{{/* Pod-level securityContext meeting the `restricted` Pod Security profile. */}}
{{- define "ergon.restrictedPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level securityContext meeting the `restricted` Pod Security profile. */}}
{{- define "ergon.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/*
The worker policy as JSON (ERGON_WORKER_POLICY), images defaulted to the worker image's
repository so the operator and the ValidatingAdmissionPolicy apply the same list.
*/}}
{{- define "ergon.workerPolicy" -}}
{{- $policy := omit .Values.workerPolicy "admissionPolicy" }}
{{- if not $policy.images }}
{{- $repository := default .Values.image.repository .Values.worker.image.repository }}
{{- $_ := set $policy "images" (list (printf "%s:*" $repository) (printf "%s@*" $repository)) }}
{{- end }}
{{- toJson $policy }}
{{- end }}

{{/* A CEL regular expression matching any of the glob patterns in the list. */}}
{{- define "ergon.globRegex" -}}
{{- $parts := list }}
{{- range . }}
{{- $parts = append $parts (regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" ".") }}
{{- end }}
{{- printf "^(%s)$" (join "|" $parts) }}
{{- end }}
