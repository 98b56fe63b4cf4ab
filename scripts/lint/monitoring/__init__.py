"""Lints deploy/grafana/*.json and deploy/prometheus/alerts*.yaml; run it as monitoring_lint.py.

metrics: the metrics contract; promql: PromQL helpers and contract checks; dashboard: the
dashboard checks; generate: inputs for promtool and tsc; alerts: the alert rule checks; broken:
broken copies for the negative control.
"""
