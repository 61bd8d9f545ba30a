"""Embeddings in pgvector: versioned sets, the batch writer and live updates."""
