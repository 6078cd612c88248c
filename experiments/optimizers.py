"""AdamW with warmup + cosine / inverse-square-root schedules and global-norm clipping."""
import jax
import jax.numpy as jnp
import optax

from decoders.errors import ConfigError
from experiments.config_rules import integer, number, one_of

SCHEDULES = ("cosine", "rsqrt", "constant")

CONFIG_SCHEMA = {
    "optimizer": {
        "learning_rate": number(0, low_open=True),  # the peak, reached after warmup
        "schedule": one_of(SCHEDULES),
        "warmup_steps": integer(0),
        "final_lr_fraction": number(0, 1),  # cosine ends at peak x this
        "b1": number(0, 1, high_open=True),
        "b2": number(0, 1, high_open=True),
        "eps": number(0, low_open=True),  # 0 would divide 0 by 0 for a parameter without gradient
        "weight_decay": number(0),
        "clip_norm": number(0, low_open=True),
    }
}


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
