"""After a resume, metrics.jsonl and the TensorBoard files hold no row that the run writes again."""
import json
import os

from tensorboardX.proto.event_pb2 import Event

from experiments import metrics


def _write_run(workdir, steps):
  writer = metrics.MetricsWriter(str(workdir))
  for step in steps:
    writer.write(step, "train", {"loss": float(step)})
  writer.write(steps[-1], "eval", {"loss": 0.5})
  writer.write_text(steps[-1], "sample", "ROMEO:")
  writer.close()


def _rows(workdir):
  jsonl = [(row["step"], row["split"]) for row in map(json.loads, open(workdir / metrics.JSONL_FILE, encoding="utf-8"))]
  events = []
  for name in sorted(os.listdir(workdir / metrics.TENSORBOARD_DIR)):
    records, complete = metrics.read_records(str(workdir / metrics.TENSORBOARD_DIR / name))
    assert complete
    events += [(e.step, v.tag.split("/")[0]) for e in map(Event.FromString, records) for v in e.summary.value]
  return jsonl, events


def test_rows_the_resumed_run_writes_again_are_dropped_from_both_logs(tmp_path):
  _write_run(tmp_path, [2, 4, 6, 8])

  metrics.discard_rows(str(tmp_path), lambda step, split: step <= 4)

  jsonl, events = _rows(tmp_path)
  assert jsonl == [(2, "train"), (4, "train")]
  assert events == [(2, "train"), (4, "train")]


def test_a_row_cut_short_by_a_kill_is_dropped(tmp_path):
  _write_run(tmp_path, [2, 4])
  with open(tmp_path / metrics.JSONL_FILE, "a", encoding="utf-8") as f:
    f.write('{"step": 6, "split": "tr')  # SIGKILL in the middle of a write
  event_file = tmp_path / metrics.TENSORBOARD_DIR / os.listdir(tmp_path / metrics.TENSORBOARD_DIR)[0]
  with open(event_file, "ab") as f:
    f.write(b"\x40\x00\x00")  # the first bytes of a record's header

  metrics.discard_rows(str(tmp_path), lambda step, split: True)

  jsonl, events = _rows(tmp_path)  # _rows asserts the event file now ends cleanly
  assert jsonl == [(2, "train"), (4, "train"), (4, "eval"), (4, "sample")]
  assert events == [(2, "train"), (4, "train"), (4, "eval"), (4, "sample")]


def test_a_row_whose_newline_a_kill_cut_off_ends_its_line(tmp_path):
  _write_run(tmp_path, [2])
  with open(tmp_path / metrics.JSONL_FILE, "a", encoding="utf-8") as f:
    f.write('{"step": 3, "split": "train", "loss": 1.0}')  # whole, but the newline never came

  metrics.discard_rows(str(tmp_path), lambda step, split: True)
  _write_run(tmp_path, [4])  # the resumed run appends

  assert _rows(tmp_path)[0] == [
      (2, "train"), (2, "eval"), (2, "sample"), (3, "train"), (4, "train"), (4, "eval"), (4, "sample")
  ]
