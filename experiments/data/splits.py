"""Held-out splits by a stable hash of each example's key, never by its position in the source.

A source that reorders or grows its examples keeps every old one on the same side of the split, and the split is
the same in every process and on every machine (SHA-256, not Python's salted `hash`).
"""
import hashlib


def hash_bucket(key: str, buckets: int) -> int:
  """A bucket in [0, buckets) that depends on `key` alone."""
  return int(hashlib.sha256(key.encode()).hexdigest(), 16) % buckets
