"""Task registry: `config.task` names one of TASKS; later families add a line here."""
from decoders.errors import ConfigError
from experiments.tasks.autoencoder import AutoencoderTask
from experiments.tasks.base import Objective, Task
from experiments.tasks.language_model import LanguageModelTask

TASKS: dict[str, type[Task]] = {
    "language_model": LanguageModelTask,
    "autoencoder": AutoencoderTask,
}


def lookup(config) -> type[Task]:
  """The Task class `config.task` names."""
  name = config.get("task")
  if name not in TASKS:
    raise ConfigError(f"task={name!r} is not one of {sorted(TASKS)}")
  return TASKS[name]


def build(config) -> Task:
  return lookup(config)(config)


__all__ = ["TASKS", "Objective", "Task", "build", "lookup"]
