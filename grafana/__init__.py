"""Grafana dashboards for the exporter, generated from code (see ``grafana.build``)."""
