"""Masked-token prediction (BERT's masked LM: Devlin et al. 2019, sec. 3.1) with an `Encoder`, on characters.

Each window of text has round(mask_rate x length) positions (at least one) chosen for
prediction, as the released code's `create_pretraining_data.py` counts them; of those,
a `mask_token_fraction` become [MASK], a `random_token_fraction` a random character and
the rest stay as they are (BERT: 15 %, then 80/10/10; appendix C.2, table 8, ablates the
split). The loss is the cross-entropy at the chosen positions only. [MASK] is one extra
id after the characters, written as `data.mask_char`, which the sample prompt uses to
mark what the model is to fill in.

Masking is drawn anew for every training example (dynamic, as RoBERTa: Liu et al. 2019,
sec. 4.1) from a generator seeded by (seed, position of the example in the training
stream): the data pipeline's position alone fixes every batch, so a resumed run reads
the same masked batches, whatever the number of processes. Evaluation masks every
non-overlapping validation window once, with a fixed seed, so every run and every
evaluation scores the same predictions.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from decoders import losses
from decoders.errors import ConfigError
from decoders.models import encoder
from decoders.models.decoder_lm import DecoderLMConfig
from experiments.config_rules import TEXT, Rule, fields_of, integer, number, one_of, show
from experiments.data import pipeline, shakespeare
from experiments.tasks.base import ModelDescription, Task
from experiments.tasks import language_model

DATASETS = {"shakespeare_char": shakespeare.load_split_text}
EVAL_MASKING_SEED = 20190524  # fixed, not config.seed: runs with different seeds score the same predictions

FRACTION = number(0, 1)


@dataclasses.dataclass(frozen=True)
class Masking:
  """BERT's corruption of rows of tokens (sec. 3.1): which positions to predict, and what the model sees there."""

  rate: float  # of the positions, chosen for prediction
  mask_token_fraction: float  # of the chosen, replaced by `mask_id`
  random_token_fraction: float  # of the chosen, replaced by a token drawn uniformly from [0, num_tokens)
  mask_id: int
  num_tokens: int  # the real tokens, [MASK] excluded

  def __call__(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`rows` [n, length] -> the model's `inputs`, the `targets` (the rows) and the `chosen` positions (0/1)."""
    n, length = rows.shape
    count = min(length, max(1, round(self.rate * length)))
    # The positions of the `count` smallest of `length` uniform draws: `count` positions, uniformly without replacement.
    positions = np.argsort(rng.random((n, length)), axis=1)[:, :count]
    kind = rng.random((n, count))
    random_tokens = rng.integers(0, self.num_tokens, (n, count))
    original = np.take_along_axis(rows, positions, axis=1)
    replaced = np.where(kind < self.mask_token_fraction, self.mask_id, random_tokens)
    keep = kind >= self.mask_token_fraction + self.random_token_fraction
    inputs, chosen = rows.copy(), np.zeros(rows.shape, np.float32)
    np.put_along_axis(inputs, positions, np.where(keep, original, replaced), axis=1)
    np.put_along_axis(chosen, positions, 1.0, axis=1)
    return {"inputs": inputs, "targets": rows, "chosen": chosen}


class MaskedLMTask(Task):
  """Predicts the chosen characters of each window from both sides; loss in nats per predicted character."""

  unit = "tokens"
  config_schema = {
      "data": {
          "name": one_of(DATASETS),
          "source_dir": TEXT,
          "context_length": integer(1),
          "mask_char": Rule(str, "a single character", lambda v: len(v) == 1),
          "mask_rate": number(0, 1, low_open=True),
          "mask_token_fraction": FRACTION,
          "random_token_fraction": FRACTION,
      },
      # A preset's fields, any of which the config may override; the vocabulary is the data's
      # characters and [MASK] unless model.vocab_size asks for more rows.
      "model": {
          "preset": one_of(encoder.PRESETS),
          **fields_of(DecoderLMConfig),
          **fields_of(encoder.EncoderConfig, exclude=["stack"]),
      },
      "sample": {"prompt": TEXT},  # data.mask_char marks the characters to fill in
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    model = model_config(config, data_vocab_size=1).stack  # the vocabulary comes with the data
    data = config.data
    if data.context_length > model.max_len:
      raise ConfigError(f"data.context_length={data.context_length} exceeds model.max_len={model.max_len}")
    language_model.check_stack_divisible(model, mesh_shape)
    if data.mask_token_fraction + data.random_token_fraction > 1:
      raise ConfigError(
          f"data.mask_token_fraction={data.mask_token_fraction} and data.random_token_fraction="
          f"{data.random_token_fraction} add up to more than 1"
      )
    prompt = config.sample.prompt
    if not 0 < len(prompt) <= data.context_length:
      raise ConfigError(
          f"sample.prompt={show(prompt)} has {len(prompt)} characters; it needs 1 to data.context_length={data.context_length}"
      )
    if data.mask_char not in prompt:
      raise ConfigError(f"sample.prompt={show(prompt)} has no data.mask_char={data.mask_char!r} to fill in")

  @classmethod
  def describe(cls, config):
    # With model.vocab_size the config alone gives the model; without it the vocabulary is the data's.
    model = model_config(config, data_vocab_size=1) if config.model.get("vocab_size") else cls(config).model_config
    context = config.data.context_length
    return ModelDescription(
        init_params=functools.partial(language_model.init_sequence_params, encoder.Encoder(model), context),
        embeddings=("embed", "positions", "token_types", "output_bias"),  # num_params(include_embeddings=False) leaves these out
        flops_per_unit=model.flops_per_token(context),
    )

  def __init__(self, config):
    super().__init__(config)
    data = config.data
    load = DATASETS[data.name]
    self.train_text = load(data.data_dir, "train", data.source_dir)
    self.validation_text = load(data.data_dir, "validation", data.source_dir)
    characters = pipeline.CharTokenizer.from_text(self.train_text + self.validation_text).vocabulary
    if data.mask_char in characters:
      raise ConfigError(f"data.mask_char={data.mask_char!r} occurs in the text of data.name={data.name!r}; choose another")
    self.tokenizer = pipeline.CharTokenizer(characters + data.mask_char)  # [MASK] is the last id
    if data.context_length > min(len(self.train_text), len(self.validation_text)):
      raise ConfigError(f"data.context_length={data.context_length} is longer than a split of data.name={data.name!r}")
    # The mask character counts as a character of the prompt: it marks what to fill in.
    language_model.check_prompt_characters(config.sample.prompt, characters + data.mask_char, data.name)
    self.masking = Masking(
        data.mask_rate, data.mask_token_fraction, data.random_token_fraction, mask_id=len(characters), num_tokens=len(characters)
    )
    self.model_config = model_config(config, self.tokenizer.vocab_size)
    self.model = encoder.Encoder(self.model_config)

  def init_params(self, rng):
    return language_model.init_sequence_params(self.model, self.config.data.context_length, rng)

  def _predictions(self, params, batch, rng=None, train=False):
    """Summed cross-entropy and correct argmax predictions at the chosen positions, and their weight."""
    rngs = {"dropout": rng} if train else {}
    logits = self.model.apply({"params": params}, batch["inputs"], train=train, rngs=rngs)
    weights = batch["chosen"] * batch["weight"][:, None] if "weight" in batch else batch["chosen"]
    total, count = losses.cross_entropy(logits, batch["targets"], weights)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == batch["targets"]) * weights)
    return total, correct, count

  def loss_fn(self, params, batch, rng, train):
    total, correct, count = self._predictions(params, batch, rng, train)
    loss = total / count
    return loss, {"loss": loss, "accuracy": correct / count}

  def eval_fn(self, params, batch):
    total, correct, count = self._predictions(params, batch)
    return {"nll": total, "correct": correct, "predicted": count}

  def summarize_eval(self, sums):
    loss = sums["nll"] / sums["predicted"]
    return {"loss": loss, "accuracy": sums["correct"] / sums["predicted"], "predicted_tokens": sums["predicted"]}

  def train_batches(self, seed, process_index, process_count):
    batch_size = self.config.data.batch_size
    tokens = self.tokenizer.encode(self.train_text)
    windows = pipeline.token_windows(tokens, self.config.data.context_length - 1)  # windows of context_length
    batches = pipeline.training_batches(windows, batch_size, seed, process_index, process_count, batch_fn=np.stack)
    local_rows = np.arange(batch_size // process_count)

    def mask(index, batch):
      # Batch `index` of this process holds examples process_index + k * process_count of
      # the global stream's batch `index` (pipeline.training_batches); each is masked by its own generator.
      stream_positions = index * batch_size + process_index + local_rows * process_count
      masked = [self.masking(row[None], np.random.default_rng((seed, int(p)))) for row, p in zip(batch, stream_positions)]
      return {name: np.concatenate([m[name] for m in masked]) for name in masked[0]}

    return batches.map_with_index(mask)

  def eval_batches(self):
    return self._eval_batches

  @functools.cached_property
  def _eval_batches(self):
    """Every non-overlapping window of the validation text, each masked once with a fixed seed.

    Built once per task: the trainer asks at every evaluation.
    """
    length = self.config.data.context_length
    windows = pipeline.token_windows(self.tokenizer.encode(self.validation_text), length - 1, stride=length)
    # Indexed rather than iterated: see LanguageModelTask.eval_batches.
    windows = np.stack([windows[i] for i in range(len(windows))])
    masked = self.masking(windows, np.random.default_rng(EVAL_MASKING_SEED))
    return pipeline.padded_batches(masked, self.config.data.eval_batch_size)

  def units_per_step(self):
    return self.config.data.batch_size * self.config.data.context_length

  def model_flops_per_step(self):
    return self.model_config.flops_per_token(self.config.data.context_length) * self.units_per_step()

  def sample(self, params, rng, prompts=None, stream=None):
    """The prompt with each [MASK] replaced by the most likely character (one forward pass; nothing is drawn)."""
    del rng, stream
    if prompts is not None and list(prompts) != [self.config.sample.prompt]:
      raise ConfigError(f"task {self.config.task!r} fills in one prompt, sample.prompt (--prompt), not several")
    prompt = self.config.sample.prompt
    tokens = self.tokenizer.encode(prompt)
    logits = jax.jit(self.model.apply)({"params": params}, jnp.asarray(tokens)[None])[0]
    best = np.asarray(jnp.argmax(logits[:, : self.masking.num_tokens], axis=-1))  # a character, never [MASK]
    filled = np.where(tokens == self.masking.mask_id, best, tokens)
    return self.tokenizer.decode(filled)


def model_config(config, data_vocab_size: int) -> encoder.EncoderConfig:
  """The model dataclass from `config.model` (a preset plus overrides) and the data's vocabulary ([MASK] included)."""
  fields = dict(config.model)
  fields["vocab_size"] = language_model.vocab_size(config, data_vocab_size)
  return encoder.preset(fields.pop("preset"), **fields)
