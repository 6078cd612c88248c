"""Declarative checks of a run's config: every key's type and range, in one pass.

A schema mirrors the config: a dict of sections, each a dict of key -> `Rule`. The
module that reads a section declares its rules (train.py: `seed`, `train` and the
common `data` keys; optimizers.py: `optimizer`; sharding.py: `mesh`; a task: its
`data`, `model` and `sample` keys), `merge` joins them and `check` walks the config
against the result, raising one `ConfigError` that names the first key that is
missing, unknown, of the wrong type or out of range, with its value.
"""
import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ml_collections

from decoders.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Rule:
  """A valid value is an instance of `kind` for which `holds(value)`; `must_be` says so in words."""

  kind: type | tuple[type, ...]
  must_be: str
  holds: Callable[[Any], bool] = lambda value: True
  required: bool = True  # False: the key may be left out (a library default applies)

  def accepts(self, value: Any) -> bool:
    kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
    if isinstance(value, bool) and bool not in kinds:
      return False  # True is an int to Python, never a size or a rate to us
    if isinstance(value, int) and float in kinds:
      value = float(value)  # 1 is a fine learning rate
    return isinstance(value, kinds) and bool(self.holds(value))


Schema = Mapping[str, "Rule | Schema"]
SECTION_TYPES = (Mapping, ml_collections.ConfigDict)  # a ConfigDict is not a Mapping

TEXT = Rule(str, "a string")


def integer(minimum: int = 1, below: int | None = None) -> Rule:
  words = f"an integer >= {minimum}" if below is None else f"an integer in [{minimum}, {below})"
  return Rule(int, words, lambda v: v >= minimum and (below is None or v < below))


def number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> Rule:
  """A finite float in the interval from `low` to `high`, each end open or closed."""
  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
  words = "a positive finite number" if (low, low_open, high) == (0, True, math.inf) else f"a finite number in {interval}"

  def holds(v):
    above = v > low if low_open else v >= low
    below = v < high if high_open else v <= high
    return math.isfinite(v) and above and below

  return Rule(float, words, holds)


def one_of(choices: Iterable[str]) -> Rule:
  choices = tuple(choices)
  return Rule(str, f"one of {choices}", lambda v: v in choices)


def fields_of(cls: type, exclude: Iterable[str] = ()) -> dict[str, Rule]:
  """Optional, type-only rules for the fields of a library config dataclass.

  The dataclass checks ranges and choices itself when it is built (the library must
  be safe to use without this harness), so the harness only adds the types.
  """
  rules = {}
  for field in dataclasses.fields(cls):
    if field.name in exclude:
      continue
    kind = typing.get_origin(field.type) or field.type  # tuple[int, ...] -> tuple
    rules[field.name] = Rule(kind, f"of type {kind.__name__}", required=False)
  return rules


def merge(*schemas: Schema) -> dict:
  """Joins schemas section by section; a later rule for the same key replaces an earlier one."""
  merged: dict = {}
  for schema in schemas:
    for name, rule in schema.items():
      if isinstance(rule, Mapping) and isinstance(merged.get(name), Mapping):
        merged[name] = merge(merged[name], rule)
      else:
        merged[name] = rule
  return merged


def show(value: Any) -> str:
  """A value as the message quotes it: on one line, at most 80 characters."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def check(config: Mapping | ml_collections.ConfigDict, schema: Schema, prefix: str = "") -> None:
  """Raises ConfigError for the first key of `config` that `schema` does not accept."""
  for name, rule in schema.items():
    key = prefix + name
    if name not in config:
      if isinstance(rule, Rule) and not rule.required:
        continue
      raise ConfigError(f"the config has no {key}: add it to the config file")
    value = config[name]
    if isinstance(rule, Rule):
      if not rule.accepts(value):
        raise ConfigError(f"{key}={show(value)} must be {rule.must_be}")
    elif not isinstance(value, SECTION_TYPES):
      raise ConfigError(f"{key}={show(value)} must be a section of settings ({', '.join(rule)})")
    else:
      check(value, rule, key + ".")
  unknown = sorted(set(config) - set(schema))
  if unknown:
    raise ConfigError(f"{prefix}{unknown[0]} is not a setting that anything reads: remove it from the config file")
