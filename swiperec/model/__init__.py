"""The two-tower model: towers, loss, training input, training and export."""
