"""Data: table contracts, the synthetic generator with its ground truth, loading and CSV import."""
