"""The training machinery of §2.4: the trainer, the epoch cycle, one step, a run's files."""
