"""Data: TFDS builders (array_record) and deterministic, checkpointable input pipelines."""
