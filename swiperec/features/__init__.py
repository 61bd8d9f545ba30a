"""Features: configuration, snapshot events, per-user history features, training examples."""
