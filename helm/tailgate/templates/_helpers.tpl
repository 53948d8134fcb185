{{/* Names and labels. */}}
{{- define "tailgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tailgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "tailgate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "tailgate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tailgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tailgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The route tier's pods: a name of their own, so that neither the main
Deployment, its Service nor its PodDisruptionBudget select them. */}}
{{- define "tailgate.routeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tailgate.name" . }}-route
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tailgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tailgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
tailgate/environment: {{ .Values.environment | quote }}
{{- end }}

{{- define "tailgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tailgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tailgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
One policy file of the chart's copy (files/policies/<file>), parsed, as YAML.
An empty map if the file is absent and optional; the release fails if it is
absent and required, or not valid YAML.
Args: dict "root" $ "file" "production.yaml" "required" true
*/}}
{{- define "tailgate.policy" -}}
{{- $path := printf "files/policies/%s" .file }}
{{- $text := .root.Files.Get $path }}
{{- if not $text }}
{{- if .required }}
{{- fail (printf "environment %q: the chart has no %s. Add policies/%s to the repository and run `scripts/helm sync`, or pick one of: %s" .root.Values.environment $path .file (include "tailgate.environments" .root)) }}
{{- end }}
{{- dict | toYaml }}
{{- else }}
{{- $p := fromYaml $text }}
{{- if hasKey $p "Error" }}
{{- fail (printf "%s is not valid YAML: %s" $path (get $p "Error")) }}
{{- end }}
{{- $p | toYaml }}
{{- end }}
{{- end }}

{{/* The environments the chart has policy files for, for error messages. */}}
{{- define "tailgate.environments" -}}
{{- $envs := list }}
{{- range $path, $_ := .Files.Glob "files/policies/*.yaml" }}
{{- $envs = append $envs (base $path | trimSuffix ".yaml") }}
{{- end }}
{{- join ", " $envs }}
{{- end }}

{{/*
Whole seconds in a duration as tailgate writes them: "30s", "5m", "1m 30s",
"1500ms" (rounded up), "1h".
*/}}
{{- define "tailgate.seconds" -}}
{{- $d := toString . }}
{{- if regexReplaceAll "([0-9]+(ms|h|m|s))|\\s" $d "" }}
{{- fail (printf "cannot read the duration %q: write it with ms, s, m or h (e.g. 30s, 1m 30s) for the chart to size terminationGracePeriodSeconds" $d) }}
{{- end }}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|h|m|s)" $d -1 }}
{{- $n := regexFind "^[0-9]+" . | atoi }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- if eq $unit "ms" }}{{ $ms = add $ms $n }}
{{- else if eq $unit "s" }}{{ $ms = add $ms (mul $n 1000) }}
{{- else if eq $unit "m" }}{{ $ms = add $ms (mul $n 60000) }}
{{- else }}{{ $ms = add $ms (mul $n 3600000) }}
{{- end }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/*
The settings the chart derives figures from, as the pods will see them:
values `settings` over <environment>.yaml over default.yaml over tailgate's
defaults. Returns YAML: maxBytes, drainSeconds, librdkafkaOptions, and
nonRuleSettings (the policy files without their `rules`, for the checksum).
*/}}
{{- define "tailgate.effective" -}}
{{- $default := include "tailgate.policy" (dict "root" . "file" "default.yaml" "required" false) | fromYaml }}
{{- $env := dict }}
{{- if ne .Values.environment "default" }}
{{- $env = include "tailgate.policy" (dict "root" . "file" (printf "%s.yaml" .Values.environment) "required" true) | fromYaml }}
{{- else if not $default }}
{{- $_ := include "tailgate.policy" (dict "root" . "file" "default.yaml" "required" true) }}
{{- end }}
{{- $values := .Values.settings | default dict }}
{{- $maxBytes := 536870912 }}
{{- $remembered := 67108864 }}
{{- $drain := "30s" }}
{{- $options := list }}
{{- range (list $default $env $values) }}
{{- with .buffer }}{{ if hasKey . "max_bytes" }}{{ $maxBytes = .max_bytes }}{{ end }}{{ end }}
{{- with .decision }}{{ if hasKey . "remembered_bytes" }}{{ $remembered = .remembered_bytes }}{{ end }}{{ end }}
{{- with .kafka }}
{{- if hasKey . "drain_timeout" }}{{ $drain = .drain_timeout }}{{ end }}
{{- if hasKey . "librdkafka_options" }}{{ $options = .librdkafka_options | default list }}{{ end }}
{{- end }}
{{- end }}
maxBytes: {{ $maxBytes | int64 }}
rememberedBytes: {{ $remembered | int64 }}
drainSeconds: {{ include "tailgate.seconds" $drain }}
librdkafkaOptions: {{ $options | toJson }}
nonRuleSettings:
  default: {{ omit $default "rules" | toJson }}
  environment: {{ omit $env "rules" | toJson }}
{{- end }}

{{/* Memory request and limit in MiB (see `memory` in values.yaml). */}}
{{- define "tailgate.memoryMiB" -}}
{{- $eff := include "tailgate.effective" . | fromYaml }}
{{- $m := .Values.memory }}
{{- $buffer := ceil (mulf (divf (float64 $eff.maxBytes) 1048576.0) (float64 $m.bufferFactor)) | int64 }}
{{- $remembered := ceil (divf (float64 $eff.rememberedBytes) 1048576.0) | int64 }}
{{- add $buffer (int64 $m.overheadMiB) $remembered }}
{{- end }}

{{/* The librdkafka options the chart adds for TLS and SASL. */}}
{{- define "tailgate.securityOptions" -}}
{{- $opts := list }}
{{- $tls := .Values.kafkaTLS }}
{{- $sasl := .Values.kafkaSASL }}
{{- if and $tls.enabled $sasl.enabled }}
{{- $opts = append $opts "security.protocol=SASL_SSL" }}
{{- else if $tls.enabled }}
{{- $opts = append $opts "security.protocol=SSL" }}
{{- else if $sasl.enabled }}
{{- $opts = append $opts "security.protocol=SASL_PLAINTEXT" }}
{{- end }}
{{- if $tls.enabled }}
{{- if not $tls.secretName }}{{ fail "kafkaTLS.enabled needs kafkaTLS.secretName" }}{{ end }}
{{- $opts = append $opts (printf "ssl.ca.location=/etc/tailgate/kafka-tls/%s" $tls.caKey) }}
{{- if or $tls.certKey $tls.keyKey }}
{{- if not (and $tls.certKey $tls.keyKey) }}{{ fail "kafkaTLS: set both certKey and keyKey for a client certificate, or neither" }}{{ end }}
{{- $opts = append $opts (printf "ssl.certificate.location=/etc/tailgate/kafka-tls/%s" $tls.certKey) }}
{{- $opts = append $opts (printf "ssl.key.location=/etc/tailgate/kafka-tls/%s" $tls.keyKey) }}
{{- end }}
{{- end }}
{{- if $sasl.enabled }}
{{- if not $sasl.secretName }}{{ fail "kafkaSASL.enabled needs kafkaSASL.secretName" }}{{ end }}
{{- $opts = append $opts (printf "sasl.mechanism=%s" $sasl.mechanism) }}
{{- /* From the pod's environment (the Secret), put in by tailgate when it reads its settings. */}}
{{- $opts = append $opts "sasl.username=${env:TAILGATE_SASL_USERNAME}" }}
{{- $opts = append $opts "sasl.password=${env:TAILGATE_SASL_PASSWORD}" }}
{{- end }}
{{- $opts | toJson }}
{{- end }}

{{/* settings.yaml: values `settings`, the metrics port, security options. */}}
{{- define "tailgate.settingsFile" -}}
{{- $s := deepCopy (.Values.settings | default dict) }}
{{- if hasKey $s "rules" }}
{{- fail "settings.rules: rules belong in the policy file (policies/<environment>.yaml), where a change is a hot reload instead of a restart" }}
{{- end }}
{{- if hasKey ($s.metrics | default dict) "listen" }}
{{- fail "settings.metrics.listen: set metrics.port instead; the probes and the Service use it" }}
{{- end }}
{{- $_ := set $s "metrics" (merge (dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) ($s.metrics | default dict)) }}
{{- $eff := include "tailgate.effective" . | fromYaml }}
{{- $security := include "tailgate.securityOptions" . | fromJsonArray }}
{{- $kafka := deepCopy ($s.kafka | default dict) }}
{{- $renderOptions := or $security (hasKey $kafka "librdkafka_options") }}
{{- $options := list }}
{{- if $renderOptions }}
{{- $options = concat ($eff.librdkafkaOptions | default list) $security }}
{{- end }}
{{- $kafka = omit $kafka "librdkafka_options" }}
{{- $rest := omit $s "kafka" -}}
# Rendered by the tailgate Helm chart from its values (`settings`, `metrics`,
# `kafkaTLS`, `kafkaSASL`), layered over the policy files with --config.
{{ toYaml $rest }}
{{- if or $kafka $renderOptions }}
kafka:
{{- if $kafka }}
{{ toYaml $kafka | indent 2 }}
{{- end }}
{{- if $renderOptions }}
  # With kafkaSASL, the credentials are `${env:…}` references to the pod's
  # environment, filled from the Secret; tailgate expands them at start.
  librdkafka_options:{{ if not $options }} []{{ end }}
{{- range $options }}
    - {{ . | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the pods read settings.yaml. */}}
{{- define "tailgate.settingsPath" -}}
/etc/tailgate/settings/settings.yaml
{{- end }}

{{/*
Restart the pods when settings that are read only at start change: the
chart's settings.yaml and the policy files' non-rule sections. The rules are
left out on purpose: tailgate reloads them when the mounted file changes.
*/}}
{{- define "tailgate.settingsChecksum" -}}
{{- $eff := include "tailgate.effective" . | fromYaml }}
{{- list (include "tailgate.settingsFile" .) ($eff.nonRuleSettings | toJson) .Values.kafkaTLS .Values.kafkaSASL | toJson | sha256sum }}
{{- end }}
