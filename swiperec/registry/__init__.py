"""The model registry, in PostgreSQL: `versions.py` is the life of a model version (its name,
the run that owns it, its stage, its evaluation, promotion to serving), `lineage.py` what
produced it (ML Metadata's artifacts, executions and events) and the aliases that point at it."""
