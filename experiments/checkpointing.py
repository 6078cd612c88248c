"""Orbax checkpoints of the train state and the data iterator's position.

Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoints intact. On
restore we walk back from the newest step, and tell two failures apart:

  * a checkpoint whose tree of arrays differs from the one this config builds (a
    parameter more or less, another shape or dtype) was written by another
    experiment: the run stops and names the first difference (or, when the layers
    are stacked by nn.scan in one and not in the other, says so); nothing is moved;
  * a checkpoint that cannot be read (missing metadata, truncated or corrupt
    files) is reported once, moved aside under a name that never collides
    (`<step>.unreadable`, `<step>.unreadable-2`, ...) and never deleted, and the
    one before it is tried.
"""
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp

from decoders.models.decoder_lm import BLOCK_PREFIX, SCANNED_LAYERS
from experiments.errors import IncompatibleCheckpointError


def _arrays(tree) -> dict[str, tuple[tuple, str]]:
  """'params/block_0/attention/query/kernel' -> (shape, dtype) for every array of `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
      jax.tree_util.keystr(path, simple=True, separator="/"): (tuple(x.shape), np.dtype(x.dtype).name)
      for path, x in leaves
      if hasattr(x, "shape")
  }


def _scanned_layers(names) -> bool | None:
  """True if the parameters hold a scanned layer stack, False if one subtree per layer, None if no layers."""
  parts = {part for name in names if name.startswith("params/") for part in name.split("/")}
  if SCANNED_LAYERS in parts:
    return True
  return False if f"{BLOCK_PREFIX}0" in parts else None


def _layout_difference(saved: dict, expected: dict) -> str | None:
  """The layer layout (model.scan_layers, decoders/models/decoder_lm.py: BlockStack) if the two differ, in words.

  Named on its own because every parameter of every layer differs then: the first
  difference alone would blame one array for a switch of the whole stack.
  """
  was_scanned, is_scanned = _scanned_layers(saved), _scanned_layers(expected)
  if None in (was_scanned, is_scanned) or was_scanned == is_scanned:
    return None
  layout = f"stacked into one `{SCANNED_LAYERS}` tree" if was_scanned else f"one tree each ({BLOCK_PREFIX}0, {BLOCK_PREFIX}1, ...)"
  return (
      f"its layers are {layout}, as model.scan_layers={was_scanned} writes them; "
      f"this config has model.scan_layers={is_scanned}"
  )


def _first_difference(saved: dict, expected: dict) -> str | None:
  """The first array (parameters before optimizer state) in which the two trees differ, in words."""
  for name in sorted(saved.keys() | expected.keys(), key=lambda n: (not n.startswith("params/"), n)):
    if name not in expected:
      return f"it has {name}, which this config does not"
    if name not in saved:
      return f"it has no {name}, which this config needs"
    if saved[name] != expected[name]:
      (saved_shape, saved_dtype), (shape, dtype) = saved[name], expected[name]
      return f"{name} is {saved_dtype}{list(saved_shape)} there, {dtype}{list(shape)} in this config"
  return None


def _reason(error: Exception) -> str:
  """The first line of an error, without object reprs (`<class ...>`, `<... at 0x...>`), at most 200 characters."""
  text = re.sub(r"<[^<>]*>", "", str(error)).strip()
  first = text.splitlines()[0] if text else ""
  return " ".join(first.split())[:200] or type(error).__name__


class Checkpointer:
  """Saves every N steps, keeps the last K, restores the newest readable one."""

  def __init__(self, directory: str, max_to_keep: int, create: bool = True):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create),
        # Named up front so a fresh process (a resumed run) can read item_metadata before
        # any save or restore has told the manager which handler each item uses.
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    """Starts an asynchronous save; the arrays are copied off the devices before this returns."""
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state):
    """(state, data_state) from the newest readable checkpoint, or None if there is none."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      path = os.path.join(self.directory, str(step))
      try:
        saved = self._manager.item_metadata(step)["state"]
        if saved is None:  # Orbax returns None rather than raising when state/_METADATA is gone
          raise ValueError("its metadata is missing")
      except Exception as e:  # noqa: BLE001 - any unreadable metadata means a broken checkpoint
        self._set_aside(path, e)
        continue
      saved_arrays, expected_arrays = _arrays(getattr(saved, "tree", saved)), _arrays(abstract_state)
      difference = _layout_difference(saved_arrays, expected_arrays) or _first_difference(saved_arrays, expected_arrays)
      if difference:
        raise IncompatibleCheckpointError(
            f"checkpoint {path} was written by a different config: {difference}; "
            "resume with that config (config.json in the workdir) or use a new --workdir"
        )
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        )
      except Exception as e:  # noqa: BLE001 - the tree matched, so the files themselves are unreadable
        self._set_aside(path, e)
        continue
      return restored["state"], restored["data"]
    return None

  def _set_aside(self, path: str, error: Exception) -> None:
    aside, copy = f"{path}.unreadable", 1
    while os.path.exists(aside):
      copy += 1
      aside = f"{path}.unreadable-{copy}"
    os.replace(path, aside)
    print(f"skipping unreadable checkpoint {path} ({_reason(error)}); moved to {aside}", flush=True)
    self._manager.reload()
