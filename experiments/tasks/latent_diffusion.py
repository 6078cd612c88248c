"""Latent diffusion (Rombach et al. 2022, scaled down): a DDPM (Ho et al. 2020) in the latent space of a trained
KL-regularised VAE (configs/autoencoder.py:kl_vae), class-conditional with classifier-free guidance (Ho & Salimans
2022). The denoiser is decoders/models/diffusion.LatentDenoiser: the U-Net over latents, conditioned on the timestep
and the class.

    data.autoencoder_workdir  the VAE's run: its config.json and its newest readable checkpoint, restored as
                              --mode=eval restores any run (train.restore_for_inference: Orbax, never pickle)
    model                     the U-Net's fields (decoders/models/unet.py) and embedding_dim, its conditioning width
    diffusion                 T and the β schedule (diffusion.DiffusionConfig)
    objective.p_uncond        the probability that a training label is dropped to the null label
    sample                    what `sample` draws: sampler "ddim" | "ddpm" (steps and eta are DDIM's), guidance w
                              (0: the conditional model), num_images
    evaluation                with classifier_workdir (an image_classifier run on the same data), the final
                              evaluation adds the Fréchet distance to the test images of frechet_images samples
                              (classes in turn) drawn as `sample` says, and of the same number drawn with each of
                              ddim_steps DDIM steps (`frechet_ddim_<steps>`: Song et al. 2021, Table 1's question);
                              and of as many train images, the floor a perfect model would reach

The data set is encoded once, at start, by the VAE's encoder; each image keeps its posterior q(z|x) = N(μ, σ²), and
every use draws a fresh z = μ + σ ε from it, as the LDM code's DiagonalGaussianDistribution.sample() does whenever
it encodes (Rombach et al., sec. 3). Latents are multiplied by one scale factor 1 / std(z) measured on the train
split, exactly (Var z = Var μ + E σ²), so the diffusion starts from unit variance (sec. 4.3.2).

Loss: L_simple over those latents, each label dropped with p_uncond. Evaluation: L_simple on the eval split, with
its labels and with the null label ("unconditional_loss"); z, t and ε of each example come from a fixed key folded
with the example's index, so a checkpoint's numbers never change and do not depend on the batch size.
`generate_images` samples latents and decodes them to images in [0, 1] (the VAE decoder's mean image).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from decoders.errors import ConfigError
from decoders.models import autoencoder, diffusion, unet, vae
from experiments.config_rules import Rule, fields_of, integer, number, one_of, show
from experiments.data import pipeline
from experiments.data.images import DATASETS
from experiments.errors import UserError
from experiments.tasks import autoencoder as autoencoder_task
from experiments.tasks.base import ModelDescription, Task

SAMPLERS = ("ddim", "ddpm")
EVAL_SEED = 0
FIGURE_COLUMNS = 8  # samples per class in the figure
ENCODING_BATCH = 500  # images the VAE encodes at a time, at start
SAMPLE_BATCH = 500  # images generated at a time for the Fréchet distance
# Set by the latent (shape, channels, conditioning width) or meaningless here.
_NOT_CONFIGURED = ("image_height", "image_width", "image_channels", "out_channels", "conditioning_dim")
# A latent every U-Net of up to 11 levels fits: check_config checks the U-Net's fields alone with it, before the
# autoencoder (and so the real latent) is read.
_ANY_LATENT = (1024, 1024, 1)


def _labelled_datasets() -> list[str]:
  return sorted(name for name, dataset in DATASETS.items() if dataset.targets == "label")


def denoiser_for(config, latent_shape: tuple[int, int, int], num_classes: int) -> diffusion.LatentDenoiser:
  fields = {key: value for key, value in config.model.items() if key != "embedding_dim"}
  unet_config = diffusion.latent_unet_config(latent_shape, config.model.embedding_dim, **fields)
  return diffusion.LatentDenoiser(unet_config, tuple(latent_shape), num_classes)


def autoencoder_run(config):
  """(the autoencoder's run config, its AutoencoderConfig) from data.autoencoder_workdir; one-line errors unless it
  is a VAE with a spatial latent over images of this data set's shape."""
  workdir = config.data.autoencoder_workdir
  try:
    run = autoencoder_task.image_eval().run_config(workdir)
  except UserError as e:
    raise UserError(f"data.autoencoder_workdir: {e}") from None
  if run.get("task") != "autoencoder" or run.get("model", {}).get("kind") != "vae":
    raise ConfigError(
        f"data.autoencoder_workdir={workdir} holds a run of task={run.get('task')!r}, not a VAE: train one with "
        "configs/autoencoder.py:kl_vae"
    )
  model_config = autoencoder_task.model_config(run)
  if not model_config.latent_channels:
    raise ConfigError(
        f"the VAE in data.autoencoder_workdir={workdir} has a vector latent "
        f"(model.latent_dim={model_config.latent_dim}); latent diffusion needs a spatial one "
        "(model.latent_channels > 0, as configs/autoencoder.py:kl_vae)"
    )
  image_shape = DATASETS[config.data.name].image_shape
  if tuple(model_config.image_shape) != tuple(image_shape):
    raise ConfigError(
        f"data.name={config.data.name!r} has images of shape {image_shape}; the VAE in "
        f"data.autoencoder_workdir={workdir} takes {model_config.image_shape}"
    )
  return run, model_config


def restore_vae(config, run) -> tuple[vae.VAE, dict]:
  """The VAE and its parameters from the newest readable checkpoint of data.autoencoder_workdir."""
  from experiments import train  # it imports the task registry, which imports this module

  run.data.data_dir = config.data.data_dir  # where the data lives on this machine, not where it lived then
  try:
    task, _, state = train.restore_for_inference(run, config.data.autoencoder_workdir)
  except (UserError, ConfigError) as e:
    raise type(e)(f"data.autoencoder_workdir={config.data.autoencoder_workdir}: {e}") from None
  return task.model, state.params


class LatentDiffusionTask(Task):
  unit = "examples"
  config_schema = {
      "data": {"name": one_of(_labelled_datasets()), "autoencoder_workdir": Rule(str, "a non-empty path", bool)},
      # UNetConfig checks ranges and choices when built; embedding_dim: the timestep and class embeddings' width.
      "model": {**fields_of(unet.UNetConfig, exclude=_NOT_CONFIGURED), "embedding_dim": integer(2)},
      "diffusion": {
          "timesteps": integer(1),
          "schedule": one_of(diffusion.SCHEDULES),
          "beta_start": number(0, 1, low_open=True, high_open=True),  # linear schedule only
          "beta_end": number(0, 1, low_open=True, high_open=True),
      },
      "objective": {"p_uncond": number(0, 1)},
      "sample": {
          "sampler": one_of(SAMPLERS),
          "steps": integer(1),  # ddim
          "eta": number(0, 1),  # ddim: 0 deterministic, 1 DDPM's posterior variance
          "guidance": number(0),
          "num_images": integer(1),
      },
      "evaluation": {
          **autoencoder_task.FRECHET_RULES,
          "ddim_steps": Rule(tuple, "a tuple of step counts >= 1", lambda v: all(type(s) is int and s >= 1 for s in v)),
      },
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    del mesh_shape
    timesteps = diffusion.DiffusionConfig(**config.diffusion).timesteps
    denoiser_for(config, _ANY_LATENT, DATASETS[config.data.name].num_classes)
    sample = config.sample
    if sample.sampler == "ddim" and sample.steps > timesteps:
      raise ConfigError(f"sample.steps={sample.steps} exceeds diffusion.timesteps={timesteps}")
    if any(steps > timesteps for steps in config.evaluation.ddim_steps):
      raise ConfigError(
          f"evaluation.ddim_steps={show(config.evaluation.ddim_steps)} exceeds diffusion.timesteps={timesteps}"
      )
    if config.evaluation.ddim_steps and not config.evaluation.classifier_workdir:
      raise ConfigError("evaluation.ddim_steps are measured by a Fréchet distance: set evaluation.classifier_workdir")
    if sample.guidance > 0 and config.objective.p_uncond == 0:
      raise ConfigError(
          f"sample.guidance={show(sample.guidance)} needs objective.p_uncond > 0: the null label is never trained"
      )

  @classmethod
  def describe(cls, config):
    _, model_config = autoencoder_run(config)  # the latent's shape, without reading data or checkpoints
    denoiser = denoiser_for(config, model_config.latent_shape, DATASETS[config.data.name].num_classes)
    return ModelDescription(init_params=functools.partial(_init_params, denoiser), embeddings=("classes",))

  def __init__(self, config):
    super().__init__(config)
    run, self.vae_config = autoencoder_run(config)
    if config.evaluation.classifier_workdir:  # its config now, before training; its checkpoint after
      autoencoder_task.image_eval().check_classifier_run(config.evaluation.classifier_workdir, config.data.name)
    dataset = DATASETS[config.data.name]
    self.null_label = dataset.num_classes
    self.latent_shape = self.vae_config.latent_shape
    self.model = denoiser_for(config, self.latent_shape, dataset.num_classes)
    self.alpha_bar = diffusion.alpha_bars(diffusion.DiffusionConfig(**config.diffusion))
    self.vae, self.vae_params = restore_vae(config, run)
    self._encode_batches = jax.jit(lambda params, batches: jax.lax.map(
        lambda images: self.vae.apply({"params": params}, images, method=vae.VAE.encode), batches
    ))
    train_split = dataset.load(config.data.data_dir, dataset.train_split)
    eval_split = dataset.load(config.data.data_dir, dataset.eval_split)
    train_mean, train_log_variance = self._encode(train_split["image"])
    # Rombach et al. 2022, sec. 4.3.2: one factor scales the latents to unit variance.
    self.scale_factor = float(1.0 / np.sqrt(train_mean.var() + np.exp(train_log_variance).mean()))
    self.train_latents = self._posterior(train_mean, train_log_variance, train_split["label"])
    self.eval_latents = self._posterior(*self._encode(eval_split["image"]), eval_split["label"])
    self.eval_latents["index"] = np.arange(len(eval_split["label"]), dtype=np.int32)
    self.eval_image_stats = (float(eval_split["image"].mean()), float(eval_split["image"].std()))
    self.eval_images, self.train_images = eval_split["image"], train_split["image"]
    self._generate = jax.jit(self._generate_images, static_argnames=("sampler", "steps", "guidance", "eta"))

  def _encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The posterior (mean, log-variance) of every image, each [n, *latent_shape], in one compiled loop."""
    count = len(images)
    padded = np.concatenate([images, np.zeros((-count % ENCODING_BATCH, *images.shape[1:]), images.dtype)])
    batches = padded.reshape(-1, ENCODING_BATCH, *images.shape[1:])
    mean, log_variance = self._encode_batches(self.vae_params, batches)
    return tuple(np.asarray(a).reshape(-1, *self.latent_shape)[:count] for a in (mean, log_variance))

  def _posterior(self, mean, log_variance, labels) -> dict[str, np.ndarray]:
    """The scaled posterior of each image: z = mean + std ε, times the scale factor."""
    return {
        "mean": mean * self.scale_factor, "std": np.exp(0.5 * log_variance) * self.scale_factor,
        "label": labels.astype(np.int32),
    }

  def init_params(self, rng):
    return _init_params(self.model, rng)

  def _denoiser(self, params, train: bool = False, rng: jax.Array | None = None) -> diffusion.Denoiser:
    rngs = {} if rng is None else {"dropout": rng}
    return lambda x, t, labels: self.model.apply({"params": params}, x, t, labels, train, rngs=rngs)

  def loss_fn(self, params, batch, rng, train):
    latent_rng, timestep_rng, noise_rng, label_rng, dropout_rng = jax.random.split(rng, 5)
    mean = batch["mean"]
    latents = mean + batch["std"] * jax.random.normal(latent_rng, mean.shape)
    timesteps = jax.random.randint(timestep_rng, (mean.shape[0],), 0, self.alpha_bar.shape[0])
    noise = jax.random.normal(noise_rng, mean.shape)
    # Dropping labels is the objective itself (Ho & Salimans 2022, Algorithm 1), not a training-only regulariser.
    labels = diffusion.drop_labels(label_rng, batch["label"], self.config.objective.p_uncond, self.null_label)
    denoiser = self._denoiser(params, train, dropout_rng)
    loss = diffusion.l_simple(denoiser, self.alpha_bar, latents, timesteps, noise, labels).mean()
    return loss, {"loss": loss}

  def eval_fn(self, params, batch):
    weight, mean = batch["weight"], batch["mean"]

    def draws(index):
      latent_key, timestep_key, noise_key = jax.random.split(jax.random.fold_in(jax.random.key(EVAL_SEED), index), 3)
      return (
          jax.random.normal(latent_key, self.latent_shape),
          jax.random.randint(timestep_key, (), 0, self.alpha_bar.shape[0]),
          jax.random.normal(noise_key, self.latent_shape),
      )

    latent_noise, timesteps, noise = jax.vmap(draws)(batch["index"])
    latents = mean + batch["std"] * latent_noise
    denoiser = self._denoiser(params)
    sums = {"examples": weight.sum()}
    unconditional = jnp.full_like(batch["label"], self.null_label)
    for name, labels in (("loss", batch["label"]), ("unconditional_loss", unconditional)):
      sums[name] = jnp.sum(weight * diffusion.l_simple(denoiser, self.alpha_bar, latents, timesteps, noise, labels))
    return sums

  def summarize_eval(self, sums):
    return {name: value / sums["examples"] for name, value in sums.items() if name != "examples"}

  def generation_metrics(self, params):
    """The Fréchet distances of samples (as `sample` says, then with each of evaluation.ddim_steps) and of train
    images to the test images, in the classifier's features; none without evaluation.classifier_workdir."""
    evaluation, sample = self.config.evaluation, self.config.sample
    if not evaluation.classifier_workdir:
      return {}
    image_eval = autoencoder_task.image_eval()
    scorer = image_eval.FrechetScorer(evaluation.classifier_workdir, self.eval_images, self.config.data.name)
    count = evaluation.frechet_images
    labels = np.arange(count) % self.null_label  # the classes in turn, as balanced as the test split
    distances = {}  # (sampler, steps): each drawn once, though `sample` may also be one of the ddim_steps

    def distance(sampler: str, steps: int) -> float:
      key = (sampler, steps if sampler == "ddim" else None)
      if key not in distances:
        distances[key] = scorer(self._generate_in_batches(params, labels, sampler, steps, sample.guidance, sample.eta))
      return distances[key]

    metrics = {"frechet_distance": distance(sample.sampler, sample.steps)}
    for steps in evaluation.ddim_steps:
      metrics[f"frechet_ddim_{steps}"] = distance("ddim", steps)
    metrics["frechet_distance_train"] = scorer(self.train_images[:count])
    return metrics

  def _generate_in_batches(self, params, labels, sampler, steps, guidance, eta) -> np.ndarray:
    """generate_images of SAMPLE_BATCH labels at a time (the last batch padded: one compile), each from its own
    fixed key."""
    batches = pipeline.padded_batches({"label": labels}, SAMPLE_BATCH)
    images = [
        self.generate_images(params, jax.random.fold_in(jax.random.key(EVAL_SEED), index), batch["label"], sampler,
                             steps, guidance, eta)[batch["weight"] > 0]
        for index, batch in enumerate(batches)
    ]
    return np.concatenate(images)

  def train_batches(self, seed, process_index, process_count):
    latents = self.train_latents
    return pipeline.training_batches(
        pipeline.grain.MapDataset.range(len(latents["label"])), self.config.data.batch_size, seed, process_index,
        process_count, batch_fn=lambda rows: {name: array[np.asarray(rows)] for name, array in latents.items()},
    )

  def eval_batches(self):
    return pipeline.padded_batches(self.eval_latents, self.config.data.eval_batch_size)

  def units_per_step(self):
    return self.config.data.batch_size

  def _generate_images(self, params, vae_params, rng, labels, sampler, steps, guidance, eta):
    start_rng, noise_rng = jax.random.split(rng)
    start = jax.random.normal(start_rng, (labels.shape[0], *self.latent_shape))
    denoiser = self._denoiser(params)
    if guidance:
      denoiser = diffusion.classifier_free_guidance(denoiser, guidance, self.null_label)
    if sampler == "ddpm":
      latents = diffusion.ddpm_sample(denoiser, self.alpha_bar, start, noise_rng, labels)
    else:
      latents = diffusion.ddim_sample(denoiser, self.alpha_bar, start, noise_rng, labels, steps, eta)
    outputs = self.vae.apply({"params": vae_params}, latents / self.scale_factor, method=vae.VAE.decode)
    return jnp.clip(autoencoder.pixel_means(self.vae_config.likelihood, outputs), 0.0, 1.0)

  def generate_images(
      self, params, rng: jax.Array, labels, sampler: str = "ddim", steps: int = 50, guidance: float = 0.0,
      eta: float = 0.0,
  ) -> np.ndarray:
    """Images [n, h, w, c] in [0, 1], one per label (num_classes, the null label, draws an unconditional one):
    latents sampled by `sampler` with guidance w, decoded by the VAE's decoder. One compiled call per sampler,
    steps, guidance and eta."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not labels.size or labels.min() < 0 or labels.max() > self.null_label:
      raise ConfigError(
          f"labels must be a non-empty vector of classes in [0, {self.null_label}] ({self.null_label}: unconditional)"
      )
    if sampler not in SAMPLERS:
      raise ConfigError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    if not guidance >= 0:
      raise ConfigError(f"guidance={guidance!r} must be >= 0 (0: the conditional model)")
    images = self._generate(params, self.vae_params, rng, jnp.asarray(labels, jnp.int32), sampler=sampler,
                            steps=steps, guidance=float(guidance), eta=float(eta))
    return np.asarray(images)

  def figures(self, params, rng):
    """Samples of the config's sampler: a row per class (FIGURE_COLUMNS each), then an unconditional row."""
    sample, columns = self.config.sample, FIGURE_COLUMNS
    labels = np.repeat(np.arange(self.null_label + 1), columns)  # the null label last: unconditional
    images = self.generate_images(params, rng, labels, sample.sampler, sample.steps, sample.guidance, sample.eta)
    return {"samples": images.reshape(self.null_label + 1, columns, *images.shape[1:])}

  def sample(self, params, rng, prompts=None, stream=None):
    """One line: the config's sample of num_images images, the classes in turn, against the eval images' stats."""
    del prompts, stream  # images are drawn for classes, not prompts
    sample = self.config.sample
    labels = np.arange(sample.num_images) % self.null_label
    images = self.generate_images(params, rng, labels, sample.sampler, sample.steps, sample.guidance, sample.eta)
    data_mean, data_std = self.eval_image_stats
    how = f"{sample.steps} DDIM steps, eta {sample.eta:g}" if sample.sampler == "ddim" else "DDPM, all steps"
    return (
        f"{len(images)} images {images.shape[1]}x{images.shape[2]} ({how}, guidance {sample.guidance:g}, classes "
        f"0..{self.null_label - 1} in turn): pixel mean {images.mean():.3f}, std {images.std():.3f} "
        f"(eval images: {data_mean:.3f}, {data_std:.3f})"
    )


def _init_params(model: diffusion.LatentDenoiser, rng: jax.Array):
  latents = jnp.zeros((1, *model.latent_shape))
  labels = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  return model.init(rng, latents, jnp.zeros((1,), jnp.int32), labels)["params"]
