"""Recommendation-quality monitoring: metrics per time bucket, alerts, Prometheus, dashboard."""
