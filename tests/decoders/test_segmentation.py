"""Segmentation losses and metrics against numpy transcriptions of their definitions."""
import jax.numpy as jnp
import numpy as np
import pytest

from decoders import segmentation

CLASSES = 3


def _example(seed: int = 0, batch: int = 4, side: int = 8):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, side, side, CLASSES)).astype(np.float32) * 2
  masks = rng.integers(0, CLASSES, size=(batch, side, side)).astype(np.int32)
  return logits, masks


def _softmax(logits):
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


def _perfect_logits(masks):
  return 10.0 * np.eye(CLASSES, dtype=np.float32)[masks]


def _counts(logits, masks, weights=None):
  return segmentation.intersection_and_union(jnp.asarray(logits), jnp.asarray(masks), weights)


def test_pixel_cross_entropy_is_the_mean_negative_log_probability_of_each_images_mask():
  logits, masks = _example()
  probabilities = _softmax(logits.astype(np.float64))
  expected = np.array([
      np.mean([-np.log(probabilities[b, i, j, masks[b, i, j]]) for i in range(8) for j in range(8)]) for b in range(4)
  ])
  got = segmentation.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(masks))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("epsilon", [1.0, 1e-6])
def test_soft_dice_loss_is_milletari_equation_1_averaged_over_classes(epsilon):
  logits, masks = _example(1)
  probabilities = _softmax(logits.astype(np.float64))
  expected = []
  for b in range(4):
    per_class = []
    for c in range(CLASSES):
      p, g = probabilities[b, ..., c].ravel(), (masks[b] == c).ravel().astype(np.float64)
      per_class.append((2 * np.sum(p * g) + epsilon) / (np.sum(p**2) + np.sum(g**2) + epsilon))
    expected.append(1 - np.mean(per_class))
  got = segmentation.soft_dice_loss(jnp.asarray(logits), jnp.asarray(masks), epsilon)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_perfect_prediction_has_no_dice_loss_even_for_a_class_the_image_lacks():
  _, masks = _example(2)
  masks[0] = np.where(masks[0] == 2, 0, masks[0])  # image 0 has no class 2: smoothing scores it 1, not 0/0
  loss = segmentation.soft_dice_loss(jnp.asarray(_perfect_logits(masks)), jnp.asarray(masks))
  np.testing.assert_allclose(loss, 0.0, atol=1e-3)


def test_intersection_and_union_count_the_argmax_pixels_of_each_class_times_each_images_weight():
  logits, masks = _example(3)
  weights = np.array([1.0, 0.0, 1.0, 2.0], np.float32)
  predicted = logits.argmax(-1)
  expected_i, expected_u = np.zeros(CLASSES), np.zeros(CLASSES)
  for b in range(4):
    for c in range(CLASSES):
      expected_i[c] += weights[b] * np.sum((predicted[b] == c) & (masks[b] == c))
      expected_u[c] += weights[b] * np.sum((predicted[b] == c) | (masks[b] == c))
  intersection, union = _counts(logits, masks, jnp.asarray(weights))
  np.testing.assert_array_equal(intersection, expected_i)
  np.testing.assert_array_equal(union, expected_u)


def test_counts_add_up_over_batches_to_the_scores_of_the_whole_set():
  logits, masks = _example(4, batch=6)
  whole = _counts(logits, masks)
  halves = [_counts(logits[rows], masks[rows]) for rows in (slice(0, 3), slice(3, 6))]
  np.testing.assert_array_equal(whole[0], halves[0][0] + halves[1][0])
  np.testing.assert_array_equal(whole[1], halves[0][1] + halves[1][1])

  iou, dice = segmentation.iou_and_dice(*whole)
  predicted = logits.argmax(-1)
  for c in range(CLASSES):
    a, b = predicted == c, masks == c
    np.testing.assert_allclose(iou[c], np.sum(a & b) / np.sum(a | b))
    np.testing.assert_allclose(dice[c], 2 * np.sum(a & b) / (a.sum() + b.sum()))  # 2|A ∩ B| / (|A| + |B|)


def test_a_perfect_prediction_scores_1_and_a_disjoint_one_0():
  _, masks = _example(5)
  iou, dice = segmentation.iou_and_dice(*_counts(_perfect_logits(masks), masks))
  np.testing.assert_array_equal(iou, 1.0)
  np.testing.assert_array_equal(dice, 1.0)

  shifted = (masks + 1) % CLASSES  # every pixel predicted as another class
  iou, dice = segmentation.iou_and_dice(*_counts(_perfect_logits(shifted), masks))
  np.testing.assert_array_equal(iou, 0.0)
  np.testing.assert_array_equal(dice, 0.0)


def test_a_class_found_nowhere_has_no_score_and_is_left_out_of_the_mean():
  iou, dice = segmentation.iou_and_dice(np.array([5.0, 0.0, 2.0]), np.array([5.0, 0.0, 4.0]))
  assert np.isnan(iou[1]) and np.isnan(dice[1])
  assert segmentation.mean_over_classes(iou, [1, 2]) == 0.5
  np.testing.assert_allclose(segmentation.mean_over_classes(dice, range(3)), (1.0 + 2 * 2 / 6) / 2)
  assert np.isnan(segmentation.mean_over_classes(iou, [1]))
