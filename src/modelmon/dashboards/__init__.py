"""Grafana dashboards and provisioning generated from code, and a report without Grafana."""
