"""Orbax checkpoints of the train state and the data iterator's position.

Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoints intact. On
restore we walk back from the newest step: a checkpoint that cannot be read is
reported, moved aside (never deleted) and the one before it is used; one whose
arrays do not match the current model is a different experiment and stops the
run, because resuming it would silently train something else.
"""
import logging
import os

import jax
import orbax.checkpoint as ocp

from experiments.errors import IncompatibleCheckpointError

log = logging.getLogger(__name__)


def _path_name(path) -> str:
  """'params/block_0/attention/query/kernel' for dataclass, dict and sequence keys alike."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return "/".join(parts)


def _shapes(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_name(p): tuple(x.shape) for p, x in leaves if hasattr(x, "shape")}


class Checkpointer:
  """Saves every N steps, keeps the last K, restores the newest readable one."""

  def __init__(self, directory: str, max_to_keep: int):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
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
          raise ValueError(f"{path}/state has no readable metadata")
      except Exception as e:  # noqa: BLE001 - any unreadable metadata means a broken checkpoint
        self._set_aside(step, path, e)
        continue
      self._check_compatible(path, saved, abstract_state)
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        )
      except Exception as e:  # noqa: BLE001 - unreadable arrays: fall back to the previous step
        self._set_aside(step, path, e)
        continue
      return restored["state"], restored["data"]
    return None

  def _check_compatible(self, path, saved_metadata, abstract_state) -> None:
    saved = _shapes(getattr(saved_metadata, "tree", saved_metadata))
    expected = _shapes(abstract_state)
    for name, shape in expected.items():
      if name not in saved:
        raise IncompatibleCheckpointError(
            f"checkpoint {path} was written by a different config: it has no {name}; use a new --workdir"
        )
      if saved[name] != shape:
        raise IncompatibleCheckpointError(
            f"checkpoint {path} was written by a different config: {name} has shape {saved[name]} there, "
            f"{shape} in this config; use a new --workdir"
        )

  def _set_aside(self, step: int, path: str, error: Exception) -> None:
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    aside = f"{path}.unreadable"
    log.warning("skipping unreadable checkpoint %s (%s); moved to %s", path, reason, aside)
    print(f"skipping unreadable checkpoint {path} ({reason}); moved to {aside}", flush=True)
    os.replace(path, aside)
    self._manager.reload()
