"""The interface through which a model family plugs into the one trainer.

A task says what to feed, which loss to minimise and how to evaluate; the
trainer owns everything else (optimizers, train state, step, loop, checkpoints).
A task with several losses over different parts of its parameters (a GAN's
generator and discriminator) returns several `Objective`s: the trainer gives each
its own optimizer and applies them one after another inside the same step.
"""
import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import grain
import jax
import ml_collections
import numpy as np

from decoders.errors import ConfigError
from experiments import config_rules

Params = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# loss_fn(params, batch, rng, train) -> (scalar loss, metrics)
LossFn = Callable[[Params, Batch, jax.Array, bool], tuple[jax.Array, Metrics]]


@dataclasses.dataclass(frozen=True)
class Objective:
  """One loss, minimised by its own optimizer over `params[params_key]` (all params if None)."""

  name: str
  loss_fn: LossFn
  params_key: str | None = None


# An array's shape and the logical axis name of each of its dimensions (None: never split).
ShapeAndAxes = tuple[tuple[int, ...], tuple[str | None, ...]]


@dataclasses.dataclass(frozen=True)
class ModelDescription:
  """A config's model as `--mode=inspect` reports it (experiments/inspection.py).

  `init_params` is only ever traced with `jax.eval_shape`: describing a 7 B model
  allocates none of its parameters.
  """

  init_params: Callable[[jax.Array], Params]  # as Task.init_params
  # Top-level modules that are embeddings, left out of the non-embedding count (the N of
  # Kaplan et al. 2020, whose compute is 6N FLOPs per token).
  embeddings: tuple[str, ...] = ()
  flops_per_unit: float | None = None  # training FLOPs per `unit`; None if not known
  # A sequence model's key/value cache: what one token adds to it (split over the mesh by
  # the same rules as the parameters) and how many tokens it holds at the full context.
  cache_per_token: Mapping[str, ShapeAndAxes] = dataclasses.field(default_factory=dict)
  cache_tokens: int = 0


class Task(abc.ABC):
  """One model family on one kind of data. Subclasses register under a name in `tasks.TASKS`."""

  # What the throughput is counted in: "tokens" for sequences, "examples" for images.
  unit: str = "examples"
  # The config keys this task reads (its data, model and sample sections), checked with
  # the trainer's own before anything runs; see experiments/config_rules.py.
  config_schema: ClassVar[config_rules.Schema] = {}

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, mesh_shape: Mapping[str, int]) -> None:
    """Checks across keys that need no data (sizes against each other and the mesh); raises ConfigError.

    Runs after `config_schema` has accepted every key, before any data is read.
    Checks that need the data (a vocabulary, an image size) belong in `__init__`.
    """

  @classmethod
  def describe(cls, config: ml_collections.ConfigDict) -> ModelDescription:
    """The model `config` makes, for `--mode=inspect`; runs after `check_config`.

    By default the task is built, which reads its data; a task whose model the config
    alone determines overrides this to read nothing.
    """
    task = cls(config)
    flops = task.model_flops_per_step()
    return ModelDescription(task.init_params, flops_per_unit=None if flops is None else flops / task.units_per_step())

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def init_params(self, rng: jax.Array) -> Params:
    """Parameters boxed with logical axis names (`nn.with_logical_partitioning`)."""

  @abc.abstractmethod
  def loss_fn(self, params: Params, batch: Batch, rng: jax.Array, train: bool) -> tuple[jax.Array, Metrics]:
    """The training loss (a mean) and metrics to log."""

  def objectives(self) -> Sequence[Objective]:
    return (Objective("loss", self.loss_fn),)

  @abc.abstractmethod
  def eval_fn(self, params: Params, batch: Batch) -> Metrics:
    """Metrics summed over the batch (rows with `weight` 0 are padding), so batches add up."""

  @abc.abstractmethod
  def summarize_eval(self, sums: Mapping[str, float]) -> dict[str, float]:
    """Turns eval sums over the whole evaluation set into reported metrics."""

  @abc.abstractmethod
  def train_batches(self, seed: int, process_index: int, process_count: int) -> grain.MapDataset:
    """Endless training batches for this process (each a dict of numpy arrays, batch axis first)."""

  @abc.abstractmethod
  def eval_batches(self) -> Sequence[dict[str, np.ndarray]]:
    """The evaluation set as equal-size global batches with a `weight` per row."""

  @abc.abstractmethod
  def units_per_step(self) -> int:
    """Global `unit`s consumed by one training step (for the throughput metric)."""

  def model_flops_per_step(self) -> float | None:
    """Analytic training FLOPs of one step (for model-FLOPs utilisation); None if not known."""
    return None

  def generation_metrics(self, params: Params) -> dict[str, float]:
    """Metrics of what the model generates for the held-out set (a translation's BLEU), measured after training
    and in --mode=eval; none by default. Slower than `eval_fn`, so periodic evaluations leave them out."""
    del params
    return {}

  def figures(self, params: Params, rng: jax.Array) -> dict[str, np.ndarray]:
    """Pictures of what the model makes (samples, reconstructions, interpolations): named grids of images
    [rows, columns, height, width, channels] in [0, 1], which experiments/figures.py writes as
    <workdir>/figures/NAME.png after training and in --mode=sample; none by default."""
    del params, rng
    return {}

  def alignment(self, params: Params, prompt: str) -> tuple[list[str], list[str], np.ndarray]:
    """(source tokens, output tokens, attention weights [outputs, sources]) of the model's output for `prompt`, for
    --mode=attention's picture; a task whose model attends over no source has none."""
    del params, prompt
    raise ConfigError(f"--mode=attention: task {self.config.task!r} has no source to align its outputs with")

  def pretrained_params(self, init_from: str) -> Params:
    """The parameters `config.init_from` names, in this task's layout (experiments/pretrained.py)."""
    raise ConfigError(f"init_from={init_from!r}: task {self.config.task!r} cannot start from pretrained weights")

  def sample(
      self, params: Params, rng: jax.Array, prompts: Sequence[str] | None = None,
      stream: Callable[[str], None] | None = None,
  ) -> str | None:
    """What the model generates from `prompts` (default: the config's sample.prompt), for a person to
    read at the end of a run or in --mode=sample; None if the task generates nothing. A task that can
    passes the text to `stream` piece by piece as it is made (and still returns it whole)."""
    del params, rng, prompts, stream
    return None
