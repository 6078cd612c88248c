"""A small convolutional image classifier whose penultimate layer is the feature space of our Fréchet distance.

    image -> [3x3 conv + ReLU + 2x2 max-pool] x N -> flatten -> dense + ReLU (the features) -> dense (class logits)

a LeNet-style network (LeCun et al. 1998) with ReLUs and max-pooling. Heusel et al. 2017 measure the Fréchet
Inception Distance in the 2,048-d pool3 features of an Inception-v3 trained on ImageNet; no Inception weights can
be had offline here, so experiments/image_eval.py measures the Fréchet distance in `features`, this network's
`feature_dim`-wide penultimate layer, trained on the same data set as the generative model it judges
(experiments/tasks/image_classifier.py). Distances in this space compare only with each other under the same
classifier checkpoint, never with published FIDs: a report must say so.
"""
import dataclasses

import flax.linen as nn
import jax

from decoders.errors import ConfigError
from decoders.layers.partitioning import CONV_IN, CONV_OUT, EMBED, with_axes


def _check_positive(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{name}={value!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)  # height, width, channels
  num_classes: int = 10
  channels: tuple[int, ...] = (32, 64)  # the width of each conv level; each level halves height and width
  feature_dim: int = 128  # the width of the penultimate layer: the Fréchet distance's feature space

  def __post_init__(self):
    shape = tuple(self.image_shape)
    if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in shape):
      raise ConfigError(f"image_shape={self.image_shape!r} must be (height, width, channels) of positive integers")
    if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
      raise ConfigError(f"num_classes={self.num_classes!r} must be an integer >= 2")
    if not isinstance(self.channels, tuple) or not self.channels:
      raise ConfigError(f"model.channels={self.channels!r} must be a non-empty tuple of positive integers")
    for width in self.channels:
      _check_positive("model.channels", width)
    _check_positive("model.feature_dim", self.feature_dim)
    smallest, height, width = 2 ** len(self.channels), shape[0], shape[1]
    if height < smallest or width < smallest:
      raise ConfigError(
          f"images of {height}x{width} cannot be max-pooled len(model.channels)={len(self.channels)} times: "
          f"height and width must be at least {smallest}"
      )


class Classifier(nn.Module):
  """images [b, h, w, c] in [0, 1] -> class logits [b, num_classes]; `features` gives the penultimate layer."""

  config: ClassifierConfig

  def setup(self):
    he_normal = nn.initializers.he_normal()  # He et al. 2015: the variance ReLU layers keep
    self.convs = [
        nn.Conv(width, (3, 3), padding="SAME", kernel_init=with_axes(he_normal, None, None, CONV_IN, CONV_OUT),
                bias_init=with_axes(nn.initializers.zeros, CONV_OUT))
        for width in self.config.channels
    ]
    self.to_features = nn.Dense(self.config.feature_dim, kernel_init=with_axes(he_normal, None, EMBED),
                                bias_init=with_axes(nn.initializers.zeros, EMBED))
    self.to_logits = nn.Dense(self.config.num_classes,
                              kernel_init=with_axes(nn.initializers.lecun_normal(), EMBED, None),
                              bias_init=with_axes(nn.initializers.zeros, None))

  def features(self, images: jax.Array) -> jax.Array:
    """The penultimate layer's activations [b, feature_dim], after its ReLU."""
    expected = tuple(self.config.image_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
      raise ConfigError(f"images of shape {tuple(images.shape)} do not fit a classifier of image_shape={expected}")
    x = images
    for conv in self.convs:
      x = nn.max_pool(nn.relu(conv(x)), (2, 2), strides=(2, 2))
    return nn.relu(self.to_features(x.reshape(x.shape[0], -1)))

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.to_logits(self.features(images))
