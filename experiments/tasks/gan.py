"""A DCGAN (decoders/models/dcgan.py; Radford et al. 2016) trained by the one trainer, as two objectives.

    discriminator  over params["discriminator"]: -log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014, eq. 1), the
                   generated images stop-gradient'ed: this objective updates no generator weight, and its backward
                   pass stops at the images instead of running on through the generator
    generator      over params["generator"]: the non-saturating -log D(G(z)) (Goodfellow et al. 2014, sec. 3)

The trainer applies them in this order inside one step (experiments/trainer.py), the generator's against the
discriminator just updated: Goodfellow et al.'s Algorithm 1 with k = 1, each objective drawing its own z from the
step's rng. Real and generated images go through the discriminator in one pass: it normalises nothing across the
batch, so sharing a pass changes no logit. Labels are unused.

Evaluation, per real image of the held-out split and one generated image each (latents from a fixed key, so a
checkpoint's numbers never change; every eval batch therefore scores the same eval_batch_size generated images):
    loss             the discriminator's loss (the `loss` the run loop's eval line prints); 2 log 2 ≈ 1.386 when D
                     outputs 1/2 everywhere, the equilibrium of Goodfellow et al.'s Theorem 1
    generator_loss   -log D(G(z))
    real_accuracy    the share of real images D calls real (logit > 0); fake_accuracy: of generated ones it calls fake
    checkerboard     the generated images' checkerboard score at stride 2 (decoders/image_metrics.py; Odena et al.
                     2016): the share of their power in the periodic pattern an uneven upsampling leaves
With evaluation.classifier_workdir (an image_classifier run on the same data), the final evaluation adds the
Fréchet distance of frechet_images generated images to the held-out ones in that classifier's features
(experiments/image_eval.py), and of as many train images: the floor a perfect generator would reach.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from decoders import image_metrics
from decoders.models import dcgan
from experiments.config_rules import fields_of, one_of
from experiments.data.images import DATASETS
from experiments.tasks.autoencoder import FRECHET_RULES, AutoencoderTask, image_eval
from experiments.tasks.base import ModelDescription, Objective, Task

SAMPLE_GRID = 8  # rows and columns of the figure of samples
EVAL_SEED = 0  # the key of the evaluation's latents


def model_config(config) -> dcgan.DCGANConfig:
  """The model dataclass of `config.model`, its image shape the data set's."""
  return dcgan.DCGANConfig(image_shape=DATASETS[config.data.name].image_shape, **config.model)


class GanTask(Task):
  unit = "examples"
  config_schema = {
      "data": {"name": one_of(DATASETS)},
      # The image shape comes from the data set; DCGANConfig checks ranges and choices when built.
      "model": fields_of(dcgan.DCGANConfig, exclude=["image_shape"]),
      "evaluation": FRECHET_RULES,
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    del mesh_shape
    model_config(config)

  @classmethod
  def describe(cls, config):
    model = dcgan.DCGAN(model_config(config))  # the image shape is known without the data
    return ModelDescription(init_params=functools.partial(_init_params, model))

  def __init__(self, config):
    super().__init__(config)
    self.evaluation = config.evaluation
    if self.evaluation.classifier_workdir:  # its config now, before reading data or training; its checkpoint after
      image_eval().check_classifier_run(self.evaluation.classifier_workdir, config.data.name)
    dataset = DATASETS[config.data.name]
    self.train_images = dataset.load(config.data.data_dir, dataset.train_split)["image"]
    self.eval_images = dataset.load(config.data.data_dir, dataset.eval_split)["image"]
    self.model = dcgan.DCGAN(model_config(config))

  def init_params(self, rng):
    return _init_params(self.model, rng)

  def objectives(self):
    return (
        Objective("discriminator", self.discriminator_loss, params_key="discriminator"),
        Objective("generator", self.generator_loss, params_key="generator"),
    )

  def _generate(self, params, rng, batch_size):
    latents = dcgan.sample_latents(rng, batch_size, self.model.config.latent_dim)
    return self.model.apply({"params": params}, latents, method="generate")

  def generation_metrics(self, params):
    """The Fréchet distances of generated and of train images to the held-out ones; none without a classifier."""
    if not self.evaluation.classifier_workdir:
      return {}
    scorer = image_eval().FrechetScorer(self.evaluation.classifier_workdir, self.eval_images, self.config.data.name)
    count = self.evaluation.frechet_images
    samples = jax.jit(self._generate, static_argnums=2)(params, jax.random.key(EVAL_SEED), count)
    return {"frechet_distance": scorer(np.asarray(samples)), "frechet_distance_train": scorer(self.train_images[:count])}

  def figures(self, params, rng):
    """An 8 x 8 grid of the generator's images (Radford et al. 2016, Fig. 3)."""
    images = np.asarray(self._generate(params, rng, SAMPLE_GRID * SAMPLE_GRID))
    return {"samples": images.reshape(SAMPLE_GRID, SAMPLE_GRID, *images.shape[1:])}

  def _real_and_fake_logits(self, params, real, fake):
    """D's logits of the real and the generated images, from one pass over both."""
    logits = self.model.apply({"params": params}, jnp.concatenate([real, fake]), method="discriminate")
    return logits[: len(real)], logits[len(real) :]

  def discriminator_loss(self, params, batch, rng, train):
    del train
    real = batch["image"]
    fake = jax.lax.stop_gradient(self._generate(params, rng, real.shape[0]))
    real_logits, fake_logits = self._real_and_fake_logits(params, real, fake)
    loss = dcgan.discriminator_losses(real_logits, fake_logits).mean()
    return loss, {
        "loss": loss,
        "real_accuracy": (real_logits > 0).mean(),
        "fake_accuracy": (fake_logits < 0).mean(),
    }

  def generator_loss(self, params, batch, rng, train):
    del train
    fake = self._generate(params, rng, batch["image"].shape[0])
    loss = dcgan.generator_losses(self.model.apply({"params": params}, fake, method="discriminate")).mean()
    return loss, {"loss": loss}

  # The single loss a one-objective caller asks for: the discriminator's, which evaluation reports as `loss` too.
  loss_fn = discriminator_loss

  def eval_fn(self, params, batch):
    real, weight = batch["image"], batch["weight"]
    fake = self._generate(params, jax.random.key(EVAL_SEED), real.shape[0])
    real_logits, fake_logits = self._real_and_fake_logits(params, real, fake)
    per_pair = {
        "loss": dcgan.discriminator_losses(real_logits, fake_logits),
        "generator_loss": dcgan.generator_losses(fake_logits),
        "real_accuracy": (real_logits > 0).astype(jnp.float32),
        "fake_accuracy": (fake_logits < 0).astype(jnp.float32),
        "checkerboard": image_metrics.checkerboard_score(fake),
    }
    sums = {name: jnp.sum(value * weight) for name, value in per_pair.items()}
    return {**sums, "examples": weight.sum()}

  # The autoencoder's image pipeline and summary, reused as they are: shuffled batches of images (labels unused),
  # padded evaluation batches, and eval sums divided by the examples they cover.
  train_batches = AutoencoderTask.train_batches
  eval_batches = AutoencoderTask.eval_batches
  summarize_eval = AutoencoderTask.summarize_eval
  units_per_step = AutoencoderTask.units_per_step


def _init_params(model: dcgan.DCGAN, rng: jax.Array):
  return model.init(rng, jnp.zeros((1, model.config.latent_dim)))["params"]
