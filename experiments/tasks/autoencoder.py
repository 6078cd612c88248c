"""Image autoencoding: an autoencoder, a denoising autoencoder or a VAE reconstructs images through a small latent.

    model.kind          "autoencoder" (decoders/models/autoencoder.py) or "vae" (decoders/models/vae.py)
    model.architecture  "mlp" or "conv", with its own fields (autoencoder.ARCHITECTURE_FIELDS; another's are refused)
    model.likelihood    "bernoulli" or "gaussian": how the decoder's outputs score the pixels
    objective           corruption "none" | "gaussian" | "mask" and its level (σ or p): a denoising autoencoder
                        (Vincent et al. 2008) reads corrupt(x), drawn with the step's rng, and reconstructs the clean x;
                        beta and importance_samples: the VAE's β and the K of its IWAE bound (vae only)

    data.classes        labels to train on, () for all: one class makes a one-class (anomaly) detector
    evaluation          what the final evaluation adds: the PSNR from inputs corrupted at each of
                        corruption_levels (`psnr_<corruption>_<level>`: robustness to partial destruction of the
                        input, Vincent et al. 2008, sec. 2.3); for a VAE with classifier_workdir, the Fréchet distance
                        of frechet_images prior samples to the test images (experiments/image_eval.py)

Loss: -log p(x|z) in nats per image (+ β KL for the VAE). Evaluation, on clean inputs: that loss, the
reconstruction nats, MSE, PSNR and SSIM of the reconstruction (the decoder's mean image at the posterior mean for
the VAE) and its checkerboard score (Odena et al. 2016; decoders/image_metrics.py); for the VAE the ELBO and the
K-sample IWAE bound in nats per image (Burda et al. 2016: the test log-likelihood a paper reports); with a
corruption, the PSNR of the clean image reconstructed from a corrupted one.
With data.classes, the held-out loss is over the test images of those classes, and `anomaly_auroc` is the AUROC of
each test image's loss as a score that its label is another class (reconstruction error as an anomaly score).
Evaluation draws its noise from fixed keys, so a checkpoint's numbers never change.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from decoders import image_metrics
from decoders.errors import ConfigError
from decoders.layers import corruption
from decoders.models import autoencoder, vae
from experiments.config_rules import Rule, fields_of, integer, number, one_of, show
from experiments.data import pipeline
from experiments.data.images import DATASETS
from experiments.tasks.base import ModelDescription, Task

KINDS = {"autoencoder": autoencoder.Autoencoder, "vae": vae.VAE}
VAE_OBJECTIVE_KEYS = ("beta", "importance_samples")
FIGURE_COLUMNS = 8  # test images per row of a figure
EVAL_SEED = 0  # the key of evaluation's corruptions and posterior samples
SCORE_BATCH = 500  # test images per call of generation_metrics' scoring functions
# The evaluation keys of every task whose samples a trained image classifier measures (experiments/image_eval.py).
FRECHET_RULES = {
    "classifier_workdir": Rule(str, "a path, or '' for no Fréchet distance"),
    "frechet_images": integer(2),  # samples the Fréchet distance compares with the test split
}


def corrupted_psnr_metric(kind: str, level: float) -> str:
  """The name of the final evaluation's PSNR from inputs with corruption `kind` at `level`: psnr_mask_0.25."""
  return f"psnr_{kind}_{level:g}"


def _optional(rule):
  return dataclasses.replace(rule, required=False)


def model_config(config) -> autoencoder.AutoencoderConfig:
  """The model dataclass of `config.model`, its image shape the data set's; another architecture's field is refused."""
  fields = {key: value for key, value in config.model.items() if key != "kind"}
  architecture = fields.get("architecture", autoencoder.AutoencoderConfig.architecture)
  if architecture in autoencoder.ARCHITECTURES:
    own = autoencoder.ARCHITECTURE_FIELDS[architecture]
    others = {field for names in autoencoder.ARCHITECTURE_FIELDS.values() for field in names} - set(own)
    foreign = sorted(set(fields) & others)
    if foreign:
      raise ConfigError(f"model.{foreign[0]} is not a field of a model.architecture={architecture!r} autoencoder")
  return autoencoder.AutoencoderConfig(image_shape=DATASETS[config.data.name].image_shape, **fields)


def check_data_classes(config) -> None:
  """data.classes: distinct labels of the data set, and not all of them (the rest are the anomalies)."""
  classes, dataset = config.data.classes, DATASETS[config.data.name]
  if not classes:
    return
  if dataset.targets != "label":
    raise ConfigError(f"data.classes={show(classes)}: data.name={config.data.name!r} has a mask per image, not a label")
  if not all(type(c) is int and 0 <= c < dataset.num_classes for c in classes) or len(set(classes)) != len(classes):
    raise ConfigError(f"data.classes={show(classes)} must be distinct labels in [0, {dataset.num_classes})")
  if len(classes) == dataset.num_classes:
    raise ConfigError(f"data.classes={show(classes)} holds every class: use () to train on all of them")


def check_evaluation(config) -> None:
  """The corruption levels are valid for their corruption; a classifier measures a VAE's samples only."""
  evaluation = config.evaluation
  for level in evaluation.corruption_levels:
    corruption.check_corruption(
        evaluation.corruption, level, "evaluation.corruption", "a level of evaluation.corruption_levels"
    )
  if evaluation.classifier_workdir and config.model.kind != "vae":
    raise ConfigError(
        f"evaluation.classifier_workdir measures a VAE's prior samples; model.kind={config.model.kind!r} draws none"
    )


def check_objective(config) -> None:
  """The corruption needs its level and the VAE its β and K; neither is set where nothing reads it."""
  objective, kind = config.objective, config.model.kind
  if objective.corruption == "none" and "corruption_level" in objective:
    raise ConfigError(
        f"objective.corruption_level={show(objective.corruption_level)} is read by a corruption only, and "
        f"objective.corruption='none'"
    )
  if objective.corruption != "none":
    if "corruption_level" not in objective:
      raise ConfigError(f"the config has no objective.corruption_level: objective.corruption={objective.corruption!r} "
                        f"needs its σ or p")
    corruption.check_corruption(objective.corruption, objective.corruption_level)
  for key in VAE_OBJECTIVE_KEYS:
    if kind == "vae" and key not in objective:
      raise ConfigError(f"the config has no objective.{key}: model.kind='vae' needs it")
    if kind != "vae" and key in objective:
      raise ConfigError(f"objective.{key}={show(objective[key])} is for model.kind='vae', not {kind!r}")


class AutoencoderTask(Task):
  unit = "examples"
  config_schema = {
      "data": {
          "name": one_of(DATASETS),
          "classes": Rule(tuple, "a tuple of labels", lambda v: all(type(c) is int for c in v)),  # () all
      },
      # The image shape comes from the data set; AutoencoderConfig checks ranges and choices when built.
      "model": {"kind": one_of(KINDS), **fields_of(autoencoder.AutoencoderConfig, exclude=["image_shape"])},
      "objective": {
          "corruption": one_of(corruption.CORRUPTIONS),
          "corruption_level": _optional(number(0)),  # σ (gaussian) or p (mask); only with a corruption
          "beta": _optional(number(0)),  # vae: the KL's weight (1: the ELBO; Higgins et al. 2017's β-VAE otherwise)
          "importance_samples": _optional(integer(1)),  # vae: K of the evaluated IWAE bound
      },
      "evaluation": {
          "corruption": one_of(c for c in corruption.CORRUPTIONS if c != "none"),  # of the levels below
          "corruption_levels": Rule(
              tuple, "a tuple of σ or p", lambda v: all(type(x) in (int, float) for x in v)  # True is no level
          ),
          **FRECHET_RULES,  # of the VAE's prior samples
      },
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    del mesh_shape
    model_config(config)
    check_objective(config)
    check_data_classes(config)
    check_evaluation(config)

  @classmethod
  def describe(cls, config):
    model = KINDS[config.model.kind](model_config(config))  # the image shape is known without the data
    return ModelDescription(init_params=functools.partial(_init_params, model))

  def __init__(self, config):
    super().__init__(config)
    dataset = DATASETS[config.data.name]
    train_split = dataset.load(config.data.data_dir, dataset.train_split)
    self.test_split = dataset.load(config.data.data_dir, dataset.eval_split)  # all classes: the AUROC's anomalies
    self.classes = config.data.classes
    self.train_images = self._of_classes(train_split)
    self.eval_images = self._of_classes(self.test_split)
    self.evaluation = config.evaluation
    if self.evaluation.classifier_workdir:  # its config now, before training; its checkpoint after
      image_eval().check_classifier_run(self.evaluation.classifier_workdir, config.data.name)
    self.model_config = model_config(config)
    self.model = KINDS[config.model.kind](self.model_config)
    self.variational = config.model.kind == "vae"
    objective = config.objective
    self.corruption = objective.corruption
    self.corruption_level = objective.get("corruption_level", 0.0)
    self.beta = objective.get("beta", 0.0)
    self.importance_samples = objective.get("importance_samples", 1)
    height, width, _ = self.model_config.image_shape
    self.ssim_window = image_metrics.ssim_window_size(height, width)

  def _of_classes(self, split: dict[str, np.ndarray]) -> np.ndarray:
    """The split's images of data.classes (all of them for ())."""
    if not self.classes:
      return split["image"]
    return split["image"][np.isin(split["label"], self.classes)]

  def init_params(self, rng):
    return _init_params(self.model, rng)

  def _forward(self, params, inputs, targets, rng):
    """(decoder outputs, -log p(targets | z) [b], KL [b]: zero for a plain autoencoder) for `inputs`."""
    if self.variational:
      outputs, log_likelihood, kl = self.model.apply({"params": params}, inputs, rng, targets)
    else:
      outputs, log_likelihood = self.model.apply({"params": params}, inputs, targets)
      kl = jnp.zeros_like(log_likelihood)
    return outputs, -log_likelihood, kl

  def _reconstruction(self, params, inputs):
    """The decoder's mean image of each input's code (for the VAE, of its posterior mean)."""
    latents = self.model.apply({"params": params}, inputs, method="encode")
    latents = latents[0] if self.variational else latents
    outputs = self.model.apply({"params": params}, latents, method="decode")
    return autoencoder.pixel_means(self.model_config.likelihood, outputs)

  def loss_fn(self, params, batch, rng, train):
    del train  # the corruption is the denoising objective itself, not a training-only regulariser
    clean = batch["image"]
    corruption_rng, sample_rng = jax.random.split(rng)
    inputs = corruption.corrupt(self.corruption, corruption_rng, clean, self.corruption_level)
    outputs, nll, kl = self._forward(params, inputs, clean, sample_rng)
    loss = jnp.mean(nll + self.beta * kl)
    mse = jnp.mean(jnp.square(autoencoder.pixel_means(self.model_config.likelihood, outputs) - clean))
    metrics = {"loss": loss, "reconstruction_nats": nll.mean(), "mse": mse}
    if self.variational:
      metrics["kl"] = kl.mean()
    return loss, metrics

  def eval_fn(self, params, batch):
    clean, weight = batch["image"], batch["weight"]
    corruption_rng, sample_rng, bound_rng = jax.random.split(jax.random.key(EVAL_SEED), 3)
    _, nll, kl = self._forward(params, clean, clean, sample_rng)
    reconstruction = self._reconstruction(params, clean)
    per_image = {
        "loss": nll + self.beta * kl,
        "reconstruction_nats": nll,
        "mse": jnp.square(reconstruction - clean).reshape(clean.shape[0], -1).mean(axis=-1),
        "psnr": image_metrics.psnr(reconstruction, clean),
        "ssim": image_metrics.ssim(reconstruction, clean, window_size=self.ssim_window),
        # Odena et al. 2016: the share of the reconstructions' power in a stride-2 checkerboard.
        "checkerboard": image_metrics.checkerboard_score(reconstruction),
    }
    if self.variational:
      per_image.update(kl=kl, elbo=-(nll + kl))
      per_image["iwae"] = vae.importance_weighted_bound(self.model, params, clean, bound_rng, self.importance_samples)
    if self.corruption != "none":
      corrupted = corruption.corrupt(self.corruption, corruption_rng, clean, self.corruption_level)
      per_image["denoised_psnr"] = image_metrics.psnr(self._reconstruction(params, corrupted), clean)
    # Padding rows (weight 0) may score inf or NaN (a PSNR of an exact zero image): they must add nothing.
    sums = {name: jnp.sum(jnp.where(weight > 0, value * weight, 0.0)) for name, value in per_image.items()}
    return {**sums, "examples": weight.sum()}

  def summarize_eval(self, sums):
    return {name: value / sums["examples"] for name, value in sums.items() if name != "examples"}

  def generation_metrics(self, params):
    """PSNR under each corruption level; with data.classes the anomaly AUROC; for a VAE with a classifier the
    Fréchet distance of its prior samples (and of as many train images: the floor of a perfect model)."""
    metrics = {}
    kind = self.evaluation.corruption
    for index, level in enumerate(self.evaluation.corruption_levels):
      level_key = jax.random.fold_in(jax.random.key(EVAL_SEED), index)
      psnr = self._per_image(
          lambda images, batch: self._corrupted_psnr(params, images, jax.random.fold_in(level_key, batch), kind, level),
          self.eval_images,
      )
      metrics[corrupted_psnr_metric(kind, level)] = float(psnr.mean())
    if self.classes:
      scores = self._per_image(lambda images, _: self._anomaly_score(params, images), self.test_split["image"])
      normal = np.isin(self.test_split["label"], self.classes)
      metrics["anomaly_auroc"] = image_eval().auroc(scores[normal], scores[~normal])
    if self.variational and self.evaluation.classifier_workdir:
      count = self.evaluation.frechet_images
      scorer = image_eval().FrechetScorer(self.evaluation.classifier_workdir, self.eval_images, self.config.data.name)
      samples = vae.sample_prior(self.model, params, jax.random.key(EVAL_SEED), count)
      metrics["frechet_distance"] = scorer(np.clip(np.asarray(samples), 0.0, 1.0))
      metrics["frechet_distance_train"] = scorer(self.train_images[:count])
    return metrics

  @functools.partial(jax.jit, static_argnums=(0, 4))
  def _corrupted_psnr(self, params, images, key, kind, level):
    corrupted = corruption.corrupt(kind, key, images, level)
    return image_metrics.psnr(self._reconstruction(params, corrupted), images)

  @functools.partial(jax.jit, static_argnums=0)
  def _anomaly_score(self, params, images):
    """Each image's loss (the reconstruction nats, + β KL for a VAE): high where the model has not learnt it."""
    _, nll, kl = self._forward(params, images, images, jax.random.key(EVAL_SEED))
    return nll + self.beta * kl

  @staticmethod
  def _per_image(score, images: np.ndarray) -> np.ndarray:
    """`score(images, batch index)` of every image, SCORE_BATCH at a time, the last batch padded (one
    compile)."""
    batches = pipeline.padded_batches({"image": images}, SCORE_BATCH)
    return np.concatenate([np.asarray(score(b["image"], i))[b["weight"] > 0] for i, b in enumerate(batches)])

  def figures(self, params, rng):
    """Test images above their reconstructions (and, denoising, the corrupted input between them); a VAE adds
    samples from its prior and interpolations between test images (Kingma & Welling 2013, Fig. 4)."""
    clean = jnp.asarray(self.eval_images[:FIGURE_COLUMNS])
    corruption_rng, prior_rng = jax.random.split(rng)
    inputs = corruption.corrupt(self.corruption, corruption_rng, clean, self.corruption_level)
    rows = [clean, inputs] if self.corruption != "none" else [clean]
    shown = {"reconstructions": jnp.stack([*rows, self._reconstruction(params, inputs)])}
    if self.variational:
      samples = vae.sample_prior(self.model, params, prior_rng, FIGURE_COLUMNS * FIGURE_COLUMNS)
      shown["prior_samples"] = samples.reshape(FIGURE_COLUMNS, FIGURE_COLUMNS, *samples.shape[1:])
      pairs = FIGURE_COLUMNS // 2
      shown["interpolations"] = vae.interpolate(
          self.model, params, clean[:pairs], jnp.roll(clean, -1, axis=0)[:pairs], FIGURE_COLUMNS
      )
    return {name: np.clip(np.asarray(grid), 0.0, 1.0) for name, grid in shown.items()}

  def train_batches(self, seed, process_index, process_count):
    images = self.train_images
    examples = pipeline.grain.MapDataset.range(len(images)).map(lambda i: images[i])
    return pipeline.training_batches(
        examples, self.config.data.batch_size, seed, process_index, process_count,
        batch_fn=lambda xs: {"image": np.stack(xs)},
    )

  def eval_batches(self):
    return pipeline.padded_batches({"image": self.eval_images}, self.config.data.eval_batch_size)

  def units_per_step(self):
    return self.config.data.batch_size


def image_eval():
  """experiments.image_eval, imported on use: it imports train, which imports the task registry, which imports this."""
  from experiments import image_eval as module

  return module


def _init_params(model, rng: jax.Array):
  images = jnp.zeros((1, *model.config.image_shape))
  return model.init(rng, images, rng)["params"] if isinstance(model, vae.VAE) else model.init(rng, images)["params"]
