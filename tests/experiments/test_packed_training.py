"""The LM task with data.packing="documents": each play a document, trained and evaluated by the one trainer."""
import numpy as np

from experiments import train
from experiments.tasks import language_model


def test_packed_rows_weigh_out_exactly_the_targets_that_begin_a_play(lm_config):
  lm_config.data.packing = "documents"
  task = language_model.LanguageModelTask(lm_config)
  length = lm_config.data.context_length

  batch = task.train_batches(seed=0, process_index=0, process_count=1)[0]
  packed = ("inputs", "targets", "segment_ids", "positions", "target_weights")
  assert {name: array.shape for name, array in batch.items()} == dict.fromkeys(packed, (lm_config.data.batch_size, length))
  # Evaluation: the non-overlapping windows of the validation plays laid end to end.
  batches = task.eval_batches()
  real = np.concatenate([b["weight"] for b in batches]) > 0
  weights = np.concatenate([b["target_weights"] for b in batches])[real].reshape(-1)
  starts = np.cumsum([len(play) for play in task.validation_documents])[:-1]  # where the 2nd, 3rd, ... play begins
  np.testing.assert_array_equal(np.flatnonzero(weights == 0) + 1, starts)  # target t is character t + 1


def test_packed_training_evaluates_every_target_but_the_plays_first_characters(lm_config, trained_lm, tmp_path):
  lm_config.data.packing = "documents"
  lm_config.data.eval_batch_size = 1024  # fewer, larger steps through the whole split: the count is the same
  packed = train.train_and_evaluate(lm_config, str(tmp_path))  # 6 steps, then the whole validation split
  stream = trained_lm[1]  # the same run with the default data.packing="stream"

  assert np.isfinite(packed["loss"]) and packed["loss"] > 0
  assert stream["tokens"] - packed["tokens"] == 3  # the validation split holds 4 plays: 3 boundaries
