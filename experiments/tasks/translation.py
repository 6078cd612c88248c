"""Sentence-level translation: RNN (Cho, Bahdanau, Luong) or Transformer (Vaswani, T5, BART) encoder-decoders, or a
decoder-only Transformer reading the source as a prompt, plain or as a prefix LM (Raffel et al. 2020, sec. 3.2).

The pairs and the shared SentencePiece vocabulary come from experiments/data/parallel.py
(LibreOffice en→de by default). A source is its tokens and EOS; the decoder reads
BOS + target and predicts target + EOS, teacher-forced, or (RNN, `objective.teacher_forcing`)
sometimes fed its own samples (Bengio et al. 2015). Evaluation is teacher-forced loss on the
validation split, then, at the end of training and in --mode=eval, BLEU and chrF (sacreBLEU)
of the detokenised translations of `evaluation.split`, decoded by the `sample` section's strategy
through decoders.decoding.generate, overall and per source-length bucket.

A decoder-only model reads source, EOS, BOS, target as one sequence (the rows are packed so on the device) and is
trained on the target alone; a prefix LM sees its prompt (source, EOS, BOS) both ways, as it does when generating.

Training batches hold pairs of one length bucket, padded to its lengths (a compiled step per bucket; the longest
is data.max_source_len / max_target_len). Training drops pairs longer than those (counted); translation truncates
a longer source to max_source_len, with a warning, and scores every sentence against its whole reference.
"""
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu

from decoders import decoding, losses
from decoders.errors import ConfigError
from decoders.models import decoder_lm, encoder_decoder, rnn_seq2seq
from experiments.config_rules import TEXT, Rule, fields_of, integer, number, one_of, show
from experiments.data import parallel, pipeline
from experiments.data import sentencepiece_vocab as vocab_lib
from experiments.tasks import text_sampling
from experiments.tasks.base import ModelDescription, Task


@dataclasses.dataclass(frozen=True)
class Architecture:
  preset: Callable  # (name, **overrides) -> config
  module: type  # the Flax module, made from that config
  presets: dict
  config_fields: frozenset  # the model.* keys it takes
  encoder_decoder: bool = True  # False: a DecoderLM reading the source as its prompt


DECODER_ONLY_FIELDS = frozenset(f.name for f in dataclasses.fields(decoder_lm.DecoderLMConfig)) - {"prefix_lm"}


ARCHITECTURES = {
    "rnn": Architecture(
        rnn_seq2seq.preset, rnn_seq2seq.RNNSeq2Seq, rnn_seq2seq.PRESETS,
        frozenset(field.name for field in dataclasses.fields(rnn_seq2seq.RNNSeq2SeqConfig)),
    ),
    "transformer": Architecture(
        encoder_decoder.preset, encoder_decoder.EncoderDecoder, encoder_decoder.PRESETS, encoder_decoder.OVERRIDABLE
    ),
    "decoder_only": Architecture(
        decoder_lm.preset, decoder_lm.DecoderLM, decoder_lm.PRESETS, DECODER_ONLY_FIELDS, encoder_decoder=False
    ),
    "prefix_lm": Architecture(
        functools.partial(decoder_lm.preset, prefix_lm=True), decoder_lm.DecoderLM, decoder_lm.PRESETS,
        DECODER_ONLY_FIELDS, encoder_decoder=False,
    ),
}
# How often the decoder is fed the true previous token: "always" (teacher forcing), with a probability ε_i that
# decays over training steps i (scheduled sampling, Bengio et al. 2015, sec. 2.4), or "never" (always its own sample).
TEACHER_FORCING = ("always", "linear", "exponential", "inverse_sigmoid", "never")
# Source-length buckets (words) for BLEU by length (Bahdanau et al. 2015, Fig. 2): [0, 10), [10, 20), ...
BUCKET_WORDS = 10


def _model_fields() -> dict:
  """The rules of every architecture's fields; check_config then refuses one the chosen architecture lacks."""
  return {
      **fields_of(decoder_lm.DecoderLMConfig),
      **fields_of(encoder_decoder.EncoderDecoderConfig, exclude=["stack"]),
      **fields_of(rnn_seq2seq.RNNSeq2SeqConfig),
  }


class TranslationTask(Task):
  """Source sentence -> target sentence; loss in nats per target token, BLEU and chrF of greedy/beam output."""

  unit = "tokens"
  config_schema = {
      "data": {
          "name": one_of(parallel.PAIRS),
          "source_dir": TEXT,
          "vocab_size": integer(8),
          "max_source_len": integer(2),
          "max_target_len": integer(2),
          # Training batches hold pairs of one length bucket: bucket b of B pads to 2^(b+1-B) of the maximum lengths,
          # so short pairs stop paying for the longest's padding (one compiled step per bucket); 1: no buckets.
          "length_buckets": integer(1, below=6),
      },
      "model": {"architecture": one_of(ARCHITECTURES), "preset": TEXT, **_model_fields()},
      "objective": {
          "label_smoothing": number(0, 1, high_open=True),  # Szegedy et al. 2016; Vaswani et al. 2017 use 0.1
          "teacher_forcing": one_of(TEACHER_FORCING),  # anything but "always": RNN decoders only
          "decay_k": number(0, low_open=True),  # linear: ε_0; exponential: k < 1; inverse sigmoid: k >= 1
          "decay_c": number(0),  # linear: ε lost per step
          "min_teacher_forcing": number(0, 1),  # linear: the floor ε
      },
      "evaluation": {
          "split": one_of(("validation", "test")),  # what BLEU is measured on
          "sentences": integer(0),  # the first N sentences of that split; 0: all of them
          "examples": integer(0),  # the final sample shows this many of them, translated, beside their references
          # Also BLEU with beam search of each width (1: greedy), as bleu_beam_<width>: "beam vs greedy, BLEU vs
          # beam width" in one run; () for none.
          "beam_widths": Rule(
              tuple, "a tuple of beam widths >= 1", lambda v: all(type(w) is int and w >= 1 for w in v)
          ),
      },
      "sample": text_sampling.SCHEMA,
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    del mesh_shape
    model_config(config, vocab_size=config.data.vocab_size)  # unknown presets, fields of another architecture
    objective = config.objective
    if objective.teacher_forcing != "always" and config.model.architecture != "rnn":
      raise ConfigError(
          f"objective.teacher_forcing={objective.teacher_forcing!r} is for model.architecture='rnn' "
          f"(its decoder feeds itself step by step), not {config.model.architecture!r}"
      )
    if objective.teacher_forcing == "exponential" and not objective.decay_k < 1:
      raise ConfigError(f"objective.decay_k={objective.decay_k} must be < 1 for an exponential decay (ε_i = k^i)")
    if objective.teacher_forcing == "inverse_sigmoid" and not objective.decay_k >= 1:
      raise ConfigError(f"objective.decay_k={objective.decay_k} must be >= 1 for an inverse sigmoid decay")
    text_sampling.check(config.sample)
    if not config.sample.prompt.strip():
      raise ConfigError(f"sample.prompt={show(config.sample.prompt)} is empty: give a source sentence to translate")

  @classmethod
  def describe(cls, config):
    # The config alone gives the model: data.vocab_size is the SentencePiece vocabulary's exact size.
    model = ARCHITECTURES[config.model.architecture].module(model_config(config, config.data.vocab_size))
    return ModelDescription(
        init_params=functools.partial(init_params, model, config),
        embeddings=("embed", "source_embed", "positions", "unembed"),  # tables of tokens and positions
    )

  def __init__(self, config):
    super().__init__(config)
    data = config.data
    self.vocabulary = vocab_lib.shared_vocabulary(data.name, data.data_dir, data.vocab_size, data.source_dir)
    self.model_config = model_config(config, self.vocabulary.size)
    self.model = ARCHITECTURES[config.model.architecture].module(self.model_config)
    self.architecture = config.model.architecture
    train_pairs = parallel.load_pairs(data.name, "train", data.data_dir, data.source_dir)
    self.train_rows, dropped = self._encode_pairs(train_pairs)
    if dropped:
      print(f"translation: {dropped} of {len(train_pairs)} training pairs exceed data.max_source_len="
            f"{data.max_source_len} / max_target_len={data.max_target_len} tokens and are left out", file=sys.stderr)
    self.validation_rows, _ = self._encode_pairs(parallel.load_pairs(data.name, "validation", data.data_dir,
                                                                     data.source_dir))
    if not len(self.train_rows["targets"]) or not len(self.validation_rows["targets"]):
      raise ConfigError(f"data.max_source_len/max_target_len leave no pair of data.name={data.name!r} in a split")

  # -- data ---------------------------------------------------------------------------------------

  def encode_source(self, text: str) -> list[int]:
    """A source sentence's tokens and EOS; a ConfigError for an empty one."""
    if not text.strip():
      raise ConfigError("an empty source sentence: there is nothing to translate")
    return self.vocabulary.encode(text) + [vocab_lib.EOS_ID]

  def _encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, np.ndarray], int]:
    """Padded arrays of the pairs that fit the lengths, and how many did not."""
    data = self.config.data
    source_len, target_len = data.max_source_len, data.max_target_len
    rows = []
    for source, target in pairs:
      source_ids = self.vocabulary.encode(source) + [vocab_lib.EOS_ID]
      target_ids = self.vocabulary.encode(target)
      if len(source_ids) <= source_len and len(target_ids) + 1 <= target_len:
        rows.append((source_ids, target_ids))
    arrays = {
        "encoder_tokens": np.zeros((len(rows), source_len), np.int32),
        "encoder_lengths": np.zeros((len(rows),), np.int32),
        "decoder_tokens": np.zeros((len(rows), target_len), np.int32),
        "targets": np.zeros((len(rows), target_len), np.int32),
        "target_weights": np.zeros((len(rows), target_len), np.float32),
    }
    for i, (source_ids, target_ids) in enumerate(rows):
      arrays["encoder_tokens"][i, : len(source_ids)] = source_ids
      arrays["encoder_lengths"][i] = len(source_ids)
      arrays["decoder_tokens"][i, : len(target_ids) + 1] = [vocab_lib.BOS_ID, *target_ids]
      arrays["targets"][i, : len(target_ids) + 1] = [*target_ids, vocab_lib.EOS_ID]
      arrays["target_weights"][i, : len(target_ids) + 1] = 1.0
    return arrays, len(pairs) - len(rows)

  def bucket_lengths(self) -> list[tuple[int, int]]:
    """(source, target) padded lengths of each length bucket, shortest first; the last is the maximum."""
    data = self.config.data
    count = data.length_buckets
    return [(-(-data.max_source_len // 2**k), -(-data.max_target_len // 2**k)) for k in reversed(range(count))]

  def train_batches(self, seed, process_index, process_count):
    arrays, lengths = self.train_rows, self.bucket_lengths()
    source_lengths, target_lengths = arrays["encoder_lengths"], arrays["target_weights"].sum(axis=1)
    fits = np.stack([(source_lengths <= s) & (target_lengths <= t) for s, t in lengths], axis=1)
    buckets = np.argmax(fits, axis=1)  # the shortest that holds both sides (the last holds every kept pair)

    def crop(batch, bucket):
      source, target = lengths[bucket]
      return {name: array[:, : source if name == "encoder_tokens" else target] if array.ndim == 2 else array
              for name, array in batch.items()}

    batches = pipeline.length_bucketed_batches(
        arrays, buckets, crop, self.config.data.batch_size, seed, process_index, process_count
    )
    # Batch i is step i's (pipeline.BatchIterator), so the step, which scheduled sampling's decay reads, rides along.
    return batches.map_with_index(lambda step, batch: {**batch, "step": np.full(len(batch["targets"]), step, np.int32)})

  def eval_batches(self):
    return pipeline.padded_batches(self.validation_rows, self.config.data.eval_batch_size)

  def units_per_step(self):
    """Target tokens (EOS included) a step trains on, on average over the training pairs: padding is no token."""
    return round(self.config.data.batch_size * float(np.mean(self.train_rows["target_weights"].sum(axis=1))))

  # -- model and losses -----------------------------------------------------------------------------

  def init_params(self, rng):
    return init_params(self.model, self.config, rng)

  def _logits(self, params, batch, train=False, rng=None):
    """Logits [batch, target length, vocab] of each target token, whatever the architecture."""
    rngs = None if rng is None else dict(zip(("dropout", "sampling"), jax.random.split(rng)))
    if not ARCHITECTURES[self.architecture].encoder_decoder:
      return self._decoder_only_logits(params, batch, train, rngs)
    options = {}
    if train and self.config.objective.teacher_forcing != "always":
      options["teacher_forcing"] = teacher_forcing_probability(self.config.objective, batch["step"][0])
    return self.model.apply(
        {"params": params}, batch["encoder_tokens"], batch["decoder_tokens"],
        encoder_lengths=batch["encoder_lengths"], train=train, rngs=rngs, **options,
    )

  def _decoder_only_logits(self, params, batch, train, rngs):
    """A decoder-only model over each row's source then decoder tokens, packed together: target t's logits sit at
    position source length + t. A prefix LM sees the source, EOS and BOS both ways (its prompt when generating)."""
    source, source_lengths, decoder = batch["encoder_tokens"], batch["encoder_lengths"], batch["decoder_tokens"]
    width = source.shape[1] + decoder.shape[1]
    positions = jnp.arange(width)[None]
    from_decoder = positions >= source_lengths[:, None]
    index = jnp.where(from_decoder, source.shape[1] + positions - source_lengths[:, None], positions)
    tokens = jnp.take_along_axis(jnp.concatenate([source, decoder], axis=1), jnp.minimum(index, width - 1), axis=1)
    tokens = jnp.where(index < width, tokens, 0)
    prefix = source_lengths + 1 if self.architecture == "prefix_lm" else None
    logits = self.model.apply({"params": params}, tokens, train=train, prefix_lengths=prefix, rngs=rngs)
    at_targets = source_lengths[:, None] + jnp.arange(decoder.shape[1])[None]
    return jnp.take_along_axis(logits, at_targets[..., None], axis=1)

  def loss_fn(self, params, batch, rng, train):
    logits = self._logits(params, batch, train, rng)
    total, count = losses.cross_entropy(
        logits, batch["targets"], batch["target_weights"], self.config.objective.label_smoothing,
        self.model_config.vocab_size,
    )
    loss = total / count
    return loss, {"loss": loss}

  def eval_fn(self, params, batch):
    logits = self._logits(params, batch)
    weights = batch["target_weights"] * batch["weight"][:, None]  # weight 0: a padding row
    total, count = losses.cross_entropy(logits, batch["targets"], weights)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == batch["targets"]) * weights)
    return {"nll": total, "tokens": count, "correct": correct}

  def summarize_eval(self, sums):
    loss = sums["nll"] / sums["tokens"]
    return {"loss": loss, "perplexity": float(np.exp(loss)), "token_accuracy": sums["correct"] / sums["tokens"]}

  # -- translation ---------------------------------------------------------------------------------

  def max_new_tokens(self) -> int:
    """The most tokens a translation may have (EOS included): sample.num_tokens, within what the decoder takes
    after its prompt (BOS; a decoder-only model's is source, EOS and BOS)."""
    prompt = 1 if ARCHITECTURES[self.architecture].encoder_decoder else self.config.data.max_source_len + 1
    return min(self.config.sample.num_tokens, self.model_config.max_len - prompt)

  def translate(self, params, sources: Sequence[str], strategy=None) -> list[str]:
    """The detokenised translations of `sources`, decoded by `strategy` (default: the `sample` section's).

    Batches are padded to eval_batch_size rows and max_source_len tokens, so one loop compiles;
    a longer source is truncated to max_source_len (EOS kept last), with a warning.
    """
    data = self.config.data
    strategy = strategy or text_sampling.strategy(self.config.sample)
    encoded = [self.encode_source(s) for s in sources]
    long = sum(len(ids) > data.max_source_len for ids in encoded)
    if long:
      print(f"translation: {long} of {len(encoded)} sources exceed data.max_source_len={data.max_source_len} "
            "tokens and are truncated", file=sys.stderr)
    encoded = [ids if len(ids) <= data.max_source_len else [*ids[: data.max_source_len - 1], vocab_lib.EOS_ID]
               for ids in encoded]
    translations = []
    for start in range(0, len(encoded), data.eval_batch_size):
      chunk = encoded[start : start + data.eval_batch_size]
      chunk = chunk + [chunk[0]] * (data.eval_batch_size - len(chunk))  # full batches: one compiled loop
      translations += [self.vocabulary.decode(row) for row in self._generate(params, chunk, strategy).rows()]
    return translations[: len(encoded)]

  def _generate(self, params, sources: Sequence[list[int]], strategy) -> decoding.Generation:
    """The model's continuation of each source (tokens and EOS, at most max_source_len), padded to that width.

    An encoder-decoder encodes the sources and continues BOS; a decoder-only model continues source, EOS, BOS."""
    encoder_decoder = ARCHITECTURES[self.architecture].encoder_decoder
    rows = sources if encoder_decoder else [[*ids, vocab_lib.BOS_ID] for ids in sources]
    tokens = np.zeros((len(rows), self.config.data.max_source_len + (not encoder_decoder)), np.int32)
    for row, ids in enumerate(rows):
      tokens[row, : len(ids)] = ids
    lengths = np.array([len(ids) for ids in rows])
    options = dict(strategy=strategy, max_new_tokens=self.max_new_tokens(), eos_id=vocab_lib.EOS_ID)
    if not encoder_decoder:
      return decoding.generate(self.model, params, tokens, prompt_lengths=lengths, **options)
    return decoding.generate(
        self.model, params, [[vocab_lib.BOS_ID]] * len(sources), encoder_tokens=tokens, encoder_lengths=lengths,
        **options,
    )

  def generation_metrics(self, params) -> dict[str, float]:
    """BLEU and chrF of `evaluation.split`'s translations, overall and per source-length bucket (in words)."""
    sources, references = self.evaluation_pairs()
    default = text_sampling.strategy(self.config.sample)
    hypotheses = self.translate(params, sources, default)
    scores = score_translations(sources, hypotheses, references)
    for width in self.config.evaluation.beam_widths:
      penalty = self.config.sample.length_penalty
      search = decoding.Beam(width, length_penalty=penalty) if width > 1 else decoding.Greedy()
      translations = hypotheses if search == default else self.translate(params, sources, search)  # decoded once
      scores[f"bleu_beam_{width}"] = sacrebleu.corpus_bleu(translations, [references]).score
    return {name: value for name, value in scores.items() if not name.startswith("count")}

  def evaluation_pairs(self) -> tuple[list[str], list[str]]:
    evaluation, data = self.config.evaluation, self.config.data
    pairs = parallel.load_pairs(data.name, evaluation.split, data.data_dir, data.source_dir)
    if evaluation.sentences:
      pairs = pairs[: evaluation.sentences]
    return [s for s, _ in pairs], [t for _, t in pairs]

  def alignment(self, params, prompt):
    """The source's tokens, its translation's tokens (EOS included) and the attention of each translated token over
    the source [outputs, sources]: the RNN's attention, or the Transformer's last cross-attention averaged over
    heads."""
    if not ARCHITECTURES[self.architecture].encoder_decoder:
      raise ConfigError(f"model.architecture={self.architecture!r} has no attention over a separate source to draw")
    source = self.encode_source(prompt)
    if len(source) > self.config.data.max_source_len:
      limit = self.config.data.max_source_len
      raise ConfigError(f"a source of {len(source)} tokens exceeds data.max_source_len={limit}")
    output = self._generate(params, [source], text_sampling.strategy(self.config.sample)).rows()[0]
    weights = self.model.apply(
        {"params": params}, jnp.asarray([source]), jnp.asarray([[vocab_lib.BOS_ID, *output[:-1]]]),
        method="alignments",
    )[0]
    weights = np.asarray(weights.mean(axis=0) if weights.ndim == 3 else weights)  # heads averaged
    return self.vocabulary.pieces(source), self.vocabulary.pieces(output), weights

  def sample(self, params, rng, prompts=None, stream=None):
    """Each source sentence and its translation, a line each. By default: sample.prompt, then the first
    `evaluation.examples` sentences of the evaluation split with their references."""
    del rng, stream  # one translation per source: printed whole
    if prompts:
      return "\n".join(f"{s}\n  -> {t}" for s, t in zip(prompts, self.translate(params, prompts)))
    sources, references = self.evaluation_pairs()
    count = self.config.evaluation.examples
    sources, references = [self.config.sample.prompt, *sources[:count]], [None, *references[:count]]
    lines = []
    for source, reference, translation in zip(sources, references, self.translate(params, sources)):
      lines += [source, f"  -> {translation}"] + ([] if reference is None else [f"  reference: {reference}"])
    return "\n".join(lines)


def init_params(model, config, rng):
  """A model's parameters from one all-ones batch of the config's shapes (a decoder-only model: both sides as one)."""
  data = config.data
  if isinstance(model, decoder_lm.DecoderLM):
    return model.init(rng, jnp.ones((1, data.max_source_len + data.max_target_len), jnp.int32))["params"]
  source, target = (jnp.ones((1, length), jnp.int32) for length in (data.max_source_len, data.max_target_len))
  return model.init(rng, source, target)["params"]


def score_translations(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """sacreBLEU BLEU and chrF overall, and BLEU per bucket of BUCKET_WORDS source words ("bleu_words_10_19", ...)."""
  scores = {
      "bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
      "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
      "sentences": float(len(hypotheses)),
  }
  buckets = {}
  for source, hypothesis, reference in zip(sources, hypotheses, references):
    buckets.setdefault(len(source.split()) // BUCKET_WORDS, []).append((hypothesis, reference))
  for bucket, pairs in sorted(buckets.items()):
    low = bucket * BUCKET_WORDS
    name = f"words_{low}_{low + BUCKET_WORDS - 1}"
    scores[f"bleu_{name}"] = sacrebleu.corpus_bleu([h for h, _ in pairs], [[r for _, r in pairs]]).score
    scores[f"count_{name}"] = float(len(pairs))
  return scores


def teacher_forcing_probability(objective, step: jax.Array) -> jax.Array:
  """ε_i, the probability of feeding the true previous token at training step i (Bengio et al. 2015, sec. 2.4)."""
  i = jnp.asarray(step, jnp.float32)
  k, schedule = objective.decay_k, objective.teacher_forcing
  if schedule == "linear":
    return jnp.maximum(objective.min_teacher_forcing, k - objective.decay_c * i)
  if schedule == "exponential":
    return jnp.power(k, i)
  if schedule == "inverse_sigmoid":
    return k / (k + jnp.exp(i / k))
  return jnp.float32(1.0 if schedule == "always" else 0.0)


def model_config(config, vocab_size: int):
  """The model dataclass of `config.model`: the architecture's preset, its overrides and the data's vocabulary."""
  fields = dict(config.model)
  architecture = ARCHITECTURES[fields.pop("architecture")]
  name = fields.pop("preset")
  if name not in architecture.presets:
    raise ConfigError(
        f"model.preset={show(name)} is not a {config.model.architecture} preset; expected one of "
        f"{sorted(architecture.presets)}"
    )
  foreign = sorted(set(fields) - architecture.config_fields)
  if foreign:
    raise ConfigError(f"model.{foreign[0]} is not a field of a model.architecture={config.model.architecture!r} model")
  if "vocab_size" in fields:
    raise ConfigError(f"model.vocab_size={fields['vocab_size']}: the vocabulary is the data's (data.vocab_size)")
  data = config.data
  # An encoder-decoder reads each side alone; a decoder-only model reads them as one sequence.
  longest = max if architecture.encoder_decoder else sum
  longest, what = longest((data.max_source_len, data.max_target_len)), "data.max_source_len/max_target_len"
  fields.setdefault("max_len", longest)
  if fields["max_len"] < longest:
    raise ConfigError(f"model.max_len={fields['max_len']} is shorter than the {longest} tokens {what} give")
  return architecture.preset(name, vocab_size=vocab_size, **fields)
