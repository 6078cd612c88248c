"""The U-Net: Fig. 1's network against a torch transcription, the skip ablation, conditioning and its errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from decoders.errors import ConfigError
from decoders.layers.positions import sinusoidal
from decoders.layers.upsampling import METHODS
from decoders.models.unet import UNet, UNetConfig, timestep_embedding

TINY = dict(
    image_height=16, image_width=8, image_channels=2, out_channels=3, base_width=4, channel_multipliers=(1, 2, 4)
)


def _images(batch: int = 4, config: UNetConfig | None = None) -> jax.Array:
  config = config or UNetConfig(**TINY)
  return jax.random.uniform(jax.random.key(1), (batch, config.image_height, config.image_width, config.image_channels))


def _init(config: UNetConfig, images: jax.Array, conditioning=None) -> dict:
  return nn.unbox(jax.jit(UNet(config).init)(jax.random.key(0), images, conditioning))["params"]


def _apply(config: UNetConfig, params, images, conditioning=None, **options):
  return jax.jit(lambda p, x, c: UNet(config).apply({"params": p}, x, c, **options))(params, images, conditioning)


def _count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def _torch_unet(params, images, conditioning, config: UNetConfig) -> np.ndarray:
  """Ronneberger et al. 2015, Fig. 1, written again with torch: 3x3 convs (zero-padded), 2x2 max-pools, nearest
  upsampling + 2x2 conv, concatenation of skip then upsampled, GroupNorm, ReLU; Ho et al.'s conditioning."""
  t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731

  def conv(x, p, pad):
    return F.conv2d(F.pad(x, pad), t(p["kernel"]).permute(3, 2, 0, 1), t(p["bias"]))

  def block(x, p):
    for i in range(config.convs_per_level):
      x = conv(x, p[f"conv_{i}"], (1, 1, 1, 1))
      if i == 0:
        projection = F.silu(t(conditioning)) @ t(p["conditioning"]["kernel"]) + t(p["conditioning"]["bias"])
        x = x + projection[:, :, None, None]
      norm = p[f"norm_{i}"]
      x = F.relu(F.group_norm(x, config.norm_groups, t(norm["scale"]), t(norm["bias"]), eps=1e-6))
    return x

  x, skips, depth = t(images).permute(0, 3, 1, 2), [], len(config.channel_multipliers)
  for level in range(depth):
    x = block(x, params[f"down_{level}"])
    if level < depth - 1:
      skips.append(x)
      x = F.max_pool2d(x, 2)
  for level in reversed(range(depth - 1)):
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    x = conv(x, params[f"upsample_{level}"]["conv"], (0, 1, 0, 1))  # SAME for a 2x2 kernel pads after, as XLA
    x = block(torch.cat([skips[level], x], dim=1), params[f"up_{level}"])
  return conv(x, params["to_outputs"], (0, 0, 0, 0)).permute(0, 2, 3, 1).numpy()


def test_the_forward_pass_is_figure_1_of_the_paper():
  config = UNetConfig(**TINY, upsampling="nearest", norm="group", norm_groups=2, conditioning_dim=6)
  images, conditioning = _images(), jax.random.normal(jax.random.key(2), (4, 6))
  params = _init(config, images, conditioning)
  got = _apply(config, params, images, conditioning)
  np.testing.assert_allclose(got, _torch_unet(params, images, conditioning, config), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_each_upsampling_method_gives_a_class_score_per_pixel(method):
  config = UNetConfig(**TINY, upsampling=method)
  images = _images()
  out = _apply(config, _init(config, images), images)
  assert out.shape == (4, 16, 8, 3) and np.all(np.isfinite(out))


def test_without_skips_the_expanding_path_sees_only_the_upsampled_features():
  """skips=False is the skip network whose first up-convolutions get zero weights on the skip channels."""
  with_skips, without = UNetConfig(**TINY), UNetConfig(**TINY, skips=False)
  images = _images()
  params_with, params_without = _init(with_skips, images), _init(without, images)
  widths = with_skips.widths
  # Each level of the expanding path reads `width` channels fewer in its first 3x3 conv: 9 x width² weights.
  assert _count(params_with) - _count(params_without) == sum(9 * w * w for w in widths[:-1])

  zeroed = jax.tree.map(lambda x: x, params_without)
  for level, width in enumerate(widths[:-1]):
    kernel = params_without[f"up_{level}"]["conv_0"]["kernel"]
    zeroed[f"up_{level}"]["conv_0"]["kernel"] = jnp.concatenate([jnp.zeros_like(kernel), kernel], axis=2)
  expected = _apply(without, params_without, images)
  np.testing.assert_allclose(_apply(with_skips, zeroed, images), expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(_apply(with_skips, params_with, images), expected)


def test_conditioning_enters_each_level_through_its_projection_only():
  config = UNetConfig(**TINY, conditioning_dim=6)
  images, conditioning = _images(), jax.random.normal(jax.random.key(3), (4, 6))
  params = _init(config, images, conditioning)
  out = _apply(config, params, images, conditioning)
  other = conditioning.at[0].set(-conditioning[0])
  changed = _apply(config, params, images, other)
  assert not np.allclose(out[0], changed[0]) and np.allclose(out[1:], changed[1:])  # per image: no batch leakage

  # With every projection zero, the network is the unconditioned one with the same convolutions.
  silent = {name: {k: v for k, v in block.items() if k != "conditioning"} for name, block in params.items()}
  zeroed = jax.tree.map(lambda x: x, params)  # a copy to change
  for block in zeroed.values():
    if "conditioning" in block:
      block["conditioning"] = jax.tree.map(jnp.zeros_like, block["conditioning"])
  expected = _apply(UNetConfig(**TINY), silent, images)
  np.testing.assert_allclose(_apply(config, zeroed, images, conditioning), expected, rtol=1e-5, atol=1e-6)


def test_conditioning_is_refused_by_an_unconditioned_network_and_required_by_a_conditioned_one():
  images = _images()
  plain, conditioned = UNet(UNetConfig(**TINY)), UNet(UNetConfig(**TINY, conditioning_dim=6))
  with pytest.raises(ConfigError, match="conditioning was passed to a U-Net with model.conditioning_dim=0"):
    plain.init(jax.random.key(0), images, jnp.ones((4, 6)))
  with pytest.raises(ConfigError, match=r"model.conditioning_dim=6 needs conditioning \[batch, 6\]"):
    conditioned.init(jax.random.key(0), images)
  with pytest.raises(ConfigError, match=r"conditioning of shape \(4, 5\) is not \[batch=4, model.conditioning_dim=6\]"):
    conditioned.init(jax.random.key(0), images, jnp.ones((4, 5)))
  with pytest.raises(ConfigError, match=r"images of shape \(4, 8, 8, 2\) do not fit the U-Net's \[batch, 16, 8, 2\]"):
    plain.init(jax.random.key(0), jnp.ones((4, 8, 8, 2)))


def test_dropout_acts_in_training_only():
  config = UNetConfig(**TINY, dropout=0.5)
  images = _images()
  params = _init(config, images)
  rngs = {"dropout": jax.random.key(5)}
  evaluated = _apply(config, params, images)
  np.testing.assert_array_equal(_apply(config, params, images, rngs=rngs), evaluated)
  assert not np.allclose(_apply(config, params, images, train=True, rngs=rngs), evaluated)


def test_timestep_embedding_is_the_transformers_sinusoid_of_the_step():
  steps = jnp.array([0, 7, 999])
  embedding = np.asarray(timestep_embedding(steps, 8))
  frequencies = 1.0 / 10_000.0 ** (np.arange(0, 8, 2) / 8)
  np.testing.assert_allclose(embedding[:, 0::2], np.sin(np.array([0, 7, 999])[:, None] * frequencies), atol=1e-4)
  np.testing.assert_allclose(embedding[:, 1::2], np.cos(np.array([0, 7, 999])[:, None] * frequencies), atol=1e-4)
  np.testing.assert_array_equal(embedding, sinusoidal(steps, 8))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_height=18), "image_height=18 is not divisible by 4 = 2**(depth - 1), the downsampling of"),
        (dict(image_width=12, channel_multipliers=(1, 2, 4, 8)), "image_width=12 is not divisible by 8"),
        (dict(upsampling="deconv"), "model.upsampling='deconv' is not one of"),
        (dict(norm="batch"), "model.norm='batch' is not one of ('none', 'group')"),
        (dict(norm="group", norm_groups=8), "model.norm_groups=8 does not divide level 0's width 4"),
        (dict(norm_groups=0), "model.norm_groups=0 must be a positive integer"),
        (dict(channel_multipliers=()), "model.channel_multipliers=() must be a non-empty tuple of positive integers"),
        (dict(channel_multipliers=(1, -2)), "model.channel_multipliers=(1, -2)"),
        (dict(base_width=0), "model.base_width=0 must be a positive integer"),
        (dict(convs_per_level=0), "model.convs_per_level=0"),
        (dict(dropout=1.0), "model.dropout=1.0 must be in [0, 1)"),
        (dict(conditioning_dim=-1), "model.conditioning_dim=-1 must be >= 0"),
        (dict(out_channels=0), "out_channels=0 must be a positive integer"),
    ],
)
def test_impossible_configs_are_one_line_errors(overrides, message):
  with pytest.raises(ConfigError) as raised:
    UNetConfig(**{**TINY, **overrides})
  assert message in str(raised.value) and "\n" not in str(raised.value)
