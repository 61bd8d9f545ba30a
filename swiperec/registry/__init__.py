"""The model registry: model versions, their stage and evaluations, in PostgreSQL."""
