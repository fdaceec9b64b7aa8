"""Starting the real monitoring components (Prometheus, later Alertmanager) locally."""
