"""The suite's persistent compilation cache (tests/conftest.py) is bounded by the suite itself."""
import os

from tests.conftest import prune_cache


def test_an_outgrown_cache_keeps_its_newest_half_and_a_small_one_is_left_alone(tmp_path):
  for age in range(10):  # 100 bytes each; file 0 is the oldest
    path = tmp_path / f"program_{age}-cache"
    path.write_bytes(b"x" * 100)
    os.utime(path, (1_000_000 + age, 1_000_000 + age))
  prune_cache(str(tmp_path), 1000)
  assert len(os.listdir(tmp_path)) == 10
  prune_cache(str(tmp_path), 800)
  assert sorted(os.listdir(tmp_path)) == [f"program_{age}-cache" for age in range(6, 10)]
  prune_cache(str(tmp_path / "missing"), 10)  # no cache yet: nothing to do
