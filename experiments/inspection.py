"""`--mode=inspect`: what a config's model is, without allocating it.

    python run.py --config=configs/llama.py:published --mode=inspect       # LLaMA-2-7B, in seconds
    python run.py --config=configs/llama.py:published --mode=inspect \
        --config.mesh.data=4 --config.mesh.fsdp=8 --config.mesh.tensor=4  # as split over 128 devices

The task describes its model from the config alone where it can (`Task.describe`:
the language model reads no data once `model.vocab_size` is set). `jax.eval_shape`
traces the initialisation to shapes and dtypes, so no parameter is allocated, and
the training rules (experiments/sharding.py) map the parameters' logical axis names
onto a `jax.sharding.AbstractMesh` of the config's mesh sizes: a mesh of any size is
described on one CPU. Reported: every parameter (shape, dtype, count, per-device
count, logical and mesh axes) under its top-level module with the module's subtotal
(numbered modules with identical parameters, a model's blocks, as one group); the
total, non-embedding and per-device counts; training FLOPs per unit; and for a
sequence model its key/value cache per token and at the full context.
"""
import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from experiments import sharding, train
from experiments.config_rules import SECTION_TYPES

CACHE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Parameter:
  path: str  # "block_0/attention/query/kernel"
  shape: tuple[int, ...]
  dtype: str
  logical_axes: tuple[str | None, ...]  # the model's name for each dimension
  mesh_axes: tuple  # the mesh axes each dimension is split over (a PartitionSpec's entries)
  per_device: int  # entries each device holds (the same on every device: the splits are even)

  @property
  def count(self) -> int:
    return math.prod(self.shape)

  @property
  def bytes(self) -> int:
    return self.count * jnp.dtype(self.dtype).itemsize

  @property
  def bytes_per_device(self) -> int:
    return self.per_device * jnp.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class Summary:
  task: str
  unit: str  # what flops_per_unit and the cache are counted per ("tokens", "examples")
  mesh: dict[str, int]
  parameters: tuple[Parameter, ...]
  embeddings: tuple[str, ...]  # top-level modules left out of `non_embedding`
  flops_per_unit: float | None
  # Values one unit adds to a key/value cache, in all and on each device (0: no cache),
  # and the units the cache holds at the full context.
  cache_values_per_unit: int = 0
  cache_values_per_device: int = 0
  cache_units: int = 0

  @property
  def total(self) -> int:
    return sum(p.count for p in self.parameters)

  @property
  def non_embedding(self) -> int:
    return sum(p.count for p in self.parameters if _module(p.path) not in self.embeddings)

  @property
  def per_device(self) -> int:
    return sum(p.per_device for p in self.parameters)

  def cache_bytes_per_unit(self, dtype: str, per_device: bool = False) -> int:
    values = self.cache_values_per_device if per_device else self.cache_values_per_unit
    return values * jnp.dtype(dtype).itemsize


def summarize(config) -> Summary:
  """`config`'s model and how its mesh splits it; checks the config first, allocates no parameter."""
  num_devices = _devices_meant(config)
  task_class = train.check_config(config, num_devices)
  sizes = sharding.mesh_shape(config.mesh, num_devices or jax.device_count())
  axes = sharding.MESH_AXES
  mesh = AbstractMesh(tuple(sizes[axis] for axis in axes), axes, axis_types=(AxisType.Auto,) * len(axes))

  description = task_class.describe(config)
  boxed = jax.eval_shape(description.init_params, jax.random.key(0))
  logical = nn.get_partition_spec(boxed)
  shardings = sharding.logical_shardings(logical, mesh)
  abstract = nn.unbox(boxed)
  sharding.check_shardings(abstract, shardings)  # a shape the mesh cannot split: one line, as in training
  parameters = tuple(
      Parameter(
          path=jax.tree_util.keystr(path, simple=True, separator="/"),
          shape=tuple(leaf.shape),
          dtype=str(leaf.dtype),
          logical_axes=tuple(spec) + (None,) * (len(leaf.shape) - len(spec)),
          mesh_axes=tuple(named.spec) + (None,) * (len(leaf.shape) - len(named.spec)),
          per_device=math.prod(named.shard_shape(leaf.shape)),
      )
      for (path, leaf), spec, named in zip(
          jax.tree_util.tree_flatten_with_path(abstract)[0],
          jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, PartitionSpec)),
          jax.tree.leaves(shardings),
      )
  )

  # The cache's split, by the parameters' rules (its dtype plays no part in it).
  cache = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, (shape, _) in description.cache_per_token.items()}
  cache_shardings = sharding.logical_shardings(
      {name: PartitionSpec(*names) for name, (_, names) in description.cache_per_token.items()}, mesh
  )
  sharding.check_shardings(cache, cache_shardings)
  return Summary(
      task=config.task,
      unit=task_class.unit,
      mesh=dict(sizes),
      parameters=parameters,
      embeddings=description.embeddings,
      flops_per_unit=description.flops_per_unit,
      cache_values_per_unit=sum(math.prod(array.shape) for array in cache.values()),
      cache_values_per_device=sum(math.prod(cache_shardings[name].shard_shape(array.shape)) for name, array in cache.items()),
      cache_units=description.cache_tokens,
  )


def _devices_meant(config) -> int | None:
  """The devices the config's mesh is for: the product of its sizes, or None (those JAX sees).

  None when a size is -1 (all remaining devices) or not a size at all, which check_config names.
  """
  mesh = config.get("mesh")
  sizes = [mesh.get(axis) for axis in sharding.MESH_AXES] if isinstance(mesh, SECTION_TYPES) else []
  if sizes and all(isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in sizes):
    return math.prod(sizes)
  return None


def _module(path: str) -> str:
  return path.split("/")[0]


def _natural(name: str) -> list:
  """Sort key putting block_2 before block_10."""
  return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def _module_groups(parameters) -> list[tuple[str, int, list[Parameter]]]:
  """(name, copies, the parameters of one copy) per top-level module, in natural order.

  Modules named `<prefix><number>` whose parameters are identical in everything but the
  number (a model's blocks) form one group named `block_{0..31}`; the parameters shown
  are the first copy's.
  """
  modules: dict[str, list[Parameter]] = {}
  for parameter in parameters:
    modules.setdefault(_module(parameter.path), []).append(parameter)

  def layout(name):
    return [(p.path[len(name) :], p.shape, p.dtype, p.logical_axes, p.mesh_axes) for p in modules[name]]

  groups: dict[tuple, list[str]] = {}
  for name in sorted(modules, key=_natural):
    numbered = re.fullmatch(r"(.*\D)(\d+)", name)
    key = (numbered.group(1), repr(layout(name))) if numbered else (name,)
    groups.setdefault(key, []).append(name)
  result = []
  for key, names in groups.items():
    if len(names) == 1:
      result.append((names[0], 1, modules[names[0]]))
      continue
    numbers = [int(name[len(key[0]) :]) for name in names]
    contiguous = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    span = f"{numbers[0]}..{numbers[-1]}" if contiguous else ",".join(map(str, numbers))
    result.append((f"{key[0]}{{{span}}}", len(names), modules[names[0]]))
  return result


def format_summary(summary: Summary) -> str:
  """The summary as aligned text: the parameter table, the totals, the key/value cache."""
  mesh = ", ".join(f"{axis}={size}" for axis, size in summary.mesh.items())
  devices = math.prod(summary.mesh.values())
  head = f"task {summary.task!r} on mesh {mesh} ({devices} device{'s' if devices > 1 else ''})"
  sections = [[head], _parameter_table(summary), _totals(summary), _cache_table(summary)]
  return "\n\n".join("\n".join(section) for section in sections if section)


def _parameter_table(summary: Summary) -> list[str]:
  """One row per parameter under a line per top-level module (or group of identical ones) with its subtotal."""
  header = ("parameter", "shape", "dtype", "count", "per device", "logical axes", "mesh axes")
  rows, module_lines = [], {}
  for name, copies, parameters in _module_groups(summary.parameters):
    subtotal = sum(p.count for p in parameters)
    total = f"{copies} x {subtotal:,} = {copies * subtotal:,}" if copies > 1 else f"{subtotal:,}"
    module_lines[len(rows)] = f"{name}: {total}"
    for p in parameters:
      relative = p.path.partition("/")[2] or p.path  # a parameter at the top level is its own module
      shape = "x".join(map(str, p.shape)) or "scalar"
      counts = f"{p.count:,}", f"{p.per_device:,}"
      rows.append(("  " + relative, shape, p.dtype, *counts, _axes(p.logical_axes), _axes(p.mesh_axes)))
  table = _aligned([header, *rows], right=(3, 4))
  return [table[0]] + [line for index, row in enumerate(table[1:]) for line in [module_lines.get(index), row] if line]


def _totals(summary: Summary) -> list[str]:
  dtypes = ", ".join(sorted({p.dtype for p in summary.parameters}))
  present = {_module(p.path) for p in summary.parameters}
  left_out = [name for name in summary.embeddings if name in present]
  flops = summary.flops_per_unit
  rows = [
      ("parameters", f"{summary.total:,}", f"{_bytes(sum(p.bytes for p in summary.parameters))} in {dtypes}"),
      ("non-embedding", f"{summary.non_embedding:,}", f"without {', '.join(left_out)}" if left_out else "no embeddings"),
      ("per device", f"{summary.per_device:,}", _bytes(sum(p.bytes_per_device for p in summary.parameters))),
      (
          f"training FLOPs per {summary.unit.removesuffix('s')}",
          "not known" if flops is None else f"{flops:,.0f}",
          "" if flops is None else f"{flops:.3g}",
      ),
  ]
  return _aligned(rows, right=(1,))


def _cache_table(summary: Summary) -> list[str]:
  """Key/value cache bytes for each value dtype, in all and per device; nothing for a model without one."""
  if not summary.cache_values_per_unit:
    return []
  unit, held = summary.unit.removesuffix("s"), f"{summary.cache_units:,} {summary.unit} held"
  rows = [("KV cache", *CACHE_DTYPES)]
  for label, per_device, units in (
      (f"per {unit}", False, 1),
      (f"per {unit}, per device", True, 1),
      (f"a full sequence ({held})", False, summary.cache_units),
      ("a full sequence, per device", True, summary.cache_units),
  ):
    rows.append((f"  {label}", *(_bytes(summary.cache_bytes_per_unit(d, per_device) * units) for d in CACHE_DTYPES)))
  return _aligned(rows, right=range(1, 1 + len(CACHE_DTYPES)))


def _aligned(rows, right=()) -> list[str]:
  """Rows of cells as lines of columns two spaces apart; the columns in `right` right-aligned."""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = []
  for row in rows:
    cells = [cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))]
    lines.append("  ".join(cells).rstrip())
  return lines


def _axes(entries) -> str:
  """('embed', None) -> 'embed, -'; a dimension split over several mesh axes -> 'data+fsdp'."""
  names = ["-" if entry is None else entry if isinstance(entry, str) else "+".join(entry) for entry in entries]
  return ", ".join(names) or "-"


def _bytes(count: float) -> str:
  """1536 -> '1.5 KiB'."""
  units = ("B", "KiB", "MiB", "GiB", "TiB")
  power = 0
  while count >= 1024 and power < len(units) - 1:
    count, power = count / 1024, power + 1
  return f"{count:.4g} {units[power]}"
