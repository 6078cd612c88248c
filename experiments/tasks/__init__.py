"""Task registry: `config.task` names one of TASKS; later families add a line here."""
from decoders.errors import ConfigError
from experiments.tasks.autoencoder import AutoencoderTask
from experiments.tasks.base import Objective, Task
from experiments.tasks.language_model import LanguageModelTask

TASKS: dict[str, type[Task]] = {
    "language_model": LanguageModelTask,
    "autoencoder": AutoencoderTask,
}


def build(config) -> Task:
  if config.task not in TASKS:
    raise ConfigError(f"task={config.task!r} is not one of {sorted(TASKS)}")
  return TASKS[config.task](config)


__all__ = ["TASKS", "Objective", "Task", "build"]
