"""Each attention mask against a hand-written expectation (True = may attend)."""
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.layers import masks


def _rows(*rows: str) -> np.ndarray:
  """A boolean matrix written as rows of '1'/'.' characters, one string per query."""
  return np.array([[c == "1" for c in row] for row in rows])


def test_causal_mask_lets_position_i_see_only_positions_up_to_i():
  mask = np.asarray(masks.causal_mask(4))
  assert mask.shape == (1, 1, 4, 4) and mask.dtype == bool
  np.testing.assert_array_equal(mask[0, 0], _rows("1...", "11..", "111.", "1111"))


def test_sliding_window_mask_is_causal_and_keeps_the_last_window_keys():
  mask = np.asarray(masks.sliding_window_mask(5, 2))
  assert mask.shape == (1, 1, 5, 5)
  np.testing.assert_array_equal(mask[0, 0], _rows("1....", "11...", ".11..", "..11.", "...11"))


@pytest.mark.parametrize("window", [1, 2, 3, 6, 9])
def test_sliding_window_query_i_sees_exactly_keys_i_minus_window_plus_1_to_i(window):
  # Mistral (Jiang et al. 2023): with window W, position i attends to i-W+1..i.
  mask = np.asarray(masks.sliding_window_mask(6, window))[0, 0]
  for i in range(6):
    np.testing.assert_array_equal(np.flatnonzero(mask[i]), np.arange(max(0, i - window + 1), i + 1))


def test_a_window_covering_the_sequence_is_the_causal_mask():
  np.testing.assert_array_equal(masks.sliding_window_mask(4, 4), masks.causal_mask(4))


@pytest.mark.parametrize("window", [0, -1])
def test_an_empty_window_is_a_config_error(window):
  with pytest.raises(ConfigError, match=f"window={window}"):
    masks.sliding_window_mask(4, window)


def test_padding_mask_hides_padding_keys_from_every_query():
  mask = np.asarray(masks.padding_mask(np.array([[1, 1, 0], [1, 0, 0]])))
  assert mask.shape == (2, 1, 1, 3) and mask.dtype == bool
  np.testing.assert_array_equal(mask[:, 0, 0], [[True, True, False], [True, False, False]])


def test_prefix_lm_mask_is_bidirectional_over_each_rows_prefix_and_causal_after_it():
  mask = np.asarray(masks.prefix_lm_mask(4, np.array([0, 2, 4])))
  assert mask.shape == (3, 1, 4, 4)
  np.testing.assert_array_equal(mask[0, 0], _rows("1...", "11..", "111.", "1111"))  # no prefix: causal
  np.testing.assert_array_equal(mask[1, 0], _rows("11..", "11..", "111.", "1111"))
  np.testing.assert_array_equal(mask[2, 0], _rows("1111", "1111", "1111", "1111"))  # all prefix


def test_segment_mask_keeps_packed_sequences_apart_and_padding_to_itself():
  mask = np.asarray(masks.segment_mask(np.array([[1, 1, 2, 2, 0], [1, 2, 2, 0, 0]])))
  assert mask.shape == (2, 1, 5, 5)
  np.testing.assert_array_equal(mask[0, 0], _rows("11...", "11...", "..11.", "..11.", "....1"))
  np.testing.assert_array_equal(mask[1, 0], _rows("1....", ".11..", ".11..", "...1.", "....1"))


def test_every_segment_mask_row_attends_somewhere():
  # A fully masked softmax row is NaN in some kernels.
  mask = np.asarray(masks.segment_mask(np.array([[0, 0, 0], [3, 0, 0]])))
  assert mask.any(axis=-1).all()


def test_combine_ands_masks_of_different_shapes_and_skips_none():
  causal = masks.causal_mask(3)  # [1, 1, 3, 3]
  padding = masks.padding_mask(np.array([[1, 1, 1], [1, 1, 0]]))  # [2, 1, 1, 3]
  mask = np.asarray(masks.combine(causal, None, padding))
  assert mask.shape == (2, 1, 3, 3)
  np.testing.assert_array_equal(mask[0, 0], _rows("1..", "11.", "111"))
  np.testing.assert_array_equal(mask[1, 0], _rows("1..", "11.", "11."))
  assert masks.combine(None, None) is None
