"""The training loop: check the config, restore or initialise, train, evaluate, checkpoint, log, sample.

    check every config key (nothing read or written yet); lock the workdir
    state = restore the newest checkpoint, else initialise; save config.json
    repeat until config.train.num_steps:
      state, metrics = train_step(state, next batch)
      every log_every:        fetch metrics; stop on NaN/Inf; TensorBoard + progress bar
      every checkpoint_every: save state + data position (asynchronously)
      every eval_every:       evaluate on (part of) the held-out set
      on SIGTERM or SIGINT:   save at this step and stop (preemption.py)
    evaluate on the whole held-out set; print a sample
"""
import contextlib
import os
import time
from collections.abc import Sequence

import jax
import tensorflow_datasets as tfds

from decoders import interop
from decoders.layers import partitioning
from decoders.models import decoder_lm
from experiments import attention_maps, config_rules, figures, metrics, optimizers, preemption, pretrained, sharding, tasks
from experiments import workdir as workdir_lib
from experiments.checkpointing import Checkpointer
from experiments.config_rules import TEXT, integer
from experiments.data.pipeline import BatchIterator
from experiments.errors import DivergedError, UserError
from experiments.metrics import MetricsWriter, ProgressBar, mean_metrics
from experiments.profiling import StepProfiler
from experiments.trainer import Trainer

# The keys this loop reads; the optimizer, the mesh and the task declare theirs.
CONFIG_SCHEMA = {
    "task": TEXT,
    # "" (a random initialisation), hf:DIR or gguf:PATH: pretrained weights (experiments/pretrained.py).
    "init_from": TEXT,
    "seed": integer(0, below=2**31 - 1),  # jax.random.key keeps 32 bits; seed + 1 seeds the sample
    "data": {"name": TEXT, "data_dir": TEXT, "batch_size": integer(1), "eval_batch_size": integer(1)},
    "train": {
        "num_steps": integer(0),  # 0: only evaluate and sample the initial (e.g. pretrained) weights
        "log_every": integer(1),
        "eval_every": integer(1),
        "eval_batches": integer(0),  # batches per periodic evaluation; 0: all of them
        "checkpoint_every": integer(1),
        "keep_checkpoints": integer(1),
        "profile_steps": integer(0),  # steps traced with jax.profiler into <workdir>/profile; 0: none
    },
}


def check_config(config, num_devices: int | None = None) -> type[tasks.Task]:
  """Checks every key of `config`, alone and against the others and the devices; returns the task class.

  Reads no data and creates nothing, so a mistake costs a second, not a run. The mesh is
  for `num_devices`, by default those JAX sees (--mode=inspect describes bigger meshes).
  """
  task_class = tasks.lookup(config)
  schema = config_rules.merge(CONFIG_SCHEMA, optimizers.CONFIG_SCHEMA, sharding.CONFIG_SCHEMA, task_class.config_schema)
  config_rules.check(config, schema)
  mesh_shape = sharding.mesh_shape(config.mesh, jax.device_count() if num_devices is None else num_devices)
  for key in ("batch_size", "eval_batch_size"):
    sharding.check_divisible(f"data.{key}", config.data[key], partitioning.BATCH, mesh_shape)
  if config.init_from:
    pretrained.parse(config.init_from)  # the form and the file's place; the file is read when used
  task_class.check_config(config, mesh_shape)
  return task_class


def setup(config, workdir: str, task_class: type[tasks.Task] | None = None, create: bool = True):
  """The task, trainer and checkpointer for `config`; everything fails before compiling.

  `task_class`: what `check_config(config)` returned, if the caller has checked it already.
  """
  task, trainer = build(config, task_class or check_config(config))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints, create=create)
  return task, trainer, checkpointer


def build(config, task_class: type[tasks.Task]):
  """The task (its data read) and the trainer (its steps compiled lazily) for a checked config."""
  workdir_lib.make_directory(config.data.data_dir or tfds.core.constants.DATA_DIR, "data.data_dir")
  task = task_class(config)
  return task, Trainer(task, config, sharding.make_mesh(config.mesh))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the final eval metrics."""
  task_class = check_config(config)
  workdir_lib.make_directory(workdir, "--workdir")
  leader = jax.process_index() == 0
  with workdir_lib.lock(workdir) if leader else contextlib.nullcontext():
    task, trainer, checkpointer = setup(config, workdir, task_class)
    report_config_changes(config, workdir)
    restored = checkpointer.restore_latest(trainer.abstract_state)
    if leader:
      workdir_lib.save_config(workdir, config)  # only now: an incompatible config must not replace it
    if restored is None:
      state, data_state = initial_state(config, task, trainer), {"position": 0}
    else:
      state, data_state = restored
      resumed_from = int(state.step)
      print(f"resuming from the checkpoint at step {resumed_from} in {checkpointer.directory}", flush=True)
      metrics.discard_rows(workdir, _rows_to_keep(resumed_from, finished=resumed_from >= config.train.num_steps))
    batches = BatchIterator(task.train_batches(config.seed, jax.process_index(), jax.process_count()))
    batches.set_state(data_state)
    writer = MetricsWriter(workdir)
    try:
      state = _train(config, task, trainer, checkpointer, state, batches, writer, workdir)
      final = {**trainer.evaluate(state.params, task.eval_batches()), **task.generation_metrics(state.params)}
      step = int(state.step)
      writer.write(step, "eval", final)
      print(f"final eval at step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in final.items()), flush=True)
      text = task.sample(state.params, jax.random.key(config.seed + 1))
      if text is not None:
        writer.write_text(step, "sample", text)
        print(f"sample:\n{text}", flush=True)
      _write_figures(config, task, state.params, workdir)
    finally:
      writer.close()
  return final


def _train(config, task, trainer, checkpointer, state, batches, writer, workdir):
  """Steps `state` to config.train.num_steps; stops early (checkpointed) on divergence or a stop signal."""
  step, num_steps, train = int(state.step), config.train.num_steps, config.train
  eval_batches = task.eval_batches()
  bar = ProgressBar(step, num_steps, task.unit)
  profiler = StepProfiler(workdir, step, train.profile_steps)
  pending, window_start, window_steps, saved = [], time.perf_counter(), 0, step

  def diverged(what: str, at: int) -> DivergedError:
    kept = checkpointer.latest_step()
    return DivergedError(
        f"{what} became NaN/Inf at step {at}; training stopped, "
        f"the last good checkpoint ({'step ' + str(kept) if kept is not None else 'none yet'}) is kept"
    )

  def check_and_log():
    nonlocal pending, window_start, window_steps
    if not pending:
      return
    fetched = jax.device_get(pending)
    bad = [step - len(fetched) + i + 1 for i, m in enumerate(fetched) if m["nonfinite"]]
    if bad:
      raise diverged("the loss or gradients", bad[0])
    elapsed = time.perf_counter() - window_start
    rate = window_steps * task.units_per_step() / max(elapsed, 1e-9)
    logged = {**mean_metrics(fetched), f"{task.unit}_per_second": rate}
    logged["steps_per_second"] = window_steps / max(elapsed, 1e-9)
    writer.write(step, "train", logged)
    bar.show(step, logged, rate)
    pending, window_start, window_steps = [], time.perf_counter(), 0

  def save():
    """Checkpoints `state`, never one holding a NaN/Inf (a finite loss does not prove a finite update)."""
    nonlocal saved
    check_and_log()
    if not trainer.state_is_finite(state):
      raise diverged("the parameters or optimizer state (with a finite loss)", step)
    checkpointer.save(step, state, batches.get_state())
    saved = step

  try:
    with preemption.StopRequests() as stop:
      while step < num_steps:
        batch = sharding.global_batch(next(batches), trainer.batch_sharding)
        with profiler.step(step):
          state, step_metrics = trainer.train_step(state, batch)
        step += 1
        profiler.step_done(step, state)
        window_steps += 1
        pending.append(step_metrics)
        bar.advance()
        last = step == num_steps
        if step % train.log_every == 0 or last:
          check_and_log()
        if step % train.checkpoint_every == 0 or last:
          save()
        if step % train.eval_every == 0 and not last:
          evaluated = trainer.evaluate(state.params, eval_batches, train.eval_batches)
          writer.write(step, "eval", evaluated)
          bar.print(f"step {step}: eval loss {evaluated['loss']:.4f}")
          window_start = time.perf_counter()  # evaluation time is not training throughput
        if stop.stop_after(step):
          if saved != step:
            save()
          checkpointer.wait()
          raise preemption.Interrupted(stop.signal_number, step)
  finally:
    profiler.close()
    bar.close()
    checkpointer.wait()
  return state


def _rows_to_keep(checkpoint_step: int, finished: bool) -> metrics.KeepRow:
  """When resuming from `checkpoint_step`, a logged row stays unless the run is about to write it again.

  It writes again every step after the checkpoint and, if the run had already
  finished, the final evaluation and sample at its last step (the train rows at that
  step were logged before the checkpoint was saved).
  """

  def keep(step: int, split: str) -> bool:
    if step == checkpoint_step and finished:
      return split == "train"
    return step <= checkpoint_step

  return keep


def report_config_changes(config, workdir: str) -> None:
  """Prints, one line each, the keys whose values differ from the config.json of the workdir's last run."""
  for change in workdir_lib.config_changes(workdir, config):
    print(f"config changed since the last run in this workdir: {change}", flush=True)


def initial_state(config, task, trainer):
  """Step 0: the task's random initialisation, or the pretrained weights `config.init_from` names."""
  rng = jax.random.key(config.seed)
  if not config.init_from:
    return trainer.init(rng)
  print(f"starting from the pretrained weights of {config.init_from}", flush=True)
  return trainer.init_from(rng, task.pretrained_params(config.init_from))


def restore_for_inference(config, workdir: str | None):
  """(task, trainer, state) for --mode=eval|sample: the newest checkpoint in `workdir`, else `config.init_from`'s weights."""
  task_class = check_config(config)
  directory = os.path.abspath(os.path.join(workdir, "checkpoints")) if workdir else None
  if directory is None or not os.path.isdir(directory):
    if config.init_from:
      task, trainer = build(config, task_class)
      return task, trainer, initial_state(config, task, trainer)
    raise UserError(f"no checkpoint in {directory}: train first (--mode=train)" if directory else "no --workdir and no init_from")
  task, trainer, checkpointer = setup(config, workdir, task_class, create=False)
  report_config_changes(config, workdir)
  restored = checkpointer.restore_latest(trainer.abstract_state)
  if restored is None:
    raise UserError(f"no checkpoint in {directory}: train first (--mode=train)")
  return task, trainer, restored[0]


def evaluate(config, workdir: str) -> dict:
  task, trainer, state = restore_for_inference(config, workdir)
  metrics = {**trainer.evaluate(state.params, task.eval_batches()), **task.generation_metrics(state.params)}
  print(f"eval at step {int(state.step)}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
  return metrics


def export(config, workdir: str | None, directory: str) -> list[str]:
  """Writes the newest checkpoint's model as a Hugging Face folder (decoders.interop.save_hf_checkpoint)."""
  task, _, state = restore_for_inference(config, workdir)
  model = getattr(task, "model", None)
  if not isinstance(model, decoder_lm.DecoderLM):
    raise UserError(f"--mode=export: task {config.task!r} has no decoder-only language model to export")
  files = interop.save_hf_checkpoint(model, state.params, directory)
  print(f"exported step {int(state.step)} to {directory}: {', '.join(os.path.basename(f) for f in files)}", flush=True)
  return files


def sample(config, workdir: str, prompts: Sequence[str] | None = None, stream: bool = False) -> str | None:
  """The task's sample from `prompts` (default: sample.prompt), printed (with `stream`, as it is made)."""
  task, _, state = restore_for_inference(config, workdir)
  pieces = []

  def write(piece: str) -> None:
    pieces.append(piece)
    print(piece, end="", flush=True)

  # The key train_and_evaluate samples with.
  text = task.sample(state.params, jax.random.key(config.seed + 1), prompts, write if stream else None)
  drawn = _write_figures(config, task, state.params, workdir) if workdir else []
  if not pieces and (text is not None or not drawn):
    print(text if text is not None else f"task {config.task!r} has nothing to sample", flush=True)
  return text


def _write_figures(config, task, params, workdir: str) -> list[str]:
  """The task's figures as PNGs in <workdir>/figures, each path printed; the same key after training and later."""
  paths = figures.write_figures(task, params, jax.random.key(config.seed + 2), workdir)
  for path in paths:
    print(f"figure: {path}", flush=True)
  return paths


def attention(config, workdir: str, prompts: Sequence[str] | None = None) -> list[str]:
  """Draws the attention of the newest checkpoint's output for each prompt (default: sample.prompt) as a PNG in
  <workdir>/attention; returns the paths."""
  task, _, state = restore_for_inference(config, workdir)
  paths = []
  for index, prompt in enumerate(prompts or [config.sample.prompt]):
    source, target, weights = task.alignment(state.params, prompt)
    path = os.path.join(workdir, attention_maps.FOLDER, f"{index}.png")
    paths.append(attention_maps.draw(source, target, weights, path, f"step {int(state.step)}: {prompt}"))
    print(f"attention of the translation of {prompt!r}: {path}", flush=True)
  return paths
