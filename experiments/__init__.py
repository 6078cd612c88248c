"""The experiment harness: one trainer, checkpoints, sharding, data, and a task per family."""
