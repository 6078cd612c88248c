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

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
)


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A mesh with MESH_AXES; one size may be -1 to take all remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ConfigError(f"at most one of mesh.{MESH_AXES} may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ConfigError(f"{len(devices)} devices cannot be split into mesh {dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, {len(devices)} are visible")
  grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


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


def check_batch_divides(batch_size: int, mesh: Mesh, name: str) -> None:
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if batch_size % shards:
    raise ConfigError(f"{name}={batch_size} is not divisible by the {shards} batch shards of mesh {dict(mesh.shape)}")
