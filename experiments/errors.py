"""Errors a user can fix; `run.py` prints them as one line instead of a traceback."""
from decoders.errors import ConfigError, WeightsError


class UserError(Exception):
  """Base class: the message alone tells the user what is wrong and what to do."""


class MissingDataError(UserError):
  """A data source is not installed or not where the config says."""


class IncompatibleCheckpointError(UserError):
  """The workdir holds a checkpoint that a different model or optimizer wrote."""


class DivergedError(UserError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


USER_ERRORS = (UserError, ConfigError, WeightsError)
