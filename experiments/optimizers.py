"""AdamW with warmup + cosine / inverse-square-root schedules and global-norm clipping."""
import jax
import jax.numpy as jnp
import optax

from decoders.errors import ConfigError

SCHEDULES = ("cosine", "rsqrt", "constant")


def learning_rate_schedule(config, num_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then the named decay."""
  peak, warmup = config.learning_rate, config.warmup_steps
  if config.schedule == "cosine":  # Loshchilov & Hutter 2017, without restarts
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, max(num_steps, warmup + 1), end_value=peak * config.final_lr_fraction
    )
  if config.schedule == "rsqrt":  # Vaswani et al. 2017, eq. 3, with the peak set explicitly

    def rsqrt(step):
      step = jnp.maximum(step, 1)
      return peak * jnp.minimum(step / max(warmup, 1), jnp.sqrt(max(warmup, 1) / step))

    return rsqrt
  if config.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  raise ConfigError(f"optimizer.schedule={config.schedule!r} is not one of {SCHEDULES}")


def decay_mask(params):
  """Weight decay applies to matrices (kernels, embeddings), not to biases and norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make(config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = learning_rate_schedule(config, num_steps)
  optimizer = optax.chain(
      optax.clip_by_global_norm(config.clip_norm),
      optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask),
  )
  return optimizer, schedule
