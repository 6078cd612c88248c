"""The training loop: restore or initialise, train N steps, evaluate, checkpoint, log, sample.

    state = restore the newest checkpoint, else initialise
    repeat until config.train.num_steps:
      state, metrics = train_step(state, next batch)
      every log_every:        fetch metrics; stop on NaN/Inf; TensorBoard + progress bar
      every eval_every:       evaluate on (part of) the held-out set
      every checkpoint_every: save state + data position (asynchronously)
    evaluate on the whole held-out set; print a sample
"""
import os
import time

import jax

from experiments import sharding, tasks
from experiments.checkpointing import Checkpointer
from experiments.data.pipeline import BatchIterator
from experiments.errors import DivergedError, UserError
from experiments.metrics import MetricsWriter, ProgressBar, mean_metrics
from experiments.trainer import Trainer


def setup(config, workdir: str):
  """The task, trainer and checkpointer for `config`; fails on bad config before compiling."""
  task = tasks.build(config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_divides(config.data.batch_size, mesh, "data.batch_size")
  sharding.check_batch_divides(config.data.eval_batch_size, mesh, "data.eval_batch_size")
  trainer = Trainer(task, config, mesh)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
  return task, trainer, checkpointer


def restore_or_init(config, trainer: Trainer, checkpointer: Checkpointer):
  restored = checkpointer.restore_latest(trainer.abstract_state)
  if restored is not None:
    return restored
  return trainer.init(jax.random.key(config.seed)), {"position": 0}


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the final eval metrics."""
  os.makedirs(workdir, exist_ok=True)
  task, trainer, checkpointer = setup(config, workdir)
  state, data_state = restore_or_init(config, trainer, checkpointer)
  step, num_steps = int(state.step), config.train.num_steps
  if step:
    print(f"resuming from the checkpoint at step {step} in {checkpointer.directory}", flush=True)
  batches = BatchIterator(task.train_batches(config.seed, jax.process_index(), jax.process_count()))
  batches.set_state(data_state)
  eval_batches = task.eval_batches()
  writer = MetricsWriter(workdir)
  bar = ProgressBar(step, num_steps, task.unit)
  pending, window_start, window_steps = [], time.perf_counter(), 0

  def check_and_log():
    nonlocal pending, window_start, window_steps
    if not pending:
      return
    fetched = jax.device_get(pending)
    bad = [step - len(fetched) + i + 1 for i, m in enumerate(fetched) if m["nonfinite"]]
    if bad:
      kept = checkpointer.latest_step()
      raise DivergedError(
          f"loss became NaN/Inf at step {bad[0]}; training stopped, "
          f"the last good checkpoint ({'step ' + str(kept) if kept is not None else 'none yet'}) is kept"
      )
    elapsed = time.perf_counter() - window_start
    rate = window_steps * task.units_per_step() / max(elapsed, 1e-9)
    logged = {**mean_metrics(fetched), f"{task.unit}_per_second": rate}
    writer.write(step, "train", logged)
    bar.show(step, logged, rate)
    pending, window_start, window_steps = [], time.perf_counter(), 0

  try:
    while step < num_steps:
      batch = sharding.global_batch(next(batches), trainer.batch_sharding)
      state, metrics = trainer.train_step(state, batch)
      step += 1
      window_steps += 1
      pending.append(metrics)
      bar.advance()
      last = step == num_steps
      if step % config.train.log_every == 0 or last:
        check_and_log()
      if step % config.train.checkpoint_every == 0 or last:
        check_and_log()  # never save a step whose loss has not been checked
        checkpointer.save(step, state, batches.get_state())
      if step % config.train.eval_every == 0 and not last:
        metrics = trainer.evaluate(state.params, eval_batches, config.train.eval_batches)
        writer.write(step, "eval", metrics)
        bar.print(f"step {step}: eval loss {metrics['loss']:.4f}")
        window_start = time.perf_counter()  # evaluation time is not training throughput
  finally:
    bar.close()
    checkpointer.wait()
  final = trainer.evaluate(state.params, eval_batches)
  writer.write(step, "eval", final)
  print(f"final eval at step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in final.items()), flush=True)
  text = task.sample(state.params, jax.random.key(config.seed + 1))
  if text is not None:
    writer.write_text(step, "sample", text)
    print(f"sample:\n{text}", flush=True)
  writer.close()
  return final


def restore_for_inference(config, workdir: str):
  """(task, trainer, state) from the newest checkpoint in `workdir`, for --mode=eval|sample."""
  task, trainer, checkpointer = setup(config, workdir)
  restored = checkpointer.restore_latest(trainer.abstract_state)
  if restored is None:
    raise UserError(f"no checkpoint in {checkpointer.directory}: train first (--mode=train)")
  return task, trainer, restored[0]


def evaluate(config, workdir: str) -> dict:
  task, trainer, state = restore_for_inference(config, workdir)
  metrics = trainer.evaluate(state.params, task.eval_batches())
  print(f"eval at step {int(state.step)}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
  return metrics


def sample(config, workdir: str) -> str | None:
  task, _, state = restore_for_inference(config, workdir)
  text = task.sample(state.params, jax.random.key(config.seed + 1))  # the key train_and_evaluate samples with
  print(text if text is not None else f"task {config.task!r} has nothing to sample", flush=True)
  return text
