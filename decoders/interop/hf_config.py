"""Reading a Hugging Face `config.json` with the defaults of the class that wrote it."""
from decoders.errors import WeightsError

_MISSING = object()


def read(hf: dict, defaults: dict, key: str, source: str):
  """`hf[key]`, else the config class's default for it (save_pretrained may leave defaults out)."""
  default = defaults.get(key, _MISSING)
  value = hf.get(key, default)
  if value is _MISSING:
    raise WeightsError(f"{source}: config.json has no {key!r}")
  # The default's type is the value's: a number written as a string is a mistake to name, not to run.
  kind = float if isinstance(default, float) else type(default)
  if default not in (None, _MISSING) and value is not None and not _is(value, kind):
    raise WeightsError(f"{source}: config.json has {key}={value!r}; expected {kind.__name__}")
  return value


def _is(value, kind: type) -> bool:
  if isinstance(value, bool) or kind is bool:
    return isinstance(value, bool) and kind is bool
  return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
