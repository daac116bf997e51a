{{/*
The dispatcher's Pod template, shared by the SQLite StatefulSet and the PostgreSQL Deployment.
Call with (dict "ctx" $ "store" "sqlite"|"postgres" "drain" true|false).
*/}}
{{- define "webhook-operator.dispatcherPodTemplate" -}}
{{- $ := .ctx -}}
{{- $v := $.Values -}}
{{- $pg := eq .store "postgres" -}}
{{- $query := include "webhook-operator.queryApi" $ -}}
metadata:
  labels:
    {{- if $pg }}
    {{- include "webhook-operator.dispatcherPostgresSelectorLabels" $ | nindent 4 }}
    {{- else }}
    {{- include "webhook-operator.selectorLabels" (dict "ctx" $ "component" "dispatcher") | nindent 4 }}
    {{- end }}
    {{- with $v.dispatcher.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.dispatcher.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "webhook-operator.dispatcherServiceAccountName" $ }}
  automountServiceAccountToken: true
  terminationGracePeriodSeconds: {{ $v.dispatcher.terminationGracePeriodSeconds }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.dispatcher.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  containers:
    - name: dispatcher
      image: {{ include "webhook-operator.image" $ | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - dispatcher
        - --listen-addr=0.0.0.0:{{ $v.service.ingestPort }}
        - --metrics-addr=0.0.0.0:{{ $v.service.metricsPort }}
        {{- if $pg }}
        # The shared store; DATABASE_URL comes from the Secret (env below), never from values.
        - --store=postgres
        - --database-pool-size={{ $v.store.postgres.poolSize }}
        {{- with $v.store.postgres.schema }}
        - --database-schema={{ . }}
        {{- end }}
        # Partition Leases in POD_NAMESPACE (the release namespace); identity POD_NAME.
        - --partitions={{ $v.dispatcher.partitions }}
        - --lease-prefix={{ include "webhook-operator.dispatcherLeasePrefix" $ }}
        - --lease-duration-seconds={{ $v.dispatcher.leaseDurationSeconds }}
        {{- else }}
        - --store-path=/var/lib/webhook-operator/dispatcher.db
        {{- end }}
        - --concurrency={{ $v.dispatcher.concurrency }}
        - --per-endpoint-concurrency={{ $v.dispatcher.perEndpointConcurrency }}
        - --max-body-bytes={{ $v.dispatcher.maxBodyBytes }}
        - --event-ttl-seconds={{ $v.dispatcher.eventTtlSeconds }}
        - --retention-days={{ $v.dispatcher.retentionDays }}
        - --status-interval-seconds={{ $v.dispatcher.statusIntervalSeconds }}
        - --status-writes-per-second={{ $v.dispatcher.statusWritesPerSecond }}
        - --auth-cache-seconds={{ $v.dispatcher.authCacheSeconds }}
        {{- range $v.dispatcher.tokenAudiences }}
        - --token-audience={{ . }}
        {{- end }}
        - --store-queue-capacity={{ $v.dispatcher.storeQueueCapacity }}
        - --security-log-retention={{ $v.dispatcher.securityLogRetention }}
        - --metrics-auth={{ $v.metrics.auth.enabled }}
        - --dashboard={{ $v.dispatcher.dashboard.enabled }}
        - --dashboard-session-ttl={{ $v.dispatcher.dashboard.sessionTTL }}
        - --dashboard-idle-timeout={{ $v.dispatcher.dashboard.idleTimeout }}
        - --dashboard-secure-cookie={{ $v.dispatcher.dashboard.secureCookie }}
        {{- if $query }}
        # The aggregated query API (APIService v1alpha1.query.webhooks.pitchey.io).
        - --query-api-addr=0.0.0.0:{{ $v.dispatcher.queryApi.port }}
        - --query-api-tls-cert-file=/etc/webhook-operator/query-api/tls.crt
        - --query-api-tls-key-file=/etc/webhook-operator/query-api/tls.key
        {{- end }}
        - --transform-workers={{ $v.dispatcher.transforms.workers }}
        - --transform-timeout={{ $v.dispatcher.transforms.timeout }}
        - --transform-memory-mib={{ $v.dispatcher.transforms.memoryMiB }}
        - --transform-max-output-bytes={{ $v.dispatcher.transforms.maxOutputBytes }}
        {{- range $v.dispatcher.egress.allowCidrs }}
        - --egress-allow-cidr={{ . }}
        {{- end }}
        {{- range $v.dispatcher.egress.denyCidrs }}
        - --egress-deny-cidr={{ . }}
        {{- end }}
        {{- if $v.dispatcher.egress.receiverCA.configMap }}
        - --receiver-ca-file=/etc/webhook-operator/receiver-ca/ca.crt
        {{- end }}
        {{- if $v.allowPlainHttp }}
        - --allow-plain-http
        {{- end }}
        {{- if $v.logJson }}
        - --log-json
        {{- end }}
        {{- if .drain }}
        # Drain: no new events; the store's backlog and retries are still delivered.
        - --drain
        {{- end }}
        {{- with $v.dispatcher.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        {{- include "webhook-operator.podEnv" $ | nindent 8 }}
        {{- if $pg }}
        - name: DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ $v.store.postgres.existingSecret }}
              key: {{ $v.store.postgres.secretKey }}
        {{- else }}
        # SQLite writes its temporary files here (the root filesystem is read-only).
        - name: TMPDIR
          value: /tmp
        {{- end }}
        {{- with $v.dispatcher.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: ingest
          containerPort: {{ $v.service.ingestPort }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $v.service.metricsPort }}
          protocol: TCP
        {{- if $query }}
        - name: query
          containerPort: {{ $v.dispatcher.queryApi.port }}
          protocol: TCP
        {{- end }}
      {{- include "webhook-operator.probes" $ | nindent 6 }}
      resources:
        {{- toYaml $v.dispatcher.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        {{- if not $pg }}
        - name: store
          mountPath: /var/lib/webhook-operator
        {{- end }}
        {{- if and $pg $v.store.postgres.caSecret }}
        # The database server's CA: sslrootcert=/etc/webhook-operator/postgres-ca/ca.crt in DATABASE_URL.
        - name: postgres-ca
          mountPath: /etc/webhook-operator/postgres-ca
          readOnly: true
        {{- end }}
        {{- if $v.dispatcher.egress.receiverCA.configMap }}
        - name: receiver-ca
          mountPath: /etc/webhook-operator/receiver-ca
          readOnly: true
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if $query }}
        # Re-read every minute: a renewed certificate is picked up without a restart.
        - name: query-api-tls
          mountPath: /etc/webhook-operator/query-api
          readOnly: true
        {{- end }}
        {{- with $v.dispatcher.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- if $query }}
    - name: query-api-tls
      secret:
        secretName: {{ include "webhook-operator.fullname" $ }}-query-api-tls
        defaultMode: 0444
    {{- end }}
    {{- with $v.dispatcher.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- if and (not $pg) (not $v.dispatcher.persistence.enabled) }}
    - name: store
      emptyDir: {}
    {{- end }}
    {{- with $v.dispatcher.egress.receiverCA.configMap }}
    - name: receiver-ca
      configMap:
        name: {{ . }}
        items:
          - key: {{ $v.dispatcher.egress.receiverCA.key | default "ca.crt" }}
            path: ca.crt
        defaultMode: 0444
    {{- end }}
    {{- if and $pg $v.store.postgres.caSecret }}
    - name: postgres-ca
      secret:
        secretName: {{ $v.store.postgres.caSecret }}
        items:
          - key: {{ $v.store.postgres.caKey | default "ca.crt" }}
            path: ca.crt
        defaultMode: 0444
    {{- end }}
  {{- with $v.dispatcher.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.dispatcher.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.dispatcher.affinity }}
  affinity:
    {{- toYaml $v.dispatcher.affinity | nindent 4 }}
  {{- else if $pg }}
  # Replicas prefer different nodes, so one node going away takes at most one of them.
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "webhook-operator.dispatcherPostgresSelectorLabels" $ | nindent 16 }}
  {{- end }}
  {{- with $v.dispatcher.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
