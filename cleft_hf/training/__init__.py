"""Training utilities: configuration, optimiser and schedule, checkpointing, collation."""
