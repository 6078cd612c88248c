"""Experiment configs: each module's `get_config(variant)` is what `run.py --config=configs/NAME.py:VARIANT` runs.

A file with several variants takes `VARIANT[,test]` (`parse_variant`): the first part picks one of its variants
(a family, a data set), "" its first; ",test" asks for the seconds-long size the tests run; ":test" alone is the
first variant's test size.
"""


def parse_variant(variant: str, choices: tuple[str, ...], config_name: str) -> tuple[str, bool]:
  """(the chosen variant, whether the test size was asked for); a ValueError naming the choices otherwise."""
  name, *rest = (variant or choices[0]).split(",")
  if name == "test":
    name, rest = choices[0], ["test"]
  if name not in choices or rest not in ([], ["test"]):
    raise ValueError(f"unknown variant {variant!r} of {config_name}; expected one of {choices}, optionally ',test'")
  return name, rest == ["test"]
