{{/*
Names, labels and the few decisions more than one template needs (where Redis is, which Secret
holds what, how long a pod may take to stop). Templates include these instead of repeating logic.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "quicksilver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's resources (63 characters at most: a DNS label). */}}
{{- define "quicksilver.fullname" -}}
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

{{/* The bundled Redis' name (StatefulSet, its Services and NetworkPolicy). */}}
{{- define "quicksilver.redis.fullname" -}}
{{- printf "%s-redis" (include "quicksilver.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "quicksilver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every resource of the release (with the selector labels, which add the instance). */}}
{{- define "quicksilver.commonLabels" -}}
helm.sh/chart: {{ include "quicksilver.chart" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quicksilver
{{- end }}

{{/* Labels of the hub's resources. */}}
{{- define "quicksilver.labels" -}}
{{ include "quicksilver.commonLabels" . }}
{{ include "quicksilver.selectorLabels" . }}
{{- end }}

{{/* Selector labels of hub pods (immutable once deployed: never add to them). */}}
{{- define "quicksilver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quicksilver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end }}

{{/* Labels of the metrics Service: the hub's, with its own component so a ServiceMonitor finds it alone. */}}
{{- define "quicksilver.metricsLabels" -}}
{{ include "quicksilver.commonLabels" . }}
{{ include "quicksilver.metricsSelectorLabels" . }}
{{- end }}

{{/* What a ServiceMonitor selects the metrics Service by. */}}
{{- define "quicksilver.metricsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "quicksilver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: metrics
{{- end }}

{{/* Labels of the bundled Redis' resources. */}}
{{- define "quicksilver.redis.labels" -}}
{{ include "quicksilver.commonLabels" . }}
{{ include "quicksilver.redis.selectorLabels" . }}
{{- end }}

{{/* Selector labels of the bundled Redis pod. */}}
{{- define "quicksilver.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quicksilver.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The hub's ServiceAccount name. */}}
{{- define "quicksilver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "quicksilver.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The hub image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "quicksilver.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The JWT settings: this chart's auth.* values, or the reference chart's top-level names when set
(a values file written for the reference chart installs this one).
*/}}
{{- define "quicksilver.auth.existingSecret" -}}
{{- .Values.existingSecret | default .Values.auth.existingSecret }}
{{- end }}
{{- define "quicksilver.auth.publisherJwtKey" -}}
{{- .Values.publisherJwtKey | default .Values.auth.publisherJwtKey }}
{{- end }}
{{- define "quicksilver.auth.publisherJwtAlg" -}}
{{- .Values.publisherJwtAlg | default .Values.auth.publisherJwtAlg }}
{{- end }}
{{- define "quicksilver.auth.subscriberJwtKey" -}}
{{- .Values.subscriberJwtKey | default .Values.auth.subscriberJwtKey }}
{{- end }}
{{- define "quicksilver.auth.subscriberJwtAlg" -}}
{{- .Values.subscriberJwtAlg | default .Values.auth.subscriberJwtAlg }}
{{- end }}

{{/* Secret holding the JWT keys. */}}
{{- define "quicksilver.jwtSecretName" -}}
{{- default (include "quicksilver.fullname" .) (include "quicksilver.auth.existingSecret" .) }}
{{- end }}

{{/*
MERCURE_EXTRA_DIRECTIVES: extraDirectives, kept in the chart's Secret; else, with an existing Secret
(the reference chart's layout), its optional `extra-directives` key.
*/}}
{{- define "quicksilver.secretHasDirectives" -}}
{{- if .Values.extraDirectives }}true{{ end }}
{{- end }}

{{/* "true" when extraDirectives turns the debug page on (the debugger or playground directive). */}}
{{- define "quicksilver.directivesWantDebugger" -}}
{{- if regexMatch "(?m)^\\s*(debugger|playground)\\s*(#.*)?$" (toString .Values.extraDirectives) }}true{{ end }}
{{- end }}

{{/* "true" when the hub reaches Redis at all. */}}
{{- define "quicksilver.usesRedis" -}}
{{- if eq .Values.hub.transport "redis" }}true{{ end }}
{{- end }}

{{/* "true" when the chart's Secret must carry the external Redis URL. */}}
{{- define "quicksilver.secretHasRedisUrl" -}}
{{- if and (include "quicksilver.usesRedis" .) (not .Values.redis.enabled) .Values.externalRedis.url (not .Values.externalRedis.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the chart's Secret must carry the bundled Redis' password. */}}
{{- define "quicksilver.secretHasRedisPassword" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.enabled (not .Values.redis.auth.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the chart creates its Secret. */}}
{{- define "quicksilver.createSecret" -}}
{{- if or (not (include "quicksilver.auth.existingSecret" .)) (include "quicksilver.secretHasRedisUrl" .) (include "quicksilver.secretHasRedisPassword" .) (include "quicksilver.secretHasDirectives" .) }}true{{ end }}
{{- end }}

{{/* Secret and key of the bundled Redis' password. */}}
{{- define "quicksilver.redisPasswordSecretName" -}}
{{- default (include "quicksilver.fullname" .) .Values.redis.auth.existingSecret }}
{{- end }}
{{- define "quicksilver.redisPasswordSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretPasswordKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{/* Secret and key of the external Redis URL. */}}
{{- define "quicksilver.redisUrlSecretName" -}}
{{- default (include "quicksilver.fullname" .) .Values.externalRedis.existingSecret }}
{{- end }}
{{- define "quicksilver.redisUrlSecretKey" -}}
{{- if .Values.externalRedis.existingSecret }}{{ .Values.externalRedis.existingSecretUrlKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{/* host:port of the bundled Redis (its ClusterIP Service). */}}
{{- define "quicksilver.redis.address" -}}
{{- printf "%s.%s.svc:%d" (include "quicksilver.redis.fullname" .) .Release.Namespace (int .Values.redis.port) }}
{{- end }}

{{/*
Seconds Kubernetes waits between starting to stop a hub pod and killing it. The clock starts with
the preStop hook, so it covers the preStop sleep, then the drain window (SIGTERM: streams closed
spread over it), then a margin for the last writes and the process exit.
*/}}
{{- define "quicksilver.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.hub.drainWindowSeconds) (int .Values.lifecycle.terminationMarginSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $needed }}
{{- else if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds=%d is shorter than the preStop sleep + drain window + lifecycle.terminationMarginSeconds (%d): pods would be killed while their clients drain" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Seconds a new pod must stay ready before the Deployment counts it available and may stop the next
old pod: by default the time an old pod takes to leave (preStop sleep, then the drain window). With
maxSurge 1, Kubernetes does not count terminating pods, so without this the next old pod would
start draining while the previous one still does, and their clients would pile onto each other.
*/}}
{{- define "quicksilver.minReadySeconds" -}}
{{- if kindIs "invalid" .Values.minReadySeconds }}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.hub.drainWindowSeconds) }}
{{- else }}
{{- int .Values.minReadySeconds }}
{{- end }}
{{- end }}

{{/*
The bundled Redis' maxmemory: redis.maxmemory, or 70% of its container's memory limit in bytes
(the rest covers the append-only file rewrite's copy-on-write pages and client buffers), or
nothing when neither is set. Redis then refuses writes (noeviction) before the kernel OOM-kills it.
*/}}
{{- define "quicksilver.redis.maxmemory" -}}
{{- $r := .Values.redis }}
{{- if $r.maxmemory }}
{{- $r.maxmemory }}
{{- else }}
{{- $limit := toString (dig "limits" "memory" "" ($r.resources | default dict)) }}
{{- if $limit }}
{{- if not (regexMatch "^[0-9]+(k|Ki|M|Mi|G|Gi|T|Ti)?$" $limit) }}
{{- fail (printf "redis.resources.limits.memory %q: cannot derive maxmemory from it; set redis.maxmemory (e.g. \"256mb\")." $limit) }}
{{- end }}
{{- $units := dict "" 1 "k" 1000 "Ki" 1024 "M" 1000000 "Mi" 1048576 "G" 1000000000 "Gi" 1073741824 "T" 1000000000000 "Ti" 1099511627776 }}
{{- $number := regexReplaceAll "[A-Za-z]+$" $limit "" }}
{{- $unit := regexReplaceAll "^[0-9]+" $limit "" }}
{{- div (mul (int64 $number) (int64 (get $units $unit)) 70) 100 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express (or cannot explain well); a failed check stops the render with a
message saying what to change. Included by the Deployment, so every render runs it.
*/}}
{{- define "quicksilver.validate" -}}
{{- $redis := eq .Values.hub.transport "redis" }}
{{- if and (not $redis) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount is %d but hub.transport is \"memory\": in-memory nodes do not share updates, so a subscriber would miss what other pods receive. Set hub.transport=redis (with redis.enabled=true or externalRedis.*), or replicaCount=1." (int .Values.replicaCount)) }}
{{- end }}
{{- if and (not $redis) .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1) }}
{{- fail "autoscaling.enabled with maxReplicas > 1 needs hub.transport=redis: in-memory nodes do not share updates." }}
{{- end }}
{{- if and (not $redis) .Values.redis.enabled }}
{{- fail "redis.enabled is true but hub.transport is \"memory\": the bundled Redis would go unused. Set redis.enabled=false, or hub.transport=redis." }}
{{- end }}
{{- if $redis }}
{{- $sources := 0 }}
{{- if .Values.redis.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.externalRedis.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.externalRedis.existingSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if ne (int $sources) 1 }}
{{- fail (printf "hub.transport=redis needs exactly one Redis: redis.enabled=true (the bundled one), externalRedis.url, or externalRedis.existingSecret; %d are set." (int $sources)) }}
{{- end }}
{{- if and .Values.redis.enabled .Values.hub.redisTransport.cluster }}
{{- fail "hub.redisTransport.cluster=true needs a Redis Cluster: the bundled Redis is a single instance. Use externalRedis." }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas." }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, not both (set the other to null)." }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts." }}
{{- end }}
{{- if and .Values.hub.tls.secretName (or .Values.ingress.enabled .Values.httpRoute.enabled) }}
{{- fail "hub.tls.secretName makes the pods serve HTTPS only, which an Ingress or HTTPRoute in front would have to speak to its backends: terminate TLS there instead (ingress.tls, the Gateway's listener) and leave hub.tls.secretName empty, or expose the pods through a TCP load balancer (service.type=LoadBalancer) without ingress.enabled or httpRoute.enabled." }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway(s) the route attaches to." }}
{{- end }}
{{- if le (int .Values.lifecycle.terminationMarginSeconds) 10 }}
{{- fail (printf "lifecycle.terminationMarginSeconds is %d: after its drain window the hub waits up to 10 s for the last connections and then publishes the end of its subscriptions; a margin of 10 s or less lets SIGKILL cut that short. Use more than 10." (int .Values.lifecycle.terminationMarginSeconds)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- $a := .Values.autoscaling }}
{{- if and (kindIs "invalid" $a.targetCPUUtilizationPercentage) (kindIs "invalid" $a.targetMemoryUtilizationPercentage) (kindIs "invalid" $a.targetSubscribersPerPod) (not $a.extraMetrics) (not $a.customMetrics) }}
{{- fail "autoscaling.enabled needs at least one metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage, targetSubscribersPerPod or extraMetrics." }}
{{- end }}
{{- end }}
{{- end }}
