"""Input pipelines: resumable iteration, per-process shares, padded evaluation batches."""
import grain
import numpy as np
import pytest

from experiments.data import pipeline


def _batches(seed=0, process_index=0, process_count=1, size=16, batch_size=4):
  return pipeline.training_batches(
      grain.MapDataset.range(size), batch_size, seed, process_index, process_count, batch_fn=np.array
  )


def test_batch_iterator_resumes_the_identical_batch_sequence():
  first = pipeline.BatchIterator(_batches())
  for _ in range(5):  # past the first epoch of 4 batches, into the reshuffled second
    next(first)
  state = first.get_state()
  expected = [next(first) for _ in range(6)]

  resumed = pipeline.BatchIterator(_batches())
  resumed.set_state(state)
  assert state == {"position": 5}
  for want, got in zip(expected, (next(resumed) for _ in range(6))):
    np.testing.assert_array_equal(got, want)


def test_each_epoch_is_a_permutation_and_epochs_differ():
  iterator = pipeline.BatchIterator(_batches())
  epochs = [np.concatenate([next(iterator) for _ in range(4)]) for _ in range(2)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(16))
  assert not np.array_equal(*epochs)


def test_two_processes_read_disjoint_shares_of_the_same_global_batches():
  shares = [pipeline.BatchIterator(_batches(process_index=i, process_count=2)) for i in range(2)]
  whole = pipeline.BatchIterator(_batches())
  for _ in range(4):  # one epoch
    parts = [next(share) for share in shares]
    assert all(len(part) == 2 for part in parts)
    assert not set(parts[0]) & set(parts[1])
    assert sorted(np.concatenate(parts)) == sorted(next(whole))


def test_batch_size_must_divide_among_processes():
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    _batches(process_count=3)


def test_padded_batches_pad_the_last_batch_with_weight_zero():
  arrays = {"x": np.arange(10, dtype=np.float32) + 1, "y": np.ones((10, 2), np.int32)}
  batches = pipeline.padded_batches(arrays, 4)
  assert [b["x"].shape for b in batches] == [(4,)] * 3
  np.testing.assert_array_equal(np.concatenate([b["weight"] for b in batches]), [1] * 10 + [0] * 2)
  np.testing.assert_array_equal(batches[-1]["x"], [9, 10, 0, 0])
  np.testing.assert_array_equal(batches[-1]["y"], [[1, 1], [1, 1], [0, 0], [0, 0]])
  assert batches[-1]["y"].dtype == np.int32


def test_token_windows_hold_inputs_and_next_token_targets():
  windows = pipeline.token_windows(np.arange(10), 3, stride=3)
  assert [windows[i].tolist() for i in range(len(windows))] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]


def test_char_tokenizer_round_trips_and_rejects_unknown_characters():
  tokenizer = pipeline.CharTokenizer.from_text("to be or not")
  assert tokenizer.decode(tokenizer.encode("not to be")) == "not to be"
  with pytest.raises(ValueError, match="'z'"):
    tokenizer.encode("zebra")


def test_pack_sequences_keeps_every_token_once_with_segments_and_positions():
  sequences = [np.arange(1, 6), np.arange(10, 13), np.arange(20, 30), np.arange(40, 42)]
  packed = pipeline.pack_sequences(sequences, length=8)
  rows = [packed[i] for i in range(len(packed))]
  assert all(r["tokens"].shape == (8,) for r in rows)
  # The 10-token sequence is split into pieces of 8 and 2; first fit puts 5 + 3, then 8, then 2 + 2.
  assert len(rows) == 3
  kept = sorted(int(t) for r in rows for t in r["tokens"][r["segment_ids"] > 0])
  assert kept == sorted(int(t) for s in sequences for t in s)
  np.testing.assert_array_equal(rows[0]["segment_ids"], [1, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(rows[0]["positions"], [0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(rows[2]["segment_ids"], [1, 1, 2, 2, 0, 0, 0, 0])
  assert (rows[2]["tokens"][4:] == 0).all()


def test_packed_windows_keep_the_documents_of_a_row_apart():
  documents = [np.array([10, 11]), np.array([20]), np.array([], np.int64), np.array([30, 31, 32, 33, 34]), np.array([40, 41])]
  # The stream 10 11 20 30 31 32 33 34 40 41 holds two windows of 5 tokens, 4 apart.
  rows = pipeline.packed_windows(documents, length=4, stride=4)
  assert len(rows) == 2
  first, second = rows[0], rows[1]
  np.testing.assert_array_equal(first["inputs"], [10, 11, 20, 30])
  np.testing.assert_array_equal(first["targets"], [11, 20, 30, 31])
  np.testing.assert_array_equal(first["segment_ids"], [1, 1, 2, 3])  # the empty document takes no id
  np.testing.assert_array_equal(first["positions"], [0, 1, 0, 0])
  np.testing.assert_array_equal(first["target_weights"], [1, 0, 0, 1])  # 11 -> 20 and 20 -> 30 cross a boundary
  # The second row starts inside the 5-token document: positions count from the row's start.
  np.testing.assert_array_equal(second["inputs"], [31, 32, 33, 34])
  np.testing.assert_array_equal(second["targets"], [32, 33, 34, 40])
  np.testing.assert_array_equal(second["segment_ids"], [1, 1, 1, 1])
  np.testing.assert_array_equal(second["positions"], [0, 1, 2, 3])
  np.testing.assert_array_equal(second["target_weights"], [1, 1, 1, 0])


def test_packed_windows_are_the_windows_of_the_joined_documents():
  documents = [np.arange(3), np.arange(10, 15), np.arange(20, 22)]
  packed, stream = pipeline.packed_windows(documents, 4), pipeline.token_windows(np.concatenate(documents), 4)
  assert len(packed) == len(stream) == 6
  for row, window in zip((packed[i] for i in range(6)), (stream[i] for i in range(6))):
    np.testing.assert_array_equal(row["inputs"], window[:-1])
    np.testing.assert_array_equal(row["targets"], window[1:])
    assert 0 <= row["positions"].min() and row["positions"].max() < 4
  # Row 1 (tokens 1 2 10 11) holds a boundary; row 3 (10 11 12 13) starts at a document's start.
  np.testing.assert_array_equal(packed[1]["positions"], [0, 1, 0, 1])
  np.testing.assert_array_equal(packed[3]["positions"], [0, 1, 2, 3])


def test_length_bucketed_batches_hold_one_bucket_each_cover_every_epoch_and_resume_by_index():
  rows, batch_size = 40, 4
  buckets = np.arange(rows) % 3  # rows 0, 3, 6, ... in bucket 0: 14, 13 and 13 rows
  arrays = {"tokens": np.arange(rows * 6).reshape(rows, 6), "row": np.arange(rows)}
  crop = lambda batch, bucket: {**batch, "tokens": batch["tokens"][:, : 2 * (bucket + 1)]}  # noqa: E731
  make = lambda **kw: pipeline.length_bucketed_batches(arrays, buckets, crop, batch_size, seed=7, **kw)  # noqa: E731
  batches = make()
  per_epoch = 3 + 3 + 3  # full batches of 14, 13 and 13 rows
  seen = []
  for index in range(per_epoch):
    batch = batches[index]
    (bucket,) = set(buckets[batch["row"]])
    assert batch["tokens"].shape == (batch_size, 2 * (bucket + 1))
    seen += batch["row"].tolist()
  assert len(set(seen)) == len(seen) == per_epoch * batch_size  # no row twice in an epoch
  assert [batches[i]["row"].tolist() for i in range(per_epoch, 2 * per_epoch)] != [
      batches[i]["row"].tolist() for i in range(per_epoch)]  # the next epoch is shuffled anew
  again = make()
  for index in (5, 17, 2):  # any index, in any order, gives the same batch
    np.testing.assert_array_equal(again[index]["row"], batches[index]["row"])
  halves = [make(process_index=p, process_count=2)[11]["row"] for p in (0, 1)]
  np.testing.assert_array_equal(np.sort(np.concatenate(halves)), np.sort(batches[11]["row"]))
