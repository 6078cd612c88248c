"""Entry point: python run.py --config=configs/X.py[:variant] --workdir=DIR [--mode=train|eval|sample].

--mode=inspect describes the config's model (parameters, sharding, FLOPs, KV cache) without
allocating it, and needs no workdir: python run.py --config=configs/llama.py:published --mode=inspect

--mode=eval|sample use the newest checkpoint in --workdir or, with no checkpoint (or no
--workdir), the pretrained weights that the config's init_from names:
    python run.py --config=configs/smollm2.py --mode=sample --prompt="The capital of France is"

--mode=attention draws which source tokens a translation attended to, as a PNG per --prompt:
    python run.py --config=configs/translation.py --workdir=workdirs/translation --mode=attention --prompt="Save it."

--mode=export writes the newest checkpoint as a Hugging Face folder (transformers loads it):
    python run.py --config=configs/llama.py --workdir=workdirs/llama --mode=export --export_dir=/tmp/llama_hf
"""
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "sample", "export", "inspect", "attention"],
    "What to do with the workdir; inspect needs none; attention draws a translation's alignment (--prompt).",
)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "--mode=export: the Hugging Face folder to write.")
_PROMPT = flags.DEFINE_multi_string(
    "prompt", None, "--mode=sample|attention: the prompt, instead of the config's sample.prompt; repeat the flag for a batch."
)
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "--mode=sample: a text file of prompts, one per line, as one batch.")
_STREAM = flags.DEFINE_bool("stream", True, "--mode=sample: print one prompt's text as it is generated.")
flags.mark_flags_as_required(["config"])
# Several processes (hosts) of one job: each runs this same command with its own --process_id.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, to run as one of several processes.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "How many processes the job has (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to num_processes - 1.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process job whose settings JAX detects (TPU pods, SLURM, Open MPI, Kubernetes)."
)


def _config_argument(argv: list[str]) -> str | None:
  for index, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      return arg.removeprefix("--config=")
    if arg == "--config" and index + 1 < len(argv):
      return argv[index + 1]
  return None


def _check_config_file(argv: list[str]) -> None:
  """ml_collections reports a config file that is not there only when the config is first used, in 40 lines."""
  value = _config_argument(argv)
  path = value.split(":", 1)[0] if value else None
  if path is not None and not os.path.isfile(path):
    problem = "is a directory, not a config file" if os.path.isdir(path) else "does not exist"
    sys.exit(f"error: --config={value}: {path} {problem}")


def _flag_error_line(error: flags.Error) -> str:
  """The one line that matters in an absl flag error.

  An exception raised by the config file's get_config (an unknown :variant) arrives
  wrapped in a whole traceback; its last line is the config's own message.
  """
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if len(lines) > 1 and "Error whilst parsing config file" in lines[0]:
    flag = lines[0].split(": Error whilst parsing")[0]
    return f"{flag}: {lines[-1].split(': ', 1)[-1]}"
  return lines[0] if lines else type(error).__name__


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, except that every mistake is one line naming it, never a traceback."""
  _check_config_file(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # a value of the wrong type, an unknown --mode, a missing flag, a bad :variant
    sys.exit(f"error: {_flag_error_line(error)}")
  except (KeyError, AttributeError) as error:
    # ml_collections reports an override of a key the config does not have as a bare
    # KeyError/AttributeError from inside the parser.
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


def initialize_distributed() -> None:
  """Joins the multi-process job the flags describe, before anything touches a device; alone otherwise."""
  if not (_DISTRIBUTED.value or _COORDINATOR.value):
    return
  if _COORDINATOR.value:
    count, index = _NUM_PROCESSES.value, _PROCESS_ID.value
    if count is None or index is None:
      sys.exit("error: --coordinator_address needs --num_processes and --process_id")
    if not 0 <= index < count:
      sys.exit(f"error: --process_id={index} must be in [0, --num_processes={count})")
  import jax

  # Cross-process collectives on CPU devices need an implementation (GPU and TPU bring their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
  )


def _prompts() -> list[str]:
  """--prompt flags, then the lines of --prompts_file (blank lines skipped)."""
  prompts = list(_PROMPT.value or [])
  if _PROMPTS_FILE.value is not None:
    try:
      with open(_PROMPTS_FILE.value, encoding="utf-8") as f:
        prompts += [line.rstrip("\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      sys.exit(f"error: --prompts_file={_PROMPTS_FILE.value}: {e.strerror if isinstance(e, OSError) else e}")
    if not prompts:
      sys.exit(f"error: --prompts_file={_PROMPTS_FILE.value} holds no prompt")
  if prompts and _MODE.value not in ("sample", "attention"):
    sys.exit(f"error: --prompt and --prompts_file are for --mode=sample|attention, not --mode={_MODE.value}")
  return prompts


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file they touch at INFO
  initialize_distributed()
  from experiments import inspection, train  # after flag parsing: --help stays instant
  from experiments.errors import USER_ERRORS
  from experiments.preemption import Interrupted

  config, workdir = _CONFIG.value, _WORKDIR.value
  if workdir is None and not (_MODE.value == "inspect" or (_MODE.value in ("eval", "sample") and config.get("init_from"))):
    sys.exit("error: --workdir is required, except with --mode=inspect, or --mode=eval|sample of a config with init_from")
  if (_MODE.value == "export") != (_EXPORT_DIR.value is not None):
    sys.exit("error: --mode=export and --export_dir=DIR go together")
  prompts = _prompts()
  if prompts:
    if "sample" not in config:
      sys.exit(f"error: --prompt: task {config.task!r} has no sample.prompt")
    config.sample.prompt = prompts[0]  # checked with the config; the others when they are tokenized
  mode = {
      "train": train.train_and_evaluate,
      "eval": train.evaluate,
      "sample": lambda config, workdir: train.sample(config, workdir, prompts if len(prompts) > 1 else None, _STREAM.value),
      "export": lambda config, workdir: train.export(config, workdir, _EXPORT_DIR.value),
      "inspect": lambda config, _: print(inspection.format_summary(inspection.summarize(config)), flush=True),
      "attention": lambda config, workdir: train.attention(config, workdir, prompts or None),
  }[_MODE.value]
  try:
    mode(config, workdir)
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")
  except Interrupted as e:
    print(f"interrupted: {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
  except KeyboardInterrupt:
    print("interrupted: stopped at once; the checkpoints already written are kept", file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
