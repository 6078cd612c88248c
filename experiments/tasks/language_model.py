"""Decoder-only language modelling on text (the default `make run` job: characters of Shakespeare).

The tokens are the data's characters, or (data.tokenizer="init_from") the subword
tokenizer that came with the pretrained weights of `init_from`. Losses are reported
per token and per character, so models with different tokenizers compare.
"""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from decoders import losses
from decoders.errors import ConfigError
from decoders.layers import partitioning
from decoders.models import decoder_lm
from experiments import pretrained, sharding
from experiments.config_rules import TEXT, fields_of, integer, one_of, show
from experiments.data import pipeline, shakespeare
from experiments.tasks import text_sampling
from experiments.tasks.base import ModelDescription, Task

DATASETS = {"shakespeare_char": shakespeare.load_split_documents}  # each split as its documents
# How a split becomes rows of context_length tokens: "stream" cuts them from its documents joined
# as one text; "documents" cuts the same rows but keeps the documents apart inside them
# (pipeline.packed_windows: no attention across a boundary, positions restart).
PACKINGS = ("stream", "documents")
# "char": the data's own characters; "init_from": the tokenizer stored with config.init_from's weights.
TOKENIZERS = ("char", "init_from")


class LanguageModelTask(Task):
  """Next-token prediction with a `DecoderLM`; loss in nats per token (= per character here)."""

  unit = "tokens"
  config_schema = {
      "data": {
          "name": one_of(DATASETS),
          "source_dir": TEXT,
          "context_length": integer(1),
          "packing": one_of(PACKINGS),
          "tokenizer": one_of(TOKENIZERS),
      },
      # A preset's fields, any of which the config may override. The vocabulary is the data's
      # unless model.vocab_size asks for more rows (a published shape, or a benchmark's size).
      "model": {"preset": one_of(decoder_lm.PRESETS), **fields_of(decoder_lm.DecoderLMConfig)},
      "sample": text_sampling.SCHEMA,
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    # The vocabulary comes with the data; none of DecoderLMConfig's own checks depends on its size.
    model = model_config(config, data_vocab_size=1)
    context = config.data.context_length
    if context > model.max_len:
      raise ConfigError(f"data.context_length={context} exceeds model.max_len={model.max_len}")
    if model.sliding_window > context:
      raise ConfigError(
          f"model.sliding_window={model.sliding_window} exceeds data.context_length={context}: it would never bind"
      )
    check_stack_divisible(model, mesh_shape, vocab_given=bool(config.model.get("vocab_size")))
    if config.data.tokenizer == "init_from" and not config.init_from:
      raise ConfigError("data.tokenizer='init_from' needs init_from (the weights whose tokenizer to use)")
    text_sampling.check(config.sample)
    prompt = config.sample.prompt
    if not prompt:
      raise ConfigError("sample.prompt='' is empty: a sample needs at least one token to start from")
    if config.data.tokenizer == "char" and len(prompt) > context:  # a subword prompt is measured once tokenized
      raise ConfigError(f"sample.prompt={show(prompt)} has {len(prompt)} characters; data.context_length={context} is the most")

  @classmethod
  def describe(cls, config):
    # With model.vocab_size the config alone gives the model; without it the vocabulary is the data's.
    model = model_config(config, data_vocab_size=1) if config.model.get("vocab_size") else cls(config).model_config
    context = config.data.context_length
    # Each token adds a key and a value per layer and KV head: what GQA and MQA shrink (Ainslie et al. 2023); the
    # keys are of the key size (model.key_size), the values of width / num_heads.
    axes = (None, partitioning.KV_HEADS, partitioning.HEAD_DIM)
    key = ((model.num_layers, model.kv_heads, model.key_dim), axes)
    value = ((model.num_layers, model.kv_heads, model.head_dim), axes)
    return ModelDescription(
        init_params=functools.partial(init_sequence_params, decoder_lm.DecoderLM(model), context),
        embeddings=("embed", "positions", "unembed"),  # num_params(include_embeddings=False) leaves these out
        flops_per_unit=model.flops_per_token(context),
        cache_per_token={"key": key, "value": value},
        # A sliding window's cache is a rolling buffer of its last W tokens (Jiang et al. 2023, sec. 2).
        cache_tokens=min(context, model.sliding_window or context),
    )

  def __init__(self, config):
    super().__init__(config)
    data = config.data
    load = DATASETS[data.name]
    self.train_documents = load(data.data_dir, "train", data.source_dir)
    self.validation_documents = load(data.data_dir, "validation", data.source_dir)
    self.train_text, self.validation_text = "".join(self.train_documents), "".join(self.validation_documents)
    if data.tokenizer == "init_from":
      self.tokenizer = pretrained.load(config.init_from).tokenizer
      if self.tokenizer is None:
        raise ConfigError(f"data.tokenizer='init_from': init_from={config.init_from!r} comes with no tokenizer")
    else:
      self.tokenizer = pipeline.CharTokenizer.from_text(self.train_text + self.validation_text)
    shortest = min(len(self.train_text), len(self.validation_text))
    if data.context_length >= shortest:
      raise ConfigError(f"data.context_length={data.context_length} leaves no window in a split of {shortest} characters")
    self.model_config = model_config(config, self.tokenizer.vocab_size)
    prompt_tokens = len(self._prompt(config.sample.prompt))
    if prompt_tokens > data.context_length:
      raise ConfigError(
          f"sample.prompt={show(config.sample.prompt)} is {prompt_tokens} tokens; "
          f"data.context_length={data.context_length} is the most the model sees"
      )
    self.character_counts = self.tokenizer.character_counts()
    self.model = decoder_lm.DecoderLM(self.model_config)

  def init_params(self, rng):
    return init_sequence_params(self.model, self.config.data.context_length, rng)

  def pretrained_params(self, init_from):
    return pretrained.params_for(init_from, self.model_config)

  # Packed rows (data.packing="documents") carry segment ids, positions and target weights;
  # stream rows carry none, and the model's defaults (one document per row) apply.
  def _logits(self, params, batch, train=False, rng=None):
    return self.model.apply(
        {"params": params},
        batch["inputs"],
        train=train,
        positions=batch.get("positions"),
        segment_ids=batch.get("segment_ids"),
        rngs=None if rng is None else {"dropout": rng},
    )

  def loss_fn(self, params, batch, rng, train):
    logits = self._logits(params, batch, train, rng)
    total, count = losses.cross_entropy(logits, batch["targets"], batch.get("target_weights"))
    loss = total / count
    return loss, {"loss": loss}

  def eval_fn(self, params, batch):
    logits = self._logits(params, batch)
    weights = jnp.broadcast_to(batch["weight"][:, None], batch["targets"].shape)  # 0: a padding row
    if "target_weights" in batch:
      weights = weights * batch["target_weights"]
    total, count = losses.cross_entropy(logits, batch["targets"], weights)
    characters = jnp.sum(jnp.take(jnp.asarray(self.character_counts), batch["targets"]) * weights)
    return {"nll": total, "tokens": count, "characters": characters}

  def summarize_eval(self, sums):
    loss = sums["nll"] / sums["tokens"]
    return {
        "loss": loss,
        "bits_per_token": loss / np.log(2.0),
        "nats_per_character": sums["nll"] / sums["characters"],
        "tokens": sums["tokens"],
    }

  def train_batches(self, seed, process_index, process_count):
    rows = self._rows(self.train_documents, stride=1)
    return pipeline.training_batches(rows, self.config.data.batch_size, seed, process_index, process_count)

  def eval_batches(self):
    """Every non-overlapping window of the validation split: an exact average over its targets.

    With data.packing="documents" the targets that begin a document are left out (weight 0).
    """
    rows = self._rows(self.validation_documents, stride=self.config.data.context_length)
    # Index rather than iterate: iterating a MapDataset goes through Grain's prefetch
    # iterator, ~35x slower here (35 s instead of 1 s for the 31 k Shakespeare windows).
    rows = [rows[i] for i in range(len(rows))]
    arrays = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
    return pipeline.padded_batches(arrays, self.config.data.eval_batch_size)

  def _rows(self, documents: list[str], stride: int):
    """Windows of `context_length` inputs and their targets, `stride` apart, as `data.packing` cuts them."""
    length = self.config.data.context_length
    if self.config.data.packing == "documents":
      return pipeline.packed_windows([self._encode(d) for d in documents], length, stride)
    windows = pipeline.token_windows(self._encode("".join(documents)), length, stride)
    return windows.map(lambda window: {"inputs": window[:-1], "targets": window[1:]})

  def units_per_step(self):
    return self.config.data.batch_size * self.config.data.context_length

  def model_flops_per_step(self):
    return self.model_config.flops_per_token(self.config.data.context_length) * self.units_per_step()

  def _encode(self, text: str) -> np.ndarray:
    return np.asarray(self.tokenizer.encode(text), np.int32)

  def _prompt(self, prompt: str) -> np.ndarray:
    """A prompt as tokens; with sample.chat, as a user's message in the tokenizer's chat template."""
    if not prompt:
      raise ConfigError("an empty prompt: a sample needs at least one token to start from")
    if self.config.data.tokenizer == "char":
      check_prompt_characters(prompt, self.tokenizer.vocabulary, self.config.data.name)
    if self.config.sample.chat:
      if not hasattr(self.tokenizer, "apply_chat_template"):
        raise ConfigError("sample.chat=True needs a tokenizer with a chat template (data.tokenizer='init_from')")
      prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    tokens = self._encode(prompt)
    if len(tokens) > self.model_config.max_len:
      raise ConfigError(f"a prompt of {len(tokens)} tokens exceeds model.max_len={self.model_config.max_len}")
    return tokens

  def sample(self, params, rng, prompts=None, stream=None):
    """Each prompt (default: sample.prompt) and its continuation, as the `sample` section says;
    the speed of the generation goes to stderr."""
    encoded = [self._prompt(prompt) for prompt in (prompts or [self.config.sample.prompt])]
    out = text_sampling.generate_texts(self.model, params, self.tokenizer, encoded, self.config.sample, rng, stream)
    if out.streamed:
      stream("\n")
    print(out.speed(), file=sys.stderr, flush=True)
    return "\n\n".join(out.texts)


def model_config(config, data_vocab_size: int) -> decoder_lm.DecoderLMConfig:
  """The model dataclass from `config.model` (a preset plus overrides) and the data's vocabulary.

  `model.vocab_size`, when set, gives the model that many token rows; the data's ids are
  its first `data_vocab_size`, and the rest are never seen in training.
  """
  fields = dict(config.model)
  fields["vocab_size"] = vocab_size(config, data_vocab_size)
  return decoder_lm.preset(fields.pop("preset"), **fields)


def vocab_size(config, data_vocab_size: int) -> int:
  """`model.vocab_size` if the config sets it (never fewer rows than the data has ids), else the data's."""
  size = config.model.get("vocab_size", 0) or data_vocab_size
  if size < data_vocab_size:
    raise ConfigError(
        f"model.vocab_size={size} is smaller than the {data_vocab_size}-token vocabulary of data.name={config.data.name!r}"
    )
  return size


def init_sequence_params(model, context_length: int, rng: jax.Array):
  """A sequence model's parameters, initialised on a batch of one all-zero row."""
  return model.init(rng, jnp.zeros((1, context_length), jnp.int32))["params"]


def check_stack_divisible(model: decoder_lm.DecoderLMConfig, mesh_shape, vocab_given: bool = False) -> None:
  """A ConfigError naming the first size of a Transformer stack that its mesh axes cannot split evenly.

  The padded vocabulary splits if its multiple does; a vocabulary the config gives
  (model.vocab_size, unpadded) may split by itself, as LLaMA's 32,000 rows do.
  """
  vocab = ("model.vocab_multiple", model.vocab_multiple)
  if vocab_given and model.vocab_multiple == 1:
    vocab = ("model.vocab_size", model.vocab_size)
  for key, size, axis in (
      ("model.num_heads", model.num_heads, partitioning.HEADS),
      ("model.num_kv_heads", model.kv_heads, partitioning.KV_HEADS),  # 0 means num_heads
      ("model.mlp_dim", model.mlp_dim, partitioning.MLP),
      (*vocab, partitioning.VOCAB),
      ("model.width", model.width, partitioning.EMBED),
  ):
    sharding.check_divisible(key, size, axis, mesh_shape)


def check_prompt_characters(prompt: str, characters: str, data_name: str) -> None:
  """A ConfigError naming the characters of `prompt` that the data's vocabulary lacks."""
  unknown = sorted(set(prompt) - set(characters))
  if unknown:
    raise ConfigError(
        f"sample.prompt={show(prompt)} has characters {show(''.join(unknown))} that are not in "
        f"the {len(characters)}-character vocabulary of data.name={data_name!r}"
    )
