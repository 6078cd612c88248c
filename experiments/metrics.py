"""Where metrics go: TensorBoard event files and a JSON-lines file in the workdir, and a progress bar."""
import glob
import json
import os
import struct
import time
from collections.abc import Callable

import jax
import numpy as np
import tqdm
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import RecordWriter

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsWriter:
  """Writes scalars from process 0 only (every process computes the same global values).

  Each row is on disk when `write` returns, in both files: a run killed at any moment (SIGKILL, a lost machine)
  keeps every row it logged before its newest checkpoint, which the resumed run does not log again. (tensorboardX's
  SummaryWriter hands events to a thread through a queue, and a kill loses the queue; rows come every log_every
  steps, so writing them in place costs nothing.)
  """

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if self._active:
      os.makedirs(os.path.join(workdir, TENSORBOARD_DIR), exist_ok=True)
      self._events = EventsWriter(os.path.join(workdir, TENSORBOARD_DIR, "events"))
      self._jsonl = open(os.path.join(workdir, JSONL_FILE), "a", encoding="utf-8")

  def _write(self, step: int, summaries: list, row: dict) -> None:
    for value in summaries:
      self._events.write_event(Event(wall_time=time.time(), step=step, summary=value))
    self._events.flush()
    self._jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
    self._jsonl.flush()

  def write(self, step: int, prefix: str, scalars: dict) -> None:
    if self._active:
      values = {k: float(v) for k, v in scalars.items()}
      self._write(step, [summary.scalar(f"{prefix}/{name}", value) for name, value in values.items()],
                  {"step": step, "split": prefix, **values})

  def write_text(self, step: int, tag: str, text: str) -> None:
    """Text (a sample) to TensorBoard, and to metrics.jsonl as a row whose split is `tag`."""
    if self._active:
      self._write(step, [summary.text(tag, text)], {"step": step, "split": tag, "text": text})

  def close(self) -> None:
    if self._active:
      self._events.close()
      self._jsonl.close()


class ProgressBar:
  """A tqdm bar over the steps of this run, showing step, loss, learning rate and throughput."""

  def __init__(self, first_step: int, num_steps: int, unit: str):
    self._unit = unit
    self._bar = tqdm.tqdm(
        total=num_steps, initial=first_step, unit="step", dynamic_ncols=True, disable=jax.process_index() != 0
    )

  def advance(self, steps: int = 1) -> None:
    self._bar.update(steps)

  def show(self, step: int, metrics: dict, units_per_second: float) -> None:
    # One loss, or one per objective ("discriminator/loss", "generator/loss": experiments/trainer.py).
    losses = " ".join(f"{name}={value:.4f}" for name, value in metrics.items() if name.split("/")[-1] == "loss")
    self._bar.set_postfix_str(
        f"{losses} lr={metrics['learning_rate']:.2e} {self._unit}/s={units_per_second:,.0f}", refresh=False
    )

  def print(self, message: str) -> None:
    self._bar.write(message)

  def close(self) -> None:
    self._bar.close()


def mean_metrics(history: list[dict]) -> dict:
  """Averages a window of per-step metric dicts fetched from the devices."""
  return {k: float(np.mean([m[k] for m in history])) for k in history[0]}


# keep(step, split) -> whether a row written earlier stays; split is "train", "eval" or "sample".
KeepRow = Callable[[int, str], bool]


def discard_rows(workdir: str, keep: KeepRow) -> None:
  """Removes the rows `keep` rejects from metrics.jsonl and the TensorBoard event files.

  A resumed run writes again the steps after its checkpoint; without this, both logs
  would hold those steps twice, the second time out of order. Process 0 only, as for
  writing. Files are replaced atomically; a row cut off by a kill is dropped too.
  """
  if jax.process_index() != 0:
    return
  jsonl = os.path.join(workdir, JSONL_FILE)
  if os.path.exists(jsonl):
    with open(jsonl, encoding="utf-8") as f:
      content = f.read()
    # Each kept row ends its line, even one whose newline a kill cut off: the next run appends.
    kept = "".join(line + "\n" for line in content.splitlines() if _keep_json_line(line, keep))
    if kept != content:
      _replace(jsonl, kept.encode())
  for path in sorted(glob.glob(os.path.join(workdir, TENSORBOARD_DIR, "events.out.tfevents.*"))):
    _discard_events(path, keep)


def _keep_json_line(line: str, keep: KeepRow) -> bool:
  try:
    row = json.loads(line)
  except ValueError:
    return False  # a line cut short when the run was killed
  return keep(row["step"], row["split"])


def read_records(path: str) -> tuple[list[bytes], bool]:
  """The payloads of a TFRecord file (each: length, crc, payload, crc), and whether none was cut short."""
  records = []
  with open(path, "rb") as f:
    while header := f.read(12):
      length = struct.unpack("<Q", header[:8])[0] if len(header) == 12 else -1
      payload = f.read(max(length, 0))
      if length < 0 or len(payload) != length or len(f.read(4)) != 4:
        return records, False
      records.append(payload)
  return records, True


def _discard_events(path: str, keep: KeepRow) -> None:
  records, complete = read_records(path)
  events, changed = [], not complete
  for event in map(Event.FromString, records):
    if event.HasField("summary"):
      values = [v for v in event.summary.value if keep(event.step, v.tag.split("/")[0])]
      if len(values) < len(event.summary.value):
        changed = True
        del event.summary.value[:]
        event.summary.value.extend(values)
        if not values:
          continue
    events.append(event)
  if changed:
    writer = RecordWriter(path + ".tmp")
    for event in events:
      writer.write(event.SerializeToString())
    writer.close()
    os.replace(path + ".tmp", path)


def _replace(path: str, content: bytes) -> None:
  with open(path + ".tmp", "wb") as f:
    f.write(content)
  os.replace(path + ".tmp", path)
