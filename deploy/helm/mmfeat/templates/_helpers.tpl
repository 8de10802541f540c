{{/* Names and labels shared by every object of the release. */}}
{{- define "mmfeat.name" -}}{{ .Release.Name }}-mmfeat{{- end }}

{{- define "mmfeat.labels" -}}
app.kubernetes.io/part-of: mmfeat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "mmfeat.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mmfeat.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end }}

{{/* The autoscaler's ceiling: the asked maximum, never above the uploads topic's partitions. */}}
{{- define "mmfeat.workerMax" -}}
{{- min .Values.worker.autoscaling.maxReplicas .Values.topics.uploadsPartitions -}}
{{- end }}

{{/* Kafka settings for every mmfeat process: plain values from the ConfigMap, credentials from the Secret. */}}
{{- define "mmfeat.kafkaEnv" -}}
- name: MMFEAT_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: MMFEAT_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: MMFEAT_SASL_MECHANISM
  value: {{ required "kafka.saslMechanism is needed with SASL" .Values.kafka.saslMechanism | quote }}
- name: MMFEAT_SASL_USERNAME
  valueFrom: { secretKeyRef: { name: {{ required "kafka.secretName is needed with SASL" .Values.kafka.secretName }}, key: sasl-username } }
- name: MMFEAT_SASL_PASSWORD
  valueFrom: { secretKeyRef: { name: {{ .Values.kafka.secretName }}, key: sasl-password } }
{{- end }}
{{- if hasSuffix "SSL" .Values.kafka.securityProtocol }}
- name: MMFEAT_SSL_CA_LOCATION
  value: /etc/mmfeat/kafka/ca.crt
{{- if .Values.kafka.mutualTls }}
- name: MMFEAT_SSL_CERTIFICATE_LOCATION
  value: /etc/mmfeat/kafka/tls.crt
- name: MMFEAT_SSL_KEY_LOCATION
  value: /etc/mmfeat/kafka/tls.key
{{- end }}
{{- end }}
- name: MMFEAT_UPLOADS_TOPIC
  value: {{ .Values.topics.uploads | quote }}
- name: MMFEAT_FEATURES_TOPIC
  value: {{ .Values.topics.features | quote }}
- name: MMFEAT_ENGAGEMENTS_TOPIC
  value: {{ .Values.topics.engagements | quote }}
- name: MMFEAT_PROFILES_TOPIC
  value: {{ .Values.topics.profiles | quote }}
{{- end }}

{{- define "mmfeat.kafkaVolume" -}}
{{- if hasSuffix "SSL" .Values.kafka.securityProtocol }}
- name: kafka-tls
  secret:
    secretName: {{ required "kafka.secretName is needed with TLS" .Values.kafka.secretName }}
    defaultMode: 0400
    items:
      - { key: ca.crt, path: ca.crt }
      {{- if .Values.kafka.mutualTls }}
      - { key: tls.crt, path: tls.crt }
      - { key: tls.key, path: tls.key }
      {{- end }}
{{- end }}
{{- end }}

{{- define "mmfeat.kafkaMount" -}}
{{- if hasSuffix "SSL" .Values.kafka.securityProtocol }}
- { name: kafka-tls, mountPath: /etc/mmfeat/kafka, readOnly: true }
{{- end }}
{{- end }}

{{- define "mmfeat.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
fsGroup: 10001
seccompProfile: { type: RuntimeDefault }
{{- end }}

{{- define "mmfeat.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: [ALL] }
{{- end }}
