"""Task registry: `config.task` names one of TASKS; later families add a line here."""
from decoders.errors import ConfigError
from experiments import config_rules
from experiments.tasks.autoencoder import AutoencoderTask
from experiments.tasks.base import Objective, Task
from experiments.tasks.gan import GanTask
from experiments.tasks.image_classifier import ImageClassifierTask
from experiments.tasks.language_model import LanguageModelTask
from experiments.tasks.latent_diffusion import LatentDiffusionTask
from experiments.tasks.masked_lm import MaskedLMTask
from experiments.tasks.segmentation import SegmentationTask
from experiments.tasks.translation import TranslationTask

TASKS: dict[str, type[Task]] = {
    "language_model": LanguageModelTask,
    "autoencoder": AutoencoderTask,
    "masked_lm": MaskedLMTask,
    "translation": TranslationTask,
    "segmentation": SegmentationTask,
    "gan": GanTask,
    "image_classifier": ImageClassifierTask,
    "latent_diffusion": LatentDiffusionTask,
}


def lookup(config) -> type[Task]:
  """The Task class `config.task` names."""
  if "task" not in config:
    raise ConfigError(f"the config has no task: set it to one of {sorted(TASKS)}")
  name = config.task
  if not isinstance(name, str) or name not in TASKS:
    raise ConfigError(f"task={config_rules.show(name)} is not one of {sorted(TASKS)}")
  return TASKS[name]


def build(config) -> Task:
  return lookup(config)(config)


__all__ = ["TASKS", "Objective", "Task", "build", "lookup"]
