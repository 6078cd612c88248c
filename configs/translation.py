"""English→German translation of LibreOffice's help and user interface (experiments/data/parallel.py).

    python run.py --config=configs/translation.py --workdir=workdirs/translation             # Transformer
    python run.py --config=configs/translation.py:rnn --workdir=workdirs/translation_rnn     # bi-GRU + attention
    python run.py --config=configs/translation.py --workdir=workdirs/translation --mode=sample \
        --prompt="Click the Save button."
    python run.py --config=configs/translation.py:test --workdir=/tmp/tiny                 # seconds, for tests

The variant names the family ("transformer", the default, "rnn", or a decoder-only Transformer reading the source
as its prompt: "decoder_only", "prefix_lm"), then optionally ",test": `:rnn,test`. Any field can be overridden: --config.model.attention=dot, --config.data.name=bible_en_es,
--config.sample.strategy=beam (BLEU is measured with the `sample` section's strategy).
"""
import ml_collections

from configs import parse_variant, shakespeare_char

FAMILIES = ("transformer", "rnn", "decoder_only", "prefix_lm")
# Vaswani et al. 2017, sec. 5.3: Adam with beta_2 0.98, eps 1e-9, inverse-square-root decay after a warm-up. Their
# eq. 3 peaks at width^-0.5 / sqrt(warm-up) = 3e-3 for width 256 and 400 warm-up steps; 2e-3 here: the base model's
# validation loss after 750 steps was 3.50 nats at 2e-3 against 3.95 at 1e-3 (post-LN; pre-LN at 2e-3: 3.74).
TRANSFORMER_OPTIMIZER = dict(learning_rate=2e-3, schedule="rsqrt", warmup_steps=400, b2=0.98, eps=1e-9, weight_decay=0.0)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  family, test = parse_variant(variant, FAMILIES, "translation")
  config = ml_collections.ConfigDict()
  config.task = "translation"
  config.seed = 0
  config.init_from = ""

  config.data = dict(
      name="libreoffice_en_de",  # or libreoffice_en_fr, bible_en_es
      data_dir="",  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      source_dir="",  # "" = fetch and unpack the Debian packages (apt-get download) into the data dir
      vocab_size=8000,  # one SentencePiece vocabulary for both languages, trained on the train split
      max_source_len=96,  # tokens, EOS included; longer training pairs (0.8 %) are left out
      max_target_len=96,
      length_buckets=3,  # batches of pairs up to 24, 48 or 96 tokens: one compiled step each
      batch_size=64,
      eval_batch_size=128,
  )
  if family == "transformer":
    # Vaswani et al. 2017's base recipe, scaled down (experiments run on 2 CPU cores): post-LN, sinusoidal
    # positions, one embedding for source, target and output, dropout and label smoothing 0.1.
    # key_size: the query/key head size, 0 for width / num_heads (Table 3 (B) varies it: --config.model.key_size=16).
    config.model = dict(architecture="transformer", preset="transformer-small", key_size=0, dropout_rate=0.1)
    optimizer, label_smoothing = TRANSFORMER_OPTIMIZER, 0.1
  elif family == "rnn":
    # Bahdanau et al. 2015: a bidirectional GRU encoder, additive attention (Adam here, not Adadelta).
    config.model = dict(architecture="rnn", preset="bahdanau2015", dropout_rate=0.1)
    optimizer = dict(learning_rate=1e-3, schedule="constant", warmup_steps=100, b2=0.999, eps=1e-8, weight_decay=0.0)
    label_smoothing = 0.0
  else:
    # One stack of the Transformer's blocks over source, EOS, BOS, target (Raffel et al. 2020, sec. 3.2.1), causal or
    # seeing its prompt both ways; pre-LN, as T5's, so it trains without the encoder-decoder's warm-up care.
    config.model = dict(
        architecture=family, preset="shakespeare_char", num_layers=6, width=256, num_heads=4, key_size=0, mlp_dim=1024,
        positions="sinusoidal", activation="relu", norm_position="pre", dropout_rate=0.1,
    )
    optimizer, label_smoothing = TRANSFORMER_OPTIMIZER, 0.1
  config.optimizer = dict(b1=0.9, final_lr_fraction=0.1, clip_norm=1.0, **optimizer)
  config.objective = dict(
      label_smoothing=label_smoothing,
      teacher_forcing="always",  # RNN: linear | exponential | inverse_sigmoid (Bengio et al. 2015) | never
      decay_k=1.0,
      decay_c=0.0,
      min_teacher_forcing=0.0,
  )
  # BLEU of the whole test split after training, decoded as `sample` says, and with each of beam_widths (1: greedy).
  config.evaluation = dict(split="test", sentences=0, examples=10, beam_widths=())
  config.train = dict(
      num_steps=3000,
      log_every=25,
      eval_every=500,
      eval_batches=4,
      checkpoint_every=500,
      keep_checkpoints=3,
      profile_steps=0,
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  # How translations are decoded (decoders.decoding): the sample section of configs/shakespeare_char.py, greedy;
  # strategy "beam" with beam_width and length_penalty for beam search (Wu et al. 2016).
  config.sample = shakespeare_char.get_config().sample.to_dict()
  config.sample.update(prompt="Click the Save button to save the document.", num_tokens=96, temperature=0.0)

  if test:
    config.data.update(vocab_size=400, max_source_len=24, max_target_len=24, batch_size=8, eval_batch_size=16)
    if family == "transformer":
      config.model.update(num_encoder_layers=1, num_decoder_layers=1, width=32, num_heads=2, mlp_dim=64)
    elif family == "rnn":
      config.model.update(width=32, embed_dim=16)
    else:
      config.model.update(num_layers=2, width=32, num_heads=2, mlp_dim=64)
    config.optimizer.warmup_steps = 2
    config.evaluation.update(sentences=16, examples=2)
    config.train.update(num_steps=4, log_every=2, eval_every=2, eval_batches=1, checkpoint_every=2)
  return ml_collections.ConfigDict(config)
