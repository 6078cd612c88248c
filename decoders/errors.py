"""The one exception the library raises for a configuration that cannot work."""


class ConfigError(ValueError):
  """A model or decoding configuration is impossible; the message names the field."""
