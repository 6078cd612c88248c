"""The autoencoder task: each variant trains on the 8x8 digits through the one trainer and reports metrics in range;
the objective's and the model's keys of another variant are one-line errors before anything runs.
(The default convolutional autoencoder's run is tests/experiments/test_train.py's.)"""
import math
import os

import jax
import ml_collections
import numpy as np
import PIL.Image
import pytest

from configs import autoencoder as autoencoder_configs
from decoders.errors import ConfigError
from experiments import figures, train


def _config(variant, data_dir, **model):
  config = autoencoder_configs.get_config(f"{variant},test")
  config.data.data_dir = data_dir
  config.model.update(model)
  return config


@pytest.mark.parametrize("variant, model", [
    ("mlp", {}),
    ("denoising", {}),  # of the digit 0 alone: a one-class model, its AUROC against the other digits
    ("vae", {}),
    ("conv", dict(upsampling="nearest", likelihood="gaussian")),  # the learned variance: nats may go negative
])
def test_each_variant_trains_with_the_one_trainer(variant, model, data_dir, tmp_path):
  config = _config(variant, data_dir, **model)
  if variant == "denoising":
    config.data.classes = (0,)
  task, trainer, _ = train.setup(config, str(tmp_path))
  initial = trainer.evaluate(trainer.init(jax.random.key(config.seed)).params, task.eval_batches())

  final = train.train_and_evaluate(config, str(tmp_path))  # 60 steps from that same init

  assert all(math.isfinite(value) for value in final.values()), final
  assert final["loss"] < initial["loss"] - 0.1 * abs(initial["loss"])  # noise moves it by far less in 60 steps
  assert final["mse"] < initial["mse"] and final["psnr"] > max(initial["psnr"], 0.0)
  assert -1.0 <= final["ssim"] <= 1.0 and final["ssim"] > initial["ssim"]
  assert 0.0 <= final["checkerboard"] <= 1.0  # the share of the reconstructions' power in a stride-2 pattern
  np.testing.assert_allclose(final["psnr"], 10 * np.log10(1 / final["mse"]), rtol=0.2)  # per image vs of the mean

  # The figures after training: rows of 8 test images (8x8, 1-pixel borders), their corruption, reconstructions.
  rows = {"reconstructions": 3 if variant == "denoising" else 2}
  if variant == "vae":
    rows.update(prior_samples=8, interpolations=4)
  drawn = sorted(os.listdir(tmp_path / figures.FOLDER))
  assert drawn == sorted(f"{name}.png" for name in rows)
  for name, count in rows.items():
    with PIL.Image.open(tmp_path / figures.FOLDER / f"{name}.png") as image:
      assert image.size == (8 * 9 + 1, count * 9 + 1)
  if variant == "vae":
    np.testing.assert_allclose(final["elbo"], -(final["reconstruction_nats"] + final["kl"]), rtol=1e-5)
    assert final["loss"] == pytest.approx(-final["elbo"], rel=1e-5)  # β = 1
    assert final["iwae"] >= final["elbo"] - 0.5  # K = 8 importance samples: a bound at least as tight, on average
  else:
    assert "elbo" not in final and final["loss"] == pytest.approx(final["reconstruction_nats"], rel=1e-6)
  assert ("denoised_psnr" in final) == (variant == "denoising")
  if variant == "denoising":
    # From inputs masked more and more, worse reconstructions; the digits it never saw reconstruct worse still.
    masked = [final[f"psnr_mask_{p:g}"] for p in config.evaluation.corruption_levels]
    assert masked == sorted(masked, reverse=True) and masked[-1] < masked[0] - 1.0
    assert final["anomaly_auroc"] > 0.9
  else:
    assert "anomaly_auroc" not in final and not any(name.startswith("psnr_mask") for name in final)


def test_padding_rows_count_for_nothing(data_dir, tmp_path):
  # The test digits in batches of 64 and of 8: the last batch of each holds a different number of padding rows.
  sizes = []
  for eval_batch_size in (64, 8):
    config = _config("conv", data_dir)
    config.data.eval_batch_size = eval_batch_size
    task, trainer, _ = train.setup(config, str(tmp_path / str(eval_batch_size)))
    sizes.append(trainer.evaluate(trainer.init(jax.random.key(0)).params, task.eval_batches()))
  assert sizes[0].keys() == sizes[1].keys()
  for name in sizes[0]:
    np.testing.assert_allclose(sizes[0][name], sizes[1][name], rtol=1e-5)


@pytest.mark.parametrize("variant", ["conv", "mlp", "denoising", "vae"])
def test_every_variant_checks_at_both_sizes(variant):
  for size in ("", ",test"):
    assert train.check_config(autoencoder_configs.get_config(variant + size)).__name__ == "AutoencoderTask"


def test_an_unknown_variant_names_the_variants():
  with pytest.raises(ValueError, match="unknown variant 'gan' of autoencoder; expected one of .*'vae'"):
    autoencoder_configs.get_config("gan")


CASES = {  # name: (variant, overrides, a fragment of the message)
    "a conv autoencoder given hidden sizes": (
        "conv", {"model.hidden_sizes": (8,)}, "model.hidden_sizes is not a field of a model.architecture='conv'"
    ),
    "an mlp given channels": (
        "mlp", {"model.channels": (8,)}, "model.channels is not a field of a model.architecture='mlp'"
    ),
    "an mlp given an upsampling": ("mlp", {"model.upsampling": "nearest"}, "model.upsampling is not a field of"),
    "too many halvings of 8x8": (
        "conv", {"model.channels": (4, 8, 16, 32)}, "images of 8x8 cannot be halved len(model.channels)=4 times"
    ),
    "an unknown kind": ("conv", {"model.kind": "gan"}, "model.kind='gan' must be one of"),
    "a level without a corruption": (
        "conv", {"objective.corruption_level": 0.1}, "objective.corruption_level=0.1 is read by a corruption only"
    ),
    "a corruption without its level": (
        "conv", {"objective.corruption": "gaussian"}, "the config has no objective.corruption_level"
    ),
    "masking everything": (
        "denoising", {"objective.corruption_level": 1.0}, "objective.corruption_level=1.0 must be a masking"
    ),
    "beta without a vae": (
        "conv", {"objective.beta": 4.0}, "objective.beta=4.0 is for model.kind='vae', not 'autoencoder'"
    ),
    "a vae without its K": (
        "vae", {"objective.importance_samples": None}, "the config has no objective.importance_samples"
    ),
    "K of 0": ("vae", {"objective.importance_samples": 0}, "objective.importance_samples=0 must be an integer >= 1"),
    "an unknown data set": ("conv", {"data.name": "cifar10"}, "data.name='cifar10' must be one of"),
    "a class twice": ("conv", {"data.classes": (3, 3)}, "data.classes=(3, 3) must be distinct labels in [0, 10)"),
    "a class the data lacks": ("conv", {"data.classes": (10,)}, "data.classes=(10,) must be distinct labels in"),
    "every class": ("conv", {"data.classes": tuple(range(10))}, "holds every class: use () to train on all of them"),
    "an evaluation level past 1": (
        "denoising", {"evaluation.corruption_levels": (0.5, 1.0)},
        "a level of evaluation.corruption_levels=1.0 must be a masking probability in [0, 1)"
    ),
    "a classifier for a model without a prior": (
        "conv", {"evaluation.classifier_workdir": "workdirs/classifier"},
        "evaluation.classifier_workdir measures a VAE's prior samples; model.kind='autoencoder' draws none"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_setting_another_variant_reads_is_one_line(case):
  variant, overrides, fragment = CASES[case]
  tree = autoencoder_configs.get_config(f"{variant},test").to_dict()
  for key, value in overrides.items():
    section, name = key.split(".")
    if value is None:
      del tree[section][name]
    else:
      tree[section][name] = value
  with pytest.raises(ConfigError) as raised:
    train.check_config(ml_collections.ConfigDict(tree))
  assert fragment in str(raised.value) and "\n" not in str(raised.value)
