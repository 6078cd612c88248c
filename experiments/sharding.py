"""Device mesh, logical-axis rules and shardings.

Parameters carry logical axis names (decoders/layers/partitioning.py); the rules
here map them to the mesh axes ("data", "fsdp", "tensor"), whose sizes come from
the config. The batch is split over data x fsdp; "fsdp" also shards the model
width of every weight (ZeRO-3 style), "tensor" the heads and feed-forward width
(Megatron style). On one device every rule collapses to replication.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from decoders.errors import ConfigError
from experiments import config_rules

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),  # GQA key/value heads: split like the query heads they serve
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("layers", None),  # each device holds every layer of a scanned stack: scan slices the layers in turn
)


CONFIG_SCHEMA = {
    "mesh": {
        axis: config_rules.Rule(int, "a positive integer, or -1 for all remaining devices", lambda v: v >= 1 or v == -1)
        for axis in MESH_AXES
    }
}


def mesh_shape(mesh_config, num_devices: int) -> dict[str, int]:
  """The size of each of MESH_AXES: `mesh_config` with its one -1 (if any) resolved over `num_devices`."""
  sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ConfigError(f"at most one of mesh.{MESH_AXES} may be -1, got {sizes}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % known:
      raise ConfigError(f"{num_devices} devices cannot be split into mesh {sizes}")
    sizes[free[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ConfigError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, {num_devices} are visible")
  return sizes


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A mesh with MESH_AXES; one size may be -1 to take all remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_config, len(devices))
  grid = np.asarray(devices).reshape([sizes[axis] for axis in MESH_AXES])
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _as_axes(entry) -> tuple[str, ...]:
  """A rule target or PartitionSpec entry (None, an axis, or several) as a tuple of mesh axes."""
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _split_over(axes: tuple[str, ...], sizes) -> tuple[int, str]:
  """How many shards `axes` cut a dimension into, and those axes in words ('mesh.fsdp=2 x mesh.tensor=4')."""
  return math.prod(sizes[axis] for axis in axes), " x ".join(f"mesh.{axis}={sizes[axis]}" for axis in axes)


def check_divisible(key: str, size: int, logical_axis: str, shape: dict[str, int], rules=DEFAULT_RULES) -> None:
  """One line naming `key` if `size` cannot be split evenly over the mesh axes of `logical_axis`."""
  axes = next((_as_axes(target) for name, target in rules if name == logical_axis), ())
  shards, over = _split_over(axes, shape)
  if size % shards:
    raise ConfigError(f"{key}={size} is not divisible by {over}, which shards the {logical_axis!r} axis")


def check_shardings(abstract_tree, shardings) -> None:
  """One line naming the first array of `abstract_tree` whose shape its NamedSharding cannot split evenly.

  The config-level checks name the keys for the sizes they know; this catches every
  other parameter (of any family) before jit would fail with a long traceback.
  """
  flat_shardings = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), named in zip(jax.tree_util.tree_flatten_with_path(abstract_tree)[0], flat_shardings):
    for dim, (size, entry) in enumerate(zip(leaf.shape, named.spec)):
      shards, over = _split_over(_as_axes(entry), named.mesh.shape)
      if size % shards:
        raise ConfigError(
            f"{jax.tree_util.keystr(path, simple=True, separator='/')} has {size} entries in dimension {dim}, "
            f"which cannot be split over {over}; change the model's sizes or the mesh"
        )


def logical_shardings(logical_specs, mesh: Mesh, rules=DEFAULT_RULES):
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch, sharding: NamedSharding):
  """Assembles each process's numpy rows into one global array per leaf."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
