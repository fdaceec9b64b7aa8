"""Alert conditions declared once, compiled to Prometheus, Alertmanager and Grafana."""
