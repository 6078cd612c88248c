"""Runs that start together on a fresh data dir build the dataset once and all read it."""
import subprocess
import sys

from tests.conftest import REPO, subprocess_env

READ = "from experiments.data import shakespeare; import sys; print(len(shakespeare.load_split_text(sys.argv[1], 'validation')))"


def test_concurrent_first_uses_build_the_dataset_once(tmp_path):
  processes = [
      subprocess.Popen([sys.executable, "-c", READ, str(tmp_path)], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for _ in range(3)
  ]
  outputs = [process.communicate(timeout=300) for process in processes]
  for process, (out, err) in zip(processes, outputs):
    assert process.returncode == 0, err[-2000:]
  lengths = {int(out.split()[-1]) for out, _ in outputs}  # the one that builds also prints TFDS's progress
  assert len(lengths) == 1 and lengths.pop() > 400_000
