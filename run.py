"""Entry point: python run.py --config=configs/X.py[:variant] --workdir=DIR [--mode=train|eval|sample]."""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do with the workdir.")
flags.mark_flags_as_required(["config", "workdir"])


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
  app.run(main)
