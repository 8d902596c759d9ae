"""The trainer: both stages through one runner (`runner.run_stage`), its step loop, log, checkpoints and arguments."""
