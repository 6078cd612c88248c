"""What a training run keeps in its workdir besides checkpoints and metrics: a lock and its config.

    workdir/
      lock           who holds the workdir: a live run holds an flock on this file
      config.json    the config of the latest run; the next run lists the keys it changes
      checkpoints/   checkpointing.py
      metrics.jsonl, tensorboard/   metrics.py
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket
import tempfile

from experiments.errors import UserError

LOCK_FILE = "lock"
CONFIG_FILE = "config.json"


def make_directory(path: str, name: str) -> str:
  """Creates `path` and its parents if needed; one line naming `name` and `path` if it cannot be used."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{name}={path} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):  # can we write there? (root ignores permission bits)
      pass
  except OSError as e:
    raise UserError(f"{name}={path} cannot be created or written to: {e.strerror or e}") from None
  return path


def _holder(fd: int) -> dict:
  """The record the lock's holder wrote into the lock file (empty if none, or not written yet)."""
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    return json.loads(os.read(fd, 4096) or b"{}")
  except ValueError:
    return {}


def _describe(holder: dict) -> str:
  return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started {holder.get('started', '?')})"


@contextlib.contextmanager
def lock(workdir: str):
  """Holds `workdir` for one training run; a second run on it stops with one line naming the first.

  The lock is an flock, which the kernel releases however its holder ends (kill -9
  included), so it is never left held by a process that is gone. The file records who
  holds it, so a refused run can name the holder; a run that finds a record but no lock
  takes over from a process that died without cleaning up, and says so.
  """
  path = os.path.join(workdir, LOCK_FILE)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      raise UserError(
          f"workdir {workdir} is in use by {_describe(holder)}: wait for it to end, or use another --workdir"
      ) from None
    # A holder that ended between our open and our flock removed the file: lock the one now at `path`.
    if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
      break
    os.close(fd)
  try:
    stale = _holder(fd)
    if stale:
      print(f"taking over the lock of {_describe(stale)}, which ended without releasing it", flush=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    yield
  finally:
    os.unlink(path)  # before closing: nobody can lock the file we are about to remove
    os.close(fd)


def stale_holder(workdir: str) -> dict:
  """The record of a run on `workdir` that ended without releasing its lock (killed with -9, a reboot); empty if the
  last run ended cleanly or one holds the workdir now. The file is left as it is, for `lock` to take over."""
  try:
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDONLY)
  except OSError:
    return {}
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return {}  # held: that run is alive
  else:
    return _holder(fd)
  finally:
    os.close(fd)  # releases the flock


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_changes(workdir: str, config) -> list[str]:
  """One line per key whose value differs from the config the previous run saved in `workdir`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  try:
    with open(path, encoding="utf-8") as f:
      saved = _flatten(json.load(f))
  except (OSError, ValueError) as e:
    return [f"{path} is unreadable ({e}); it will be rewritten"]
  current = _flatten(json.loads(config.to_json()))
  missing = "(not set)"
  return [
      f"{key}: {saved.get(key, missing)!r} -> {current.get(key, missing)!r}"
      for key in sorted(saved.keys() | current.keys())
      if saved.get(key, missing) != current.get(key, missing)
  ]


def save_config(workdir: str, config) -> None:
  """Writes config.json atomically: a run killed while writing leaves the previous one."""
  path = os.path.join(workdir, CONFIG_FILE)
  with tempfile.NamedTemporaryFile("w", dir=workdir, suffix=".tmp", delete=False, encoding="utf-8") as f:
    f.write(config.to_json(indent=2, sort_keys=True) + "\n")
  os.replace(f.name, path)
