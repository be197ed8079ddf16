{{/* Names, labels and the decisions several templates share. */}}

{{- define "cce-cni-guard.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cce-cni-guard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cce-cni-guard.labels" -}}
app.kubernetes.io/name: {{ include "cce-cni-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cce-cni-guard
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "cce-cni-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cce-cni-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "cce-cni-guard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "cce-cni-guard.serviceName" -}}
{{- include "cce-cni-guard.fullname" . -}}
{{- end -}}

{{- define "cce-cni-guard.tlsSecretName" -}}
{{- if eq .Values.certs.mode "existingSecret" -}}
{{- .Values.certs.existingSecret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "cce-cni-guard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "cce-cni-guard.webhookConfigName" -}}
{{- include "cce-cni-guard.fullname" . -}}
{{- end -}}

{{/* "true" when the webhook is scoped by matchConditions, "" when by selectors. */}}
{{- define "cce-cni-guard.useMatchConditions" -}}
{{- $mode := .Values.webhook.matchConditions -}}
{{- if kindIs "bool" $mode -}}
{{- if $mode }}true{{ end -}}
{{- else if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version -}}
true
{{- end -}}
{{- end -}}

{{/* The namespaces of the guarded workloads, sorted and unique. */}}
{{- define "cce-cni-guard.workloadNamespaces" -}}
{{- $namespaces := list -}}
{{- range .Values.workloads -}}
{{- $namespaces = append $namespaces .namespace -}}
{{- end -}}
{{- toJson ($namespaces | uniq | sortAlpha) -}}
{{- end -}}

{{/* The workloads' API resource (daemonsets, deployments). */}}
{{- define "cce-cni-guard.resource" -}}
{{- if eq .kind "DaemonSet" }}daemonsets{{ else }}deployments{{ end -}}
{{- end -}}

{{/* Refuses values that would let a guard outage block its own recovery. */}}
{{- define "cce-cni-guard.checks" -}}
{{- range .Values.workloads -}}
{{- if eq .namespace $.Release.Namespace -}}
{{- fail (printf "the guard must run in its own namespace: release namespace %q also holds the guarded %s %s (install with -n cce-cni-guard)" $.Release.Namespace .kind .name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.upgrade.enabled (not .Values.upgrade.to) -}}
{{- fail "upgrade.enabled is true but upgrade.to is empty: set the target version, e.g. --set upgrade.to=v1.9.5" -}}
{{- end -}}
{{- if and .Values.pdb.enabled (ge (int .Values.pdb.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "pdb.minAvailable (%d) must be below replicaCount (%d), or no node holding a guard replica can be drained" (int .Values.pdb.minAvailable) (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (kindIs "bool" .Values.webhook.matchConditions) .Values.webhook.matchConditions (semverCompare "<1.28.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "webhook.matchConditions=true needs Kubernetes 1.28 or later (this cluster is %s, where they are off and the webhook would match every DaemonSet and Deployment of the namespace): use auto or false" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and (eq .Values.certs.mode "existingSecret") (or (not .Values.certs.existingSecret.name) (not .Values.certs.existingSecret.caBundle)) -}}
{{- fail "certs.mode=existingSecret needs certs.existingSecret.name and certs.existingSecret.caBundle (base64 of the CA's PEM)" -}}
{{- end -}}
{{- end -}}
