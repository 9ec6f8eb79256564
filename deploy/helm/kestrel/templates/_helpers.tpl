{{/*
Names, labels and the values derived from several others. Everything that
more than one template needs is defined here once.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "kestrel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name (fullnameOverride, else <release>-<chart>, or just the
release name when it already contains the chart's name). At most 40
characters, so that "<fullname>-operator" and the pods' generated names stay
within the API server's limits.
*/}}
{{- define "kestrel.fullname" -}}
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

{{- define "kestrel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "kestrel.labels" -}}
helm.sh/chart: {{ include "kestrel.chart" . }}
app.kubernetes.io/name: {{ include "kestrel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kestrel
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "kestrel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kestrel.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of a component's objects and pods; same argument as selectorLabels. */}}
{{- define "kestrel.componentLabels" -}}
{{ include "kestrel.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kestrel.operatorName" -}}
{{- printf "%s-operator" (include "kestrel.fullname" .) }}
{{- end }}

{{- define "kestrel.agentName" -}}
{{- printf "%s-agent" (include "kestrel.fullname" .) }}
{{- end }}

{{/* The operator's Service (its name is also the TLS server name's first label). */}}
{{- define "kestrel.serviceName" -}}
{{- include "kestrel.operatorName" . }}
{{- end }}

{{/* <svc>.<ns>.svc: the name agents check the operator's certificate against. */}}
{{- define "kestrel.serviceHost" -}}
{{- printf "%s.%s.svc" (include "kestrel.serviceName" .) .Release.Namespace }}
{{- end }}

{{/* The four names the server certificate holds, as a list (JSON). */}}
{{- define "kestrel.serverNames" -}}
{{- $svc := include "kestrel.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{- define "kestrel.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "kestrel.fullname" .) }}
{{- end }}
{{- end }}

{{- define "kestrel.configMapName" -}}
{{- printf "%s-config" (include "kestrel.fullname" .) }}
{{- end }}

{{/* <registry>/<name>:<tag>; call with (dict "ctx" $ "name" "kestrel-operator"). */}}
{{- define "kestrel.image" -}}
{{- $img := .ctx.Values.image }}
{{- $tag := default .ctx.Chart.AppVersion $img.tag }}
{{- if $img.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" $img.registry) .name $tag }}
{{- else }}
{{- printf "%s:%s" .name $tag }}
{{- end }}
{{- end }}

{{/* Namespaces whose pods the operator ignores: excludeNamespaces, plus the release's own. */}}
{{- define "kestrel.excludedNamespaces" -}}
{{- $ns := .Values.excludeNamespaces | default list }}
{{- if .Values.excludeReleaseNamespace }}
{{- $ns = append $ns .Release.Namespace }}
{{- end }}
{{- $ns | uniq | join "," }}
{{- end }}

{{/* The Lease the operators elect their leader with (--lease-name; one per release). */}}
{{- define "kestrel.leaseName" -}}
{{ include "kestrel.operatorName" . }}
{{- end }}

{{/*
The operator's config file: .Values.config, plus the rule files of
.Values.rules (absolute paths next to config.yaml) and the LLM settings of
.Values.llm (scoring.llm). Rendered as YAML; `{}` leaves every default to
the operator.
*/}}
{{- define "kestrel.configYaml" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- if .Values.rules }}
{{- $paths := list }}
{{- range $file := keys .Values.rules | sortAlpha }}
{{- $paths = append $paths (printf "/etc/kestrel/config/%s" $file) }}
{{- end }}
{{- $_ := set $cfg "rules" (concat (get $cfg "rules" | default list) $paths) }}
{{- end }}
{{- if .Values.llm.endpoint }}
{{- $scoring := get $cfg "scoring" | default dict }}
{{- $llm := get $scoring "llm" | default dict }}
{{- $_ := set $llm "endpoint" .Values.llm.endpoint }}
{{- if .Values.llm.model }}
{{- $_ := set $llm "model" .Values.llm.model }}
{{- end }}
{{- $_ := set $llm "apiKeyEnv" "KESTREL_LLM_API_KEY" }}
{{- $_ := set $scoring "llm" $llm }}
{{- $_ := set $cfg "scoring" $scoring }}
{{- end }}
{{- if $cfg }}
{{- toYaml $cfg }}
{{- else }}
{{- "{}" }}
{{- end }}
{{- end }}
