"""Upsampling blocks of image decoders: each multiplies height and width by `factor` and sets the channels.

    transposed     a transposed convolution of stride `factor` (a "deconvolution"; Zeiler et al. 2010)
    nearest        nearest-neighbour resize, then a stride-1 convolution (Odena et al. 2016's resize-convolution)
    bilinear       bilinear resize, then a stride-1 convolution
    pixel_shuffle  a stride-1 convolution to features x factor² channels, rearranged into a factor x factor
                   block of pixels each (sub-pixel convolution; Shi et al. 2016, eq. 4)

Odena et al. 2016 ("Deconvolution and Checkerboard Artifacts"): a transposed convolution whose kernel size is not
divisible by its stride overlaps unevenly, so some output pixels receive more kernel taps than their neighbours and
the image carries a checkerboard at the stride's frequency; resizing first gives every output pixel the same taps.
The kernel size is therefore the block's second knob. Pixel shuffle starts from ICNR weights (Aitken et al. 2017:
every sub-pixel of a block gets the same kernel, so at initialisation it is nearest-neighbour resize + convolution
and starts free of the pattern).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers.partitioning import CONV_IN, CONV_OUT, with_axes

METHODS = ("transposed", "nearest", "bilinear", "pixel_shuffle")


def check_method(method: str, factor: int = 2, what: str = "model.upsampling") -> None:
  """Raises ConfigError unless `method` is one of METHODS and `factor` a whole number of at least 2."""
  if method not in METHODS:
    raise ConfigError(f"{what}={method!r} is not one of {METHODS}")
  if not isinstance(factor, int) or factor < 2:
    raise ConfigError(f"upsampling factor {factor!r} must be an integer of at least 2")


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """[b, h, w, c·factor²] -> [b, h·factor, w·factor, c]: torch.nn.PixelShuffle's order, channel (c, i, j) to pixel
  (i, j) of the block of channel c."""
  batch, height, width, channels = x.shape
  if channels % (factor * factor):
    raise ConfigError(f"pixel shuffle by {factor} needs channels divisible by {factor * factor}, got {channels}")
  x = x.reshape(batch, height, width, channels // factor**2, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # b, h, i, w, j, c
  return x.reshape(batch, height * factor, width * factor, channels // factor**2)


def icnr(base_init, factor: int):
  """ICNR (Aitken et al. 2017): a kernel for `pixel_shuffle` whose factor² sub-pixel kernels of each output channel
  are equal, drawn once by `base_init`."""

  def init(key, shape, dtype=jnp.float32):
    *spatial, in_features, out_features = shape
    base = base_init(key, (*spatial, in_features, out_features // factor**2), dtype)
    return jnp.repeat(base, factor**2, axis=-1)  # channel c·factor² + s takes base channel c

  return init


def _conv_kernel_init(factor: int | None = None):
  base = nn.initializers.lecun_normal()
  return with_axes(base if factor is None else icnr(base, factor), None, None, CONV_IN, CONV_OUT)


class Upsample(nn.Module):
  """[b, h, w, c] -> [b, h·factor, w·factor, features] by `method` (one of METHODS)."""

  features: int
  method: str = "transposed"
  factor: int = 2
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_method(self.method, self.factor)
    kernel, factor = (self.kernel_size, self.kernel_size), self.factor
    bias_init = with_axes(nn.initializers.zeros, CONV_OUT)
    if self.method == "transposed":
      return nn.ConvTranspose(
          self.features, kernel, strides=(factor, factor), padding="SAME", kernel_init=_conv_kernel_init(),
          bias_init=bias_init, name="conv",
      )(x)
    if self.method == "pixel_shuffle":
      x = nn.Conv(
          self.features * factor**2, kernel, padding="SAME", kernel_init=_conv_kernel_init(factor),
          bias_init=bias_init, name="conv",
      )(x)
      return pixel_shuffle(x, factor)
    batch, height, width, channels = x.shape
    x = jax.image.resize(x, (batch, height * factor, width * factor, channels), method=self.method)
    return nn.Conv(self.features, kernel, padding="SAME", kernel_init=_conv_kernel_init(), bias_init=bias_init,
                   name="conv")(x)
