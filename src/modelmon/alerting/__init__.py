"""Alert conditions declared once, compiled to Prometheus, Alertmanager and Grafana.

- ``config``: ``modelmon.yaml`` (channels, routing, built-in and custom rules), validated.
- ``builtins`` and ``prometheus_rules``: the alert rules and their promtool tests.
- ``alertmanager`` and ``templates``: the Alertmanager configuration and message templates.
- ``grafana``: Grafana alerting provisioning.
- ``export``: every file at once (``modelmon alerts export``).
- ``bridge``: ``modelmon notify-bridge``, webhooks to any Apprise URL.
- ``stack`` and ``local``: a local Alertmanager and Prometheus (``modelmon stack up``, the demo).

See docs/alerting.md.
"""
