"""Alertmanager notification templates: one readable message per alert, in every channel.

Each alert shows its state, name and severity, the summary and description, the labels
that say where (model, version, feature, method; experiment and run for training), the
value and the threshold, and the runbook link. Written to ``modelmon.tmpl`` next to
``alertmanager.yml`` by the export. The drift method is an annotation of ModelmonFeatureDrift
(a label would split one drift episode into two alerts), a label of custom rules.
"""

TEMPLATES = r"""
{{ define "modelmon.title" -}}
[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }}
{{- with .CommonLabels.model }} model {{ . }}{{ end }}{{ with .CommonLabels.version }} version {{ . }}{{ end }}
{{- with .CommonLabels.experiment }} experiment {{ . }}{{ end }}{{ with .CommonLabels.run }} run {{ . }}{{ end }}
{{- end }}

{{ define "modelmon.where" -}}
{{ with .Labels.model }}model: {{ . }}{{ end }}{{ with .Labels.version }}  version: {{ . }}{{ end }}
{{- with .Labels.feature }}  feature: {{ . }}{{ end }}{{ with or .Labels.method .Annotations.method }}  method: {{ . }}{{ end }}
{{- with .Labels.experiment }}experiment: {{ . }}{{ end }}{{ with .Labels.run }}  run: {{ . }}{{ end }}
{{- if not .Labels.model }}{{ with .Labels.instance }}  instance: {{ . }}{{ end }}{{ end }}
{{- end }}

{{ define "modelmon.alert.text" -}}
{{ if eq .Status "firing" }}FIRING{{ else }}RESOLVED{{ end }} {{ .Labels.alertname }} ({{ .Labels.severity }}): {{ .Annotations.summary }}
{{ template "modelmon.where" . }}
value: {{ .Annotations.value }}  threshold: {{ .Annotations.threshold }}
{{ .Annotations.description }}
runbook: {{ .Annotations.runbook_url }}
{{- end }}

{{ define "modelmon.text" -}}
{{ range .Alerts.Firing }}{{ template "modelmon.alert.text" . }}

{{ end }}{{ range .Alerts.Resolved }}{{ template "modelmon.alert.text" . }}

{{ end }}
{{- end }}

{{ define "modelmon.runbook" }}{{ (index .Alerts 0).Annotations.runbook_url }}{{ end }}

{{ define "modelmon.sms" -}}
{{ .Status | toUpper }} {{ .CommonLabels.alertname }}{{ with .CommonLabels.model }} {{ . }}{{ end }}: {{ (index .Alerts 0).Annotations.summary }} {{ (index .Alerts 0).Annotations.runbook_url }}
{{- end }}

{{ define "modelmon.telegram" -}}
<b>{{ template "modelmon.title" . }}</b>
{{ range .Alerts }}
<b>{{ if eq .Status "firing" }}FIRING{{ else }}RESOLVED{{ end }} {{ .Labels.alertname | html }}</b> ({{ .Labels.severity | html }})
{{ .Annotations.description | html }}
{{ with .Labels.model }}model: {{ . | html }}{{ end }}{{ with .Labels.version }}  version: {{ . | html }}{{ end }}{{ with .Labels.feature }}  feature: {{ . | html }}{{ end }}
value: {{ .Annotations.value | html }}, threshold: {{ .Annotations.threshold | html }}
<a href="{{ .Annotations.runbook_url | html }}">runbook</a>
{{ end }}
{{- end }}

{{ define "modelmon.email.html" -}}
<html><body style="font-family: sans-serif">
<h3>{{ template "modelmon.title" . }}</h3>
{{ range .Alerts }}
<div style="margin-bottom: 1.5em">
<b>{{ if eq .Status "firing" }}FIRING{{ else }}RESOLVED{{ end }} {{ .Labels.alertname }}</b> ({{ .Labels.severity }}): {{ .Annotations.summary }}<br>
{{ .Annotations.description }}<br>
<table>
{{ range .Labels.SortedPairs }}<tr><td>{{ .Name }}</td><td>{{ .Value }}</td></tr>
{{ end }}<tr><td>value</td><td>{{ .Annotations.value }}</td></tr>
<tr><td>threshold</td><td>{{ .Annotations.threshold }}</td></tr>
</table>
<a href="{{ .Annotations.runbook_url }}">runbook: {{ .Annotations.runbook_url }}</a>
</div>
{{ end }}
</body></html>
{{- end }}
"""
