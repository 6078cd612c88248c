"""run.py as two processes of one job (two 'hosts' on localhost, CPU collectives) ends where one process does."""
import subprocess

import jax
import numpy as np
import portpicker

from experiments import train
from tests.conftest import REPO, checkpoint_names, run_py_args, subprocess_env
from tests.experiments.test_sharding import ATOL, KEY_BIAS_ATOL, RTOL


def test_two_processes_train_the_model_one_process_trains(data_dir, trained_lm, lm_config, tmp_path):
  workdir, port = str(tmp_path / "workdir"), portpicker.pick_unused_port()
  processes = [
      subprocess.Popen(
          run_py_args(workdir, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}", data_dir=data_dir),
          cwd=REPO,
          env=subprocess_env(devices=2),  # 2 devices each: one 4-device mesh over two processes
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  outputs = [process.communicate(timeout=300) for process in processes]
  assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
  assert checkpoint_names(workdir) == ["3", "6"]  # written once by the job, not once per process

  # Each process read its own half of every batch; together they took the single-process steps.
  reference_workdir, reference_final = trained_lm
  for out, _ in outputs:
    assert f"final eval at step 6: loss={reference_final['loss']:.4f}" in out
  _, _, state = train.restore_for_inference(lm_config, workdir)
  _, _, reference = train.restore_for_inference(lm_config, reference_workdir)
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(state.params)[0], jax.tree.leaves(reference.params)):
    name = jax.tree_util.keystr(path)
    atol = KEY_BIAS_ATOL if name.endswith("['key']['bias']") else ATOL  # see test_sharding.py
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=atol, err_msg=name)
