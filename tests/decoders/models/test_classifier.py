"""The image classifier: its forward pass against a naive numpy network, `features` as the penultimate layer, and
the one-line errors of impossible configs and images."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.models.classifier import Classifier, ClassifierConfig

# 9x10: max-pooling floors the odd height (9 -> 4 -> 2), as the numpy reference does.
CONFIG = ClassifierConfig(image_shape=(9, 10, 2), num_classes=3, channels=(3, 4), feature_dim=5)
IMAGES = np.random.default_rng(0).uniform(size=(4, 9, 10, 2)).astype(np.float32)


def _params(config=CONFIG):
  return nn.unbox(Classifier(config).init(jax.random.key(1), IMAGES[:1]))["params"]


def _numpy_conv_same(x, kernel, bias):
  """A 3x3 stride-1 convolution with zero padding: a sum over the nine shifted copies of the input."""
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  height, width = x.shape[1:3]
  out = sum(
      padded[:, dy : dy + height, dx : dx + width] @ kernel[dy, dx] for dy in range(3) for dx in range(3)
  )
  return out + bias


def _numpy_max_pool(x):
  height, width = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  x = x[:, :height, :width]
  return x.reshape(x.shape[0], height // 2, 2, width // 2, 2, x.shape[3]).max(axis=(2, 4))


def _numpy_features(params, images):
  x = images.astype(np.float64)
  for level in range(len(CONFIG.channels)):
    conv = params[f"convs_{level}"]
    x = _numpy_max_pool(np.maximum(_numpy_conv_same(x, np.asarray(conv["kernel"]), np.asarray(conv["bias"])), 0))
  dense = params["to_features"]
  return np.maximum(x.reshape(len(x), -1) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"]), 0)


def test_the_features_and_logits_match_a_numpy_network():
  params = _params()
  model = Classifier(CONFIG)
  features = model.apply({"params": params}, IMAGES, method="features")
  logits = model.apply({"params": params}, IMAGES)
  assert features.shape == (4, 5) and logits.shape == (4, 3)
  expected = _numpy_features(params, IMAGES)
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
  assert (expected > 0).any()  # some units are active: the comparison is not of two zero arrays
  head = params["to_logits"]
  expected_logits = expected @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-5)


def test_the_parameters_carry_logical_axes_and_their_shapes():
  boxed = Classifier(CONFIG).init(jax.random.key(1), IMAGES[:1])["params"]
  assert boxed["convs_1"]["kernel"].names == (None, None, "conv_in", "conv_out")
  params = nn.unbox(boxed)
  assert params["convs_0"]["kernel"].shape == (3, 3, 2, 3) and params["convs_1"]["kernel"].shape == (3, 3, 3, 4)
  assert params["to_features"]["kernel"].shape == (2 * 2 * 4, 5)  # 9x10 pooled twice: 2x2 maps of 4 channels
  assert params["to_logits"]["kernel"].shape == (5, 3)


@pytest.mark.parametrize("fields, message", [
    (dict(channels=()), "model.channels=() must be a non-empty tuple"),
    (dict(channels=(4, -2)), "model.channels=-2 must be a positive integer"),
    (dict(feature_dim=0), "model.feature_dim=0 must be a positive integer"),
    (dict(num_classes=1), "num_classes=1 must be an integer >= 2"),
    (dict(image_shape=(28, 28)), "image_shape=(28, 28) must be (height, width, channels)"),
    (dict(image_shape=(8, 8, 1), channels=(4, 4, 4, 4)), "images of 8x8 cannot be max-pooled len(model.channels)=4"),
])
def test_an_impossible_config_is_one_line(fields, message):
  with pytest.raises(ConfigError) as raised:
    ClassifierConfig(**fields)
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_images_of_another_shape_are_refused_before_compiling():
  with pytest.raises(ConfigError, match=r"images of shape \(4, 10, 9, 2\) do not fit a classifier of image_shape="):
    Classifier(CONFIG).apply({"params": _params()}, IMAGES.transpose(0, 2, 1, 3))
