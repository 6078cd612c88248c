"""The latent diffusion task end to end: a tiny kl_vae trained here on the 8x8 digits, its workdir named by the
config, the denoiser trained on its latents by the one trainer; generated images in [0, 1]; and the one-line errors
of a missing, corrupt or unfit autoencoder workdir and of impossible settings."""
import math
import os
import shutil

import jax
import numpy as np
import PIL.Image
import pytest

from configs import autoencoder as autoencoder_configs
from configs import latent_diffusion as latent_diffusion_configs
from decoders.errors import ConfigError
from experiments import train
from experiments.checkpointing import Checkpointer
from experiments.data import pipeline
from experiments.errors import UserError


@pytest.fixture(scope="module")
def kl_vae_workdir(data_dir, tmp_path_factory) -> str:
  """A kl_vae (2x2x4 latents of the 8x8 digits) trained for 30 steps; shared read-only."""
  config = autoencoder_configs.get_config("kl_vae,test")
  config.data.data_dir = data_dir
  config.train.update(num_steps=20, eval_every=20, checkpoint_every=20)
  workdir = str(tmp_path_factory.mktemp("kl_vae"))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def classifier_workdir(trained_classifier) -> str:
  """The tiny classifier of the 8x8 digits, whose features measure the samples."""
  return trained_classifier[0]


def _config(data_dir, autoencoder_workdir, **sections):
  config = latent_diffusion_configs.get_config("test")
  config.data.update(data_dir=data_dir, autoencoder_workdir=autoencoder_workdir)
  for section, values in sections.items():
    config[section].update(values)
  return config


def test_the_denoiser_trains_on_unit_variance_latents_and_generates_images(
    data_dir, kl_vae_workdir, classifier_workdir, tmp_path
):
  config = _config(data_dir, kl_vae_workdir, evaluation=dict(classifier_workdir=classifier_workdir, ddim_steps=(2, 10)))
  task, trainer, _ = train.setup(config, str(tmp_path))
  assert task.latent_shape == (2, 2, 4)
  latents = task.train_latents
  variance = np.var(latents["mean"]) + np.mean(np.square(latents["std"]))  # Var z = Var μ + E σ², scaled
  assert variance == pytest.approx(1.0, rel=1e-4)
  initial_params = trainer.init(jax.random.key(config.seed)).params
  initial = trainer.evaluate(initial_params, task.eval_batches())
  # Each example draws its own z, t and ε: batches of 8 (another padding) give the same numbers.
  rebatched = trainer.evaluate(initial_params, pipeline.padded_batches(task.eval_latents, 8))
  for name in initial:
    assert rebatched[name] == pytest.approx(initial[name], rel=1e-5)

  final = train.train_and_evaluate(config, str(tmp_path))  # 30 steps from that same init

  assert all(math.isfinite(value) for value in final.values()), final
  assert final["loss"] < 0.8 * initial["loss"]
  # The Fréchet distances: the config's sampler is DDIM with 10 steps, so its samples are frechet_ddim_10's.
  assert final["frechet_distance"] == final["frechet_ddim_10"]
  assert 0.0 <= final["frechet_distance_train"] < min(final["frechet_ddim_2"], final["frechet_ddim_10"])
  checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"), max_to_keep=1, create=False)
  params = checkpointer.restore_latest(trainer.abstract_state)[0].params
  labels = np.array([0, 3, 9, 10])  # 10: the null label, an unconditional image
  for options in (dict(sampler="ddim", steps=5), dict(sampler="ddpm"), dict(sampler="ddim", steps=5, guidance=2.0)):
    images = task.generate_images(params, jax.random.key(1), labels, **options)
    assert images.shape == (4, 8, 8, 1) and images.min() >= 0.0 and images.max() <= 1.0
  deterministic = [task.generate_images(params, jax.random.key(2), labels, steps=5) for _ in range(2)]
  np.testing.assert_array_equal(*deterministic)
  text = task.sample(params, jax.random.key(3))
  assert "\n" not in text and text.startswith("10 images 8x8 (10 DDIM steps")
  with PIL.Image.open(os.path.join(tmp_path, "figures", "samples.png")) as figure:  # drawn after training
    assert figure.size == (8 * 9 + 1, 11 * 9 + 1)  # 8 samples of each of 10 classes and unconditional, 8x8 each


def _one_line_error(kind, config, fragment, build=True):
  with pytest.raises(kind) as raised:
    if build:
      train.build(config, train.check_config(config))
    else:
      train.check_config(config)
  assert fragment in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


def test_a_missing_or_corrupt_config_or_another_kind_of_run_is_one_line(data_dir, kl_vae_workdir, tmp_path):
  _one_line_error(UserError, _config(data_dir, str(tmp_path / "nothing")), "data.autoencoder_workdir: workdir ")
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  (corrupt / "config.json").write_text("{not json")
  _one_line_error(UserError, _config(data_dir, str(corrupt)), "cannot be read as a config")
  for variant, fragment in (("conv,test", "holds a run of task='autoencoder', not a VAE"),
                            ("vae,test", "has a vector latent (model.latent_dim=8); latent diffusion needs a spatial")):
    other = tmp_path / variant.replace(",", "_")
    other.mkdir()
    (other / "config.json").write_text(autoencoder_configs.get_config(variant).to_json())
    _one_line_error(ConfigError, _config(data_dir, str(other)), fragment)
  fashion = _config(data_dir, kl_vae_workdir, data=dict(name="fashion_mnist"))
  _one_line_error(ConfigError, fashion, "data.name='fashion_mnist' has images of shape (28, 28, 1); the VAE in")


def test_unreadable_checkpoints_are_set_aside_and_then_there_is_none(data_dir, kl_vae_workdir, tmp_path):
  workdir = str(tmp_path / "kl_vae")
  shutil.copytree(kl_vae_workdir, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  for root, _, files in os.walk(checkpoints):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  _one_line_error(UserError, _config(data_dir, workdir), f"data.autoencoder_workdir={workdir}: no checkpoint in")
  assert all(name.endswith(".unreadable") for name in os.listdir(checkpoints))  # moved aside, never deleted


@pytest.mark.parametrize("sections, fragment, build", [
    (dict(model=dict(channel_multipliers=(1, 2, 2))),
     "a U-Net of 3 levels (model.channel_multipliers) halves its input 2 times, more than latents of 2x2 allow", True),
    (dict(sample=dict(steps=2000)), "sample.steps=2000 exceeds diffusion.timesteps=100", False),
    (dict(objective=dict(p_uncond=0.0)), "sample.guidance=1.0 needs objective.p_uncond > 0", False),
    (dict(model=dict(embedding_dim=9)), "model.embedding_dim=9 must be a positive even integer", False),
    (dict(diffusion=dict(beta_start=0.1, beta_end=0.01)), "must satisfy 0 < beta_start <= beta_end < 1", False),
    (dict(model=dict(norm_groups=3)), "model.norm_groups=3 does not divide level 0's width 8", False),
    (dict(evaluation=dict(ddim_steps=(10,))), "evaluation.ddim_steps are measured by a Fréchet distance: set", False),
    (dict(evaluation=dict(classifier_workdir="c", ddim_steps=(10, 200))),
     "evaluation.ddim_steps=(10, 200) exceeds diffusion.timesteps=100", False),
])
def test_impossible_settings_are_one_line_before_anything_compiles(data_dir, kl_vae_workdir, sections, fragment, build):
  _one_line_error(ConfigError, _config(data_dir, kl_vae_workdir, **sections), fragment, build)


def test_both_variants_check_and_name_the_workdir_they_read():
  for variant in ("", "test"):
    config = latent_diffusion_configs.get_config(variant)
    assert train.check_config(config).__name__ == "LatentDiffusionTask"
    assert config.data.autoencoder_workdir
  with pytest.raises(ValueError, match="unknown variant 'big' of latent_diffusion"):
    latent_diffusion_configs.get_config("big")
  bad = latent_diffusion_configs.get_config("test")
  bad.data.autoencoder_workdir = ""
  with pytest.raises(ConfigError, match="data.autoencoder_workdir='' must be a non-empty path"):
    train.check_config(bad)
