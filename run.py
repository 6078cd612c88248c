"""Entry point: python run.py --config=configs/X.py[:variant] --workdir=DIR [--mode=train|eval|sample]."""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do with the workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, except that an unknown --config.KEY gives one line naming it.

  ml_collections reports an override of a key the config does not have as a bare
  KeyError/AttributeError from inside the parser: a 40-line traceback.
  """
  try:
    return app.parse_flags_with_usage(argv)
  except (KeyError, AttributeError) as error:
    cause = error
    while cause.args and isinstance(cause.args[0], BaseException):  # AttributeError(KeyError(message))
      cause = cause.args[0]
    message = str(cause.args[0]) if cause.args else ""
    missing = message.splitlines()[0].strip("'\"") if message else ""
    overrides = [arg[2:].split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
    culprits = [name for name in overrides if missing in name.split(".")[1:]]
    if not culprits:
      raise  # no flag names that key: a bug in the config file, where the traceback helps
    hint = " ".join(message.splitlines()[1:])  # ml_collections' "Did you mean ...?", if any
    sys.exit(f"error: --{culprits[0]}: the config has no key {missing!r}. {hint}".rstrip())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file they touch at INFO
  from experiments import train  # after flag parsing: --help stays instant
  from experiments.errors import USER_ERRORS

  mode = {"train": train.train_and_evaluate, "eval": train.evaluate, "sample": train.sample}[_MODE.value]
  try:
    mode(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
