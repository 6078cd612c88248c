"""Builds a TFDS dataset on first use, once, even when several runs start at the same time.

Two processes building the same dataset race on TFDS's final rename
(`FileExistsError: Cannot rename ... incomplete...`); a file lock in the data dir
lets one build while the others wait, then read what it built.
"""
import fcntl
import os
from collections.abc import Callable

import tensorflow_datasets as tfds


def prepared(make_builder: Callable[[], tfds.core.DatasetBuilder]) -> tfds.core.DatasetBuilder:
  """A builder from `make_builder` whose dataset is on disk, built here if no other process has."""
  builder = make_builder()
  if builder.is_prepared():
    return builder
  os.makedirs(builder.data_dir_root, exist_ok=True)
  with open(os.path.join(builder.data_dir_root, f".{builder.name}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or its process ends
    builder = make_builder()  # afresh: a builder reads the dataset's info when it is made
    if not builder.is_prepared():
      builder.download_and_prepare()
  return builder
