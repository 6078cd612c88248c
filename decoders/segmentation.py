"""Losses and metrics of semantic segmentation: logits [b, h, w, classes] against masks int [b, h, w].

Losses (per image, so a batch's mean and an evaluation set's sum are both exact):
  pixel_cross_entropy  the mean over pixels of -log p(mask), decoders.losses.cross_entropy on each image;
  soft_dice_loss       1 - the soft Dice coefficient of the softmax (Milletari et al. 2016, eq. 1), averaged over
                       classes and smoothed by epsilon, which scores the overlap of each class as a whole, so a
                       small class weighs as much as the background that cross-entropy lets dominate.

Metrics add up over batches: `intersection_and_union` counts, per class, the pixels where the argmax prediction
and the mask agree on it (|A ∩ B|) and where either says it (|A ∪ B|); summed over the evaluation set they give
IoU = I / U and Dice = 2I / (|A| + |B|) = 2I / (U + I) of the whole set, not a mean of per-batch ratios.
A class absent from both the predictions and the masks everywhere has U = 0: its IoU and Dice are undefined (0/0),
reported as NaN, and left out of `mean_over_classes`.
"""
import jax
import jax.numpy as jnp
import numpy as np

from decoders.losses import cross_entropy


def pixel_cross_entropy(logits: jax.Array, masks: jax.Array) -> jax.Array:
  """[b] mean cross-entropy in nats over each image's pixels."""
  total, count = jax.vmap(cross_entropy)(logits, masks)
  return total / count


def soft_dice_loss(logits: jax.Array, masks: jax.Array, epsilon: float = 1.0) -> jax.Array:
  """[b] 1 - mean over classes of (2 Σ p g + ε) / (Σ p² + Σ g² + ε) over each image's pixels (Milletari eq. 1).

  p is the softmax probability of the class and g its one-hot mask. With ε, a class the image lacks and the
  model does not predict scores 1 instead of 0/0.
  """
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  targets = jax.nn.one_hot(masks, logits.shape[-1], dtype=jnp.float32)
  pixels = (1, 2)
  overlap = jnp.sum(probabilities * targets, axis=pixels)
  squares = jnp.sum(jnp.square(probabilities), axis=pixels) + jnp.sum(targets, axis=pixels)  # g² = g
  dice = (2.0 * overlap + epsilon) / (squares + epsilon)  # [b, classes]
  return 1.0 - jnp.mean(dice, axis=-1)


def intersection_and_union(
    logits: jax.Array, masks: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """([classes], [classes]) pixel counts of prediction ∩ mask and prediction ∪ mask, summed over the images
  (each counted `weights` [b] times: 0 for padding)."""
  num_classes = logits.shape[-1]
  predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
  target = jax.nn.one_hot(masks, num_classes, dtype=jnp.float32)
  if weights is None:
    weights = jnp.ones(masks.shape[0], jnp.float32)
  weights = weights.astype(jnp.float32)[:, None, None, None]
  intersection = jnp.sum(predicted * target * weights, axis=(0, 1, 2))
  union = jnp.sum(jnp.maximum(predicted, target) * weights, axis=(0, 1, 2))
  return intersection, union


def iou_and_dice(intersection, union) -> tuple[np.ndarray, np.ndarray]:
  """Per-class IoU = I / U and Dice = 2I / (U + I) from summed counts; NaN where U = 0 (the class is nowhere)."""
  intersection, union = np.asarray(intersection, np.float64), np.asarray(union, np.float64)
  present = union > 0
  iou = np.divide(intersection, union, out=np.full_like(union, np.nan), where=present)
  dice = np.divide(2 * intersection, union + intersection, out=np.full_like(union, np.nan), where=present)
  return iou, dice


def mean_over_classes(scores: np.ndarray, classes) -> float:
  """The mean of `scores` over `classes`, leaving out the NaN of classes found nowhere (NaN if all are)."""
  chosen = np.asarray(scores, np.float64)[list(classes)]
  chosen = chosen[~np.isnan(chosen)]
  return float(chosen.mean()) if chosen.size else float("nan")
