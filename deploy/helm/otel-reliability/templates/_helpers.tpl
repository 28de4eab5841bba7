{{/* Names: every object is "<release>-otel-reliability[-part]" unless the release name already says it. */}}
{{- define "otel-reliability.fullname" -}}
{{- if contains "otel-reliability" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-otel-reliability" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otel-reliability.labels" -}}
app.kubernetes.io/name: otel-reliability
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "otel-reliability.selector" -}}
app.kubernetes.io/name: otel-reliability
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* memory_limiter's limit: 80% of the container's memory, so the collector refuses data before it is killed. */}}
{{- define "otel-reliability.limiterMiB" -}}
{{- div (mul (int .) 4) 5 -}}
{{- end -}}

{{/* The gateway pool as ONE gRPC target: every pod of the headless Service, spread by round robin. */}}
{{- define "otel-reliability.gatewayTarget" -}}
{{- printf "dns:///%s-gateway.%s.svc.cluster.local:4417" (include "otel-reliability.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "otel-reliability.healthSecret" -}}
{{- .Values.healthToken.existingSecret | default (printf "%s-health" (include "otel-reliability.fullname" .)) -}}
{{- end -}}

{{/* The agent container: a DaemonSet's only container, or a sidecar in the app's pod (then on localhost). */}}
{{- define "otel-reliability.agentContainer" -}}
{{- $listen := ternary "127.0.0.1" "0.0.0.0" (eq .Values.agent.mode "sidecar") -}}
- name: otel-agent
  image: "{{ .Values.collector.image.repository }}:{{ .Values.collector.image.tag }}"
  imagePullPolicy: {{ .Values.collector.image.pullPolicy }}
  args: ["--config=/conf/agent.yaml"]
  env:
    - {name: OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT, value: "{{ $listen }}:4317"}
    - {name: OTEL_RELIABILITY_COLLECTOR_HTTP_ENDPOINT, value: "{{ $listen }}:4318"}
    - {name: OTEL_RELIABILITY_COLLECTOR_HEALTH_ENDPOINT, value: "0.0.0.0:13133"}
    - {name: OTEL_RELIABILITY_COLLECTOR_MEMORY_LIMIT_MIB, value: "{{ include "otel-reliability.limiterMiB" .Values.agent.memoryMiB }}"}
    - {name: OTEL_RELIABILITY_GATEWAY_ENDPOINT, value: "{{ include "otel-reliability.gatewayTarget" . }}"}
    - {name: OTEL_RELIABILITY_COLLECTOR_LOG_LEVEL, value: {{ .Values.collector.logLevel | quote }}}
  ports:
    - {name: otlp-grpc, containerPort: 4317, protocol: TCP}
    - {name: otlp-http, containerPort: 4318, protocol: TCP}
  readinessProbe:
    httpGet: {path: /, port: 13133}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /, port: 13133}
    periodSeconds: 10
    failureThreshold: 3
  resources:
    requests: {cpu: {{ .Values.agent.cpu | quote }}, memory: "{{ .Values.agent.memoryMiB }}Mi"}
    limits: {memory: "{{ .Values.agent.memoryMiB }}Mi"}
  volumeMounts:
    - {name: otel-agent-config, mountPath: /conf, readOnly: true}
{{- end -}}
