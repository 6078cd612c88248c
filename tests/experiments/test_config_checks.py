"""Every config key is checked before anything runs: one ConfigError line naming the key and its value.

`train.check_config` reads no data and creates nothing, so these run in milliseconds;
tests/test_run.py shows that run.py prints the same errors as one line, in every mode.
"""
import importlib
import math
import pathlib

import ml_collections
import pytest

import configs
from configs import shakespeare_char
from decoders.errors import ConfigError
from experiments import config_rules, train
from experiments.tasks import language_model

# Every config in configs/, so a new one is swept as soon as it exists.
CONFIGS = {
    path.stem: importlib.import_module(f"configs.{path.stem}").get_config
    for path in sorted(pathlib.Path(configs.__file__).parent.glob("*.py"))
    if path.stem != "__init__"
}
# Free text: any string is a valid directory or prompt here (their contents are checked later).
FREE_TEXT = {
    "data.data_dir", "data.source_dir", "data.autoencoder_workdir", "evaluation.classifier_workdir", "sample.prompt"
}
# Any finite value is valid: there is no range to leave.
UNBOUNDED = {"sample.length_penalty"}


def _leaves(config, prefix=""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _with(config, key, value) -> ml_collections.ConfigDict:
  """A copy of `config` with `key` set to `value`, whatever its type (as a config file could write it)."""
  tree = config.to_dict()
  *sections, name = key.split(".")
  node = tree
  for section in sections:
    node = node[section]
  node[name] = value
  return ml_collections.ConfigDict(tree)


def _without(config, key) -> ml_collections.ConfigDict:
  tree = config.to_dict()
  *sections, name = key.split(".")
  node = tree
  for section in sections:
    node = node[section]
  del node[name]
  return ml_collections.ConfigDict(tree)


def _check_fails(config, *fragments) -> str:
  with pytest.raises(ConfigError) as raised:
    train.check_config(config)
  message = str(raised.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message, message
  return message


ALL_KEYS = [(name, key) for name, get in CONFIGS.items() for variant in ("", "test") for key, _ in _leaves(get(variant))]


@pytest.mark.parametrize("name, variant", [(name, variant) for name in CONFIGS for variant in ("", "test")])
def test_the_shipped_configs_pass(name, variant):
  train.check_config(CONFIGS[name](variant))


@pytest.mark.parametrize("name, key", sorted(set(ALL_KEYS)))
def test_every_key_rejects_a_value_of_the_wrong_type(name, key):
  # A dict is the wrong type for every leaf.
  _check_fails(_with(CONFIGS[name]("test"), key, {"oops": 1}), f"{key}=")


@pytest.mark.parametrize("name, key", sorted({(n, k) for n, k in ALL_KEYS if k not in FREE_TEXT | UNBOUNDED}))
def test_every_key_rejects_a_value_out_of_range(name, key):
  config = CONFIGS[name]("test")
  value = dict(_leaves(config))[key]
  if isinstance(value, bool):
    pytest.skip("True and False are both valid")
  # -2 is below the range of every number here (mesh sizes accept -1: "all the rest"), and of every tuple's
  # entries (channels, beam widths); a string no enum has.
  bad = -2 if isinstance(value, (int, float)) else "no-such-choice" if isinstance(value, str) else (-2,)
  _check_fails(_with(config, key, bad), f"{key}=")


@pytest.mark.parametrize("name, key", sorted({(n, k) for n, k in ALL_KEYS if not k.startswith("model.")}))
def test_every_required_key_must_be_present(name, key):
  # Model keys other than the preset may be left out: the library dataclass has defaults.
  _check_fails(_without(CONFIGS[name]("test"), key), f"has no {key}")


def test_a_key_nothing_reads_is_an_error():
  config = shakespeare_char.get_config("test").to_dict()
  config["train"]["eval_evry"] = 10
  _check_fails(ml_collections.ConfigDict(config), "train.eval_evry is not a setting")


# (overrides, fragments of the message): values of the right type that cannot work.
CASES = {
    "negative steps": ({"train.num_steps": -1}, "train.num_steps=-1"),  # 0 is fine: evaluate the initial weights
    "log every 0 steps": ({"train.log_every": 0}, "train.log_every=0"),
    "keep no checkpoint": ({"train.keep_checkpoints": 0}, "train.keep_checkpoints=0"),
    "negative eval batches": ({"train.eval_batches": -1}, "train.eval_batches=-1"),
    "infinite learning rate": ({"optimizer.learning_rate": math.inf}, "optimizer.learning_rate=inf"),
    "NaN learning rate": ({"optimizer.learning_rate": math.nan}, "optimizer.learning_rate=nan"),
    "zero learning rate": ({"optimizer.learning_rate": 0.0}, "optimizer.learning_rate=0.0"),
    "b2 of 1": ({"optimizer.b2": 1.0}, "optimizer.b2=1.0"),
    "eps of 0": ({"optimizer.eps": 0.0}, "optimizer.eps=0.0"),
    "final fraction above 1": ({"optimizer.final_lr_fraction": 1.5}, "optimizer.final_lr_fraction=1.5"),
    "unknown schedule": ({"optimizer.schedule": "cos"}, "optimizer.schedule='cos'", "'cosine'"),
    "seed beyond 32 bits": ({"seed": 2**32}, "seed=4294967296"),
    "a boolean as a size": ({"train.num_steps": True}, "train.num_steps=True"),
    "a float as a count": ({"train.num_steps": 2e3}, "train.num_steps=2000.0"),
    "dropout of 1": ({"model.dropout_rate": 1.0}, "model.dropout_rate=1.0"),
    "no heads": ({"model.num_heads": 0}, "model.num_heads=0"),
    "negative vocabulary": ({"model.vocab_size": -8}, "model.vocab_size=-8"),
    "width not divisible by heads": ({"model.width": 30, "model.num_heads": 4}, "model.width=30", "model.num_heads=4"),
    "unknown preset": ({"model.preset": "gpt5"}, "model.preset='gpt5'"),
    "unknown attention kernel": ({"model.attention": "flash"}, "model.attention='flash'"),
    "float16 compute": ({"model.dtype": "float16"}, "model.dtype='float16'"),
    "unknown remat policy": ({"model.remat": "some"}, "model.remat='some'", "'full', 'save_dots'"),
    "scan_layers not a boolean": ({"model.scan_layers": "yes"}, "model.scan_layers='yes'"),
    "context beyond max_len": ({"data.context_length": 17}, "data.context_length=17", "model.max_len=16"),
    "unknown data set": ({"data.name": "wikitext"}, "data.name='wikitext'"),
    "unknown packing": ({"data.packing": "plays"}, "data.packing='plays'", "'stream', 'documents'"),
    "batch not divisible by the data shards": ({"data.batch_size": 6, "mesh.data": 4, "mesh.fsdp": 2}, "data.batch_size=6"),
    "eval batch not divisible": ({"data.eval_batch_size": 12, "mesh.data": 8}, "data.eval_batch_size=12"),
    "mesh for more devices than there are": ({"mesh.data": 16}, "needs 16 devices, 8 are visible"),
    "two free mesh axes": ({"mesh.data": -1, "mesh.fsdp": -1}, "at most one of mesh"),
    "mesh axis of 0": ({"mesh.tensor": 0}, "mesh.tensor=0"),
    "heads not divisible by tensor": ({"mesh.data": 1, "mesh.fsdp": 2, "mesh.tensor": 4}, "model.num_heads=2", "mesh.tensor=4"),
    "kv heads not divisible by tensor": (
        {"mesh.data": 2, "mesh.tensor": 4, "model.num_heads": 4, "model.num_kv_heads": 2},
        "model.num_kv_heads=2",
        "mesh.tensor=4",
    ),
    "kv heads not dividing heads": ({"model.num_heads": 4, "model.num_kv_heads": 3}, "model.num_kv_heads=3"),
    "rope with an odd head dim": ({"model.positions": "rope", "model.width": 36, "model.num_heads": 4}, "even head dim"),
    "negative key size": ({"model.key_size": -1}, "model.key_size=-1"),
    "rope with an odd key size": (
        {"model.positions": "rope", "model.key_size": 7}, "model.key_size=7", "needs an even key size"
    ),
    "window longer than max_len": ({"model.sliding_window": 32}, "model.sliding_window=32"),
    "window longer than the context": (
        {"model.max_len": 32, "model.sliding_window": 24},
        "model.sliding_window=24 exceeds data.context_length=16",
    ),
    "mlp not divisible by tensor": (
        {"mesh.data": 1, "mesh.tensor": 8, "model.num_heads": 8, "model.width": 64, "model.mlp_dim": 60},
        "model.mlp_dim=60",
        "mesh.tensor=8",
    ),
    "vocabulary padding not divisible by tensor": (
        {"mesh.data": 2, "mesh.tensor": 4, "model.num_heads": 4, "model.vocab_multiple": 2},
        "model.vocab_multiple=2",
        "mesh.tensor=4",
    ),
    "width not divisible by fsdp": ({"mesh.data": 1, "mesh.fsdp": 8, "model.width": 36, "model.num_heads": 2}, "model.width=36", "mesh.fsdp=8"),
    "empty prompt": ({"sample.prompt": ""}, "sample.prompt=''"),
    "prompt longer than the context": ({"sample.prompt": "x" * 17}, "sample.prompt=", "data.context_length=16"),
    "the tokenizer of no weights": ({"data.tokenizer": "init_from"}, "data.tokenizer='init_from' needs init_from"),
    "weights of no kind": ({"init_from": "model.bin"}, "init_from='model.bin' must be hf:DIR or gguf:PATH"),
    "negative temperature": ({"sample.temperature": -0.5}, "sample.temperature=-0.5"),
    "no tokens to sample": ({"sample.num_tokens": 0}, "sample.num_tokens=0"),
    "unknown task": ({"task": "wgan"}, "task='wgan'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_impossible_values_are_named_before_anything_runs(case):
  overrides, *fragments = CASES[case]
  config = shakespeare_char.get_config("test")
  for key, value in overrides.items():
    config = _with(config, key, value)
  _check_fails(config, *fragments)


def test_checking_reads_no_data():
  # Every source of data missing: the check still passes, because it reads none.
  config = shakespeare_char.get_config("test")
  config.data.data_dir = "/nonexistent/tfds"
  config.data.source_dir = "/nonexistent/plays"
  assert train.check_config(config).__name__ == "LanguageModelTask"


def test_rules_take_ints_for_floats_but_never_booleans_for_numbers():
  rate = config_rules.number(0, low_open=True)
  assert rate.accepts(1) and rate.accepts(0.5)
  assert not rate.accepts(True) and not rate.accepts(0) and not rate.accepts(math.inf)
  count = config_rules.integer(1)
  assert count.accepts(3) and not count.accepts(3.0) and not count.accepts(True)


def test_a_model_vocabulary_smaller_than_the_data_is_refused_and_a_larger_one_is_kept():
  config = shakespeare_char.get_config("test")
  assert language_model.model_config(config, data_vocab_size=82).vocab_size == 82
  config.model.vocab_size = 8192  # e.g. a benchmark at a real tokenizer's size
  assert language_model.model_config(config, data_vocab_size=82).vocab_size == 8192
  config.model.vocab_size = 64
  with pytest.raises(ConfigError, match="model.vocab_size=64 is smaller than the 82-token vocabulary"):
    language_model.model_config(config, data_vocab_size=82)
