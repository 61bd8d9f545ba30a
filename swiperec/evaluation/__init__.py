"""Evaluation: metrics, baselines, blessing and the report."""
