"""Deterministic, checkpointable input pipelines over Grain `MapDataset`s.

A MapDataset is a random-access sequence, so "where the pipeline is" is a single
integer: the index of the next batch. `BatchIterator` exposes it through
`get_state`/`set_state`; the checkpoint stores it and a resumed run reads exactly
the batches an uninterrupted run would have read. No worker processes: on a
2-core machine the training step needs both cores, and JAX's asynchronous
dispatch already overlaps building batch n+1 with computing step n.
"""
from collections.abc import Callable
from typing import Any

import grain
import numpy as np


class CharTokenizer:
  """Characters <-> integer ids over a fixed, sorted vocabulary."""

  def __init__(self, vocabulary: str):
    self.vocabulary = vocabulary
    self._ids = {c: i for i, c in enumerate(vocabulary)}

  @classmethod
  def from_text(cls, text: str) -> "CharTokenizer":
    return cls("".join(sorted(set(text))))

  @property
  def vocab_size(self) -> int:
    return len(self.vocabulary)

  def encode(self, text: str) -> np.ndarray:
    unknown = sorted(set(text) - self._ids.keys())
    if unknown:
      raise ValueError(f"characters {unknown!r} are not in the {self.vocab_size}-character vocabulary")
    return np.array([self._ids[c] for c in text], dtype=np.int32)

  def decode(self, ids) -> str:
    return "".join(self.vocabulary[int(i)] for i in ids)

  def character_counts(self) -> np.ndarray:
    """Characters each id stands for: one (a subword tokenizer's differ; per-character losses divide by them)."""
    return np.ones(self.vocab_size, np.int32)


def token_windows(tokens: np.ndarray, length: int, stride: int = 1) -> grain.MapDataset:
  """Windows of `length + 1` consecutive tokens (inputs and next-token targets), `stride` apart."""
  count = (len(tokens) - length - 1) // stride + 1
  if count <= 0:
    raise ValueError(f"{len(tokens)} tokens are too few for windows of {length + 1}")
  return grain.MapDataset.range(count).map(lambda i: tokens[i * stride : i * stride + length + 1])


def packed_windows(documents: list[np.ndarray], length: int, stride: int = 1) -> grain.MapDataset:
  """The windows of `token_windows` over the documents laid end to end, as packed rows.

  Packing of long documents without padding (T5's packing, Raffel et al. 2020,
  sec. 3.1.2; kept apart by masks as in Krell et al. 2021): a window may hold the
  end of one document and the start of the next. Each row is a dict of [length]
  arrays: `inputs` and their next-token `targets`; `segment_ids` numbering the
  documents in the row 1, 2, ... (for `decoders.layers.masks.segment_mask`);
  `positions` counting from the document's start or the row's start, whichever is
  later, so they stay below `length` (a learned table of `max_len` rows covers them)
  and a document that began in an earlier window counts from 0 as the model sees
  it; and `target_weights`, 0 on a target that begins the next document, which
  nothing the model may see in the row predicts.
  """
  documents = [d for d in documents if len(d)]  # an empty one would skip a segment id
  tokens = np.concatenate(documents)
  lengths = [len(d) for d in documents]
  document = np.repeat(np.arange(len(documents), dtype=np.int32), lengths)
  document_start = np.repeat(np.cumsum([0, *lengths[:-1]], dtype=np.int32), lengths)

  def row(span: np.ndarray) -> dict[str, np.ndarray]:
    segment_ids = document[span] - document[span[0]] + 1
    positions = span - np.maximum(document_start[span], span[0])
    return {
        "inputs": tokens[span[:-1]],
        "targets": tokens[span[1:]],
        "segment_ids": segment_ids[:-1],
        "positions": positions[:-1],
        "target_weights": (segment_ids[1:] == segment_ids[:-1]).astype(np.float32),
    }

  return token_windows(np.arange(len(tokens), dtype=np.int32), length, stride).map(row)


def training_batches(
    examples: grain.MapDataset,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    batch_fn: Callable | None = None,
) -> grain.MapDataset:
  """Endless batches: reshuffled every epoch with `seed`; each process reads its own share."""
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
  stream = examples.shuffle(seed=seed).repeat()[process_index::process_count]
  return stream.batch(batch_size // process_count, drop_remainder=True, batch_fn=batch_fn)


class BatchIterator:
  """Iterates a batched MapDataset from a saved position; the position is the whole state."""

  def __init__(self, batches: grain.MapDataset, position: int = 0):
    self._batches = batches
    self._position = position

  def __iter__(self):
    return self

  def __next__(self) -> Any:
    batch = self._batches[self._position]
    self._position += 1
    return batch

  def get_state(self) -> dict:
    return {"position": self._position}

  def set_state(self, state: dict) -> None:
    self._position = int(state["position"])


def padded_batches(arrays: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
  """Splits equal-length arrays into batches of exactly `batch_size` rows.

  The last batch is padded with zero rows and a `weight` of 0, so evaluation
  compiles once and padded rows count for nothing.
  """
  total = len(next(iter(arrays.values())))
  weights = np.ones(total, dtype=np.float32)
  batches = []
  for start in range(0, total, batch_size):
    batch = {name: a[start : start + batch_size] for name, a in {**arrays, "weight": weights}.items()}
    pad = batch_size - len(batch["weight"])
    if pad:
      batch = {name: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for name, a in batch.items()}
    batches.append(batch)
  return batches


def pack_sequences(sequences: list[np.ndarray], length: int) -> grain.MapDataset:
  """Packs variable-length sequences into rows of exactly `length` tokens (first fit, in order).

  Each row holds `tokens`, `segment_ids` (1, 2, ... per sequence in the row; 0 is
  padding) and `positions` (restarting at 0 for each sequence), so a model can keep
  attention within a sequence and restart its positions, as T5 packing does.
  Sequences longer than `length` are split into `length`-sized pieces. Packing is
  done once, deterministically, so the packed rows form a plain MapDataset that
  shuffles and checkpoints like any other.
  """
  pieces = [s[i : i + length] for s in sequences for i in range(0, len(s), length)]
  rows: list[list[np.ndarray]] = []
  free: list[int] = []
  for piece in pieces:
    row = next((r for r, space in enumerate(free) if space >= len(piece)), None)
    if row is None:
      rows.append([])
      free.append(length)
      row = len(rows) - 1
    rows[row].append(piece)
    free[row] -= len(piece)

  def materialise(parts: list[np.ndarray]) -> dict[str, np.ndarray]:
    tokens = np.zeros(length, np.int32)
    segment_ids = np.zeros(length, np.int32)
    positions = np.zeros(length, np.int32)
    start = 0
    for segment, part in enumerate(parts, start=1):
      end = start + len(part)
      tokens[start:end], segment_ids[start:end], positions[start:end] = part, segment, np.arange(len(part))
      start = end
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}

  return grain.MapDataset.source([materialise(parts) for parts in rows])


class _BucketedBatches:
  """Global batches of rows of one length bucket each, endless and indexable by step.

  Epoch e (seeded by (seed, e)): each bucket's rows shuffled and cut into full batches, then the
  batches of every bucket shuffled together. A step's batch depends only on its index, so
  BatchIterator's position resumes it exactly, as for `training_batches`.
  """

  EPOCHS = 1_000_000  # "endless": indices run through this many epochs

  def __init__(self, arrays, buckets, batch_size, seed, process_index, process_count, crop):
    if batch_size % process_count:
      raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
    self._arrays, self._batch_size, self._seed, self._crop = arrays, batch_size, seed, crop
    self._share = slice(process_index, None, process_count)
    self._members = [np.flatnonzero(buckets == b) for b in range(int(buckets.max()) + 1)]
    self._per_epoch = sum(len(m) // batch_size for m in self._members)
    if not self._per_epoch:
      raise ValueError(f"no length bucket holds a batch of {batch_size} rows")
    self._plan_epoch, self._plan = None, []

  def __len__(self) -> int:
    return self._per_epoch * self.EPOCHS

  def _plan_of(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng([self._seed, epoch])
    batches = []
    for bucket, members in enumerate(self._members):
      order = rng.permutation(members)
      size = self._batch_size
      batches += [(bucket, order[i * size : (i + 1) * size]) for i in range(len(members) // size)]
    return [batches[i] for i in rng.permutation(len(batches))]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    epoch, within = divmod(int(index), self._per_epoch)
    if epoch != self._plan_epoch:
      self._plan_epoch, self._plan = epoch, self._plan_of(epoch)
    bucket, rows = self._plan[within]
    rows = np.sort(rows)[self._share]  # this process's share of the global batch
    return self._crop({name: array[rows] for name, array in self._arrays.items()}, bucket)


def length_bucketed_batches(
    arrays: dict[str, np.ndarray],
    buckets: np.ndarray,
    crop: Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]],
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
  """Endless batches whose rows share a length bucket (`buckets` [rows]: each row's, 0 the shortest), each batch
  cut by `crop(batch, bucket)` to its bucket's padded length: short sentences stop paying for the longest's padding,
  at one compiled step per bucket. Each process reads its own share of every global batch."""
  return grain.MapDataset.source(
      _BucketedBatches(arrays, buckets, batch_size, seed, process_index, process_count, crop)
  )
