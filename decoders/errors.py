"""The exceptions the library raises for input a user can fix; each message names the problem in one line."""


class ConfigError(ValueError):
  """A model or decoding configuration is impossible; the message names the field."""


class WeightsError(ValueError):
  """A weights file or folder cannot be read, or does not fit the model; the message names the file or tensor.

  Raised before anything is returned: a caller never receives half-loaded weights.
  """
